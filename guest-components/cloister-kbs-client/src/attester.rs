//! Evidence producers. One small trait; one type per TEE. This crate ships CoCo's `sample`
//! TEE (no hardware, denied by default policies) and the emulated SNP platform (software-rooted
//! evidence in the exact hardware format; accepted only by a verifier that names its root).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
use cloister_emulate::tdx::{EmulatedTdx, TdxQuoteRequest};
use cloister_evidence::tdx::Bytes;
use cloister_kbs_protocol::Tee;
use serde_json::{Value, json};

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttesterError {
    /// The platform failed.
    #[error("attester {tee}: {detail}")]
    Platform {
        /// TEE.
        tee: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// Opens a guest device (`/dev/sev-guest`, `/dev/tdx_guest`, `/dev/uv`) read-write; a failure
/// names the device and the TEE.
pub(crate) fn open_device(path: &std::path::Path, tee: &'static str) -> Result<std::fs::File, AttesterError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| AttesterError::Platform { tee, detail: format!("cannot open {}: {e}", path.display()) })
}

/// Produces evidence for report data (the runtime-data digest, zero-padded to 64 bytes for
/// hardware TEEs).
pub trait Attester: Send + Sync {
    /// The TEE named in `/auth`.
    fn tee(&self) -> Tee;
    /// Evidence JSON (`primary_evidence`) binding `digest` (the raw runtime-data digest).
    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError>;
    /// Evidence for the broker's challenge `nonce` binding `digest`. Only TEEs whose challenge
    /// is more than a nonce need it (IBM SE: the nonce is the verifier's attestation request).
    fn challenge_evidence(&self, nonce: &str, digest: &[u8]) -> Result<Value, AttesterError> {
        let _ = nonce;
        self.evidence(digest)
    }
}

/// CoCo's `sample` TEE: `{"svn":"1","report_data":"<base64 digest>"}`. Proves nothing.
#[derive(Debug, Default, Clone)]
pub struct SampleAttester;

impl Attester for SampleAttester {
    fn tee(&self) -> Tee {
        Tee::Sample
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        Ok(json!({"svn": "1", "report_data": STANDARD.encode(digest)}))
    }
}

/// The emulated SNP platform, in process. **Emulated evidence proves nothing about hardware.**
#[derive(Clone)]
pub struct EmulatedSnpAttester {
    platform: Arc<EmulatedSnp>,
    measurement: [u8; 48],
    host_data: [u8; 32],
}

impl std::fmt::Debug for EmulatedSnpAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedSnpAttester").field("measurement", &hex::encode(self.measurement)).finish()
    }
}

impl EmulatedSnpAttester {
    /// Reports with this launch measurement and HOST_DATA.
    pub fn new(platform: Arc<EmulatedSnp>, measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        tracing::warn!("EMULATED SEV-SNP attester in use: its evidence proves nothing about hardware");
        Self { platform, measurement, host_data }
    }
}

impl Attester for EmulatedSnpAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let rd = cloister_kbs_protocol::binding::fit::<64>(digest);
        let req = SnpReportRequest::new(rd).with_measurement(self.measurement).with_host_data(self.host_data);
        let report = self
            .platform
            .report(&req)
            .map_err(|e| AttesterError::Platform { tee: "emulated-snp", detail: e.to_string() })?;
        Ok(json!({"report": STANDARD.encode(report), "cert_table": STANDARD.encode(self.platform.cert_table())}))
    }
}

/// The emulated TDX platform, in process. **Emulated evidence proves nothing about hardware.**
#[derive(Clone)]
pub struct EmulatedTdxAttester {
    platform: Arc<EmulatedTdx>,
    mr_td: [u8; 48],
    mr_config_id: [u8; 48],
}

impl std::fmt::Debug for EmulatedTdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTdxAttester").field("mr_td", &hex::encode(self.mr_td)).finish()
    }
}

impl EmulatedTdxAttester {
    /// Quotes with this MRTD and MRCONFIGID.
    pub fn new(platform: Arc<EmulatedTdx>, mr_td: [u8; 48], mr_config_id: [u8; 48]) -> Self {
        tracing::warn!("EMULATED TDX attester in use: its evidence proves nothing about hardware");
        Self { platform, mr_td, mr_config_id }
    }
}

impl Attester for EmulatedTdxAttester {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let mut req = TdxQuoteRequest::new(cloister_kbs_protocol::binding::fit::<64>(digest));
        req.mr_td = Bytes(self.mr_td);
        req.mr_config_id = Bytes(self.mr_config_id);
        let quote = self
            .platform
            .quote(&req)
            .map_err(|e| AttesterError::Platform { tee: "emulated-tdx", detail: e.to_string() })?;
        Ok(json!({"quote": STANDARD.encode(quote)}))
    }
}

/// The emulated SNP platform behind `cloister emulate serve` (a unix socket): the host fixes the
/// measurement and HOST_DATA, this guest side only supplies REPORT_DATA. **Proves nothing about
/// hardware.**
#[derive(Debug, Clone)]
pub struct EmulatedSocketAttester {
    path: std::path::PathBuf,
}

impl EmulatedSocketAttester {
    /// Reports from the endpoint at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        tracing::warn!("EMULATED SEV-SNP platform endpoint in use: its evidence proves nothing about hardware");
        Self { path: path.into() }
    }
}

impl Attester for EmulatedSocketAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let err = |detail: String| AttesterError::Platform { tee: "emulated-snp", detail };
        let stream = connect_emulator(&self.path).map_err(err)?;
        cloister_emulate::service::request(stream, &cloister_kbs_protocol::binding::fit::<64>(digest)).map_err(err)
    }
}

/// A fresh connection to an emulated platform's host endpoint (`cloister emulate serve`), with
/// 30 s read and write timeouts.
pub(crate) fn connect_emulator(path: &std::path::Path) -> Result<std::os::unix::net::UnixStream, String> {
    let stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    let timeout = Some(std::time::Duration::from_secs(30));
    stream.set_read_timeout(timeout).and_then(|()| stream.set_write_timeout(timeout)).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The emulated SNP or TDX platform reached through a character device: the guest end of the
/// virtio-serial port (`/dev/vportNpM` named `cloister.tee.0`) whose host end is the endpoint.
/// One stream for the VM's lifetime, so requests are serialised; a reply that does not come
/// within the timeout fails the request. **Proves nothing about hardware.**
#[derive(Debug)]
pub struct EmulatedPortAttester {
    path: std::path::PathBuf,
    port: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    timeout: std::time::Duration,
    /// SNP or TDX, learnt from the endpoint's first reply (a report or a quote).
    kind: std::sync::Mutex<Option<Tee>>,
}

impl EmulatedPortAttester {
    /// Evidence from the endpoint behind the port at `path` (opened on first use); whether the
    /// emulated platform is SEV-SNP or TDX is learnt from its first reply.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        tracing::warn!("EMULATED TEE platform endpoint in use: its evidence proves nothing about hardware");
        Self {
            path: path.into(),
            port: Arc::default(),
            timeout: std::time::Duration::from_secs(30),
            kind: std::sync::Mutex::new(None),
        }
    }

    fn kind(&self) -> Option<Tee> {
        *self.kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Attester for EmulatedPortAttester {
    /// The emulated platform's TEE; asks the endpoint once (zero report data) when no evidence
    /// has been requested yet. An endpoint that does not answer is taken for SNP (the evidence
    /// request that follows then fails with the reason).
    fn tee(&self) -> Tee {
        if let Some(k) = self.kind() {
            return k;
        }
        let _ = self.evidence(&[0u8; 64]);
        self.kind().unwrap_or(Tee::Snp)
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let v = self.ask(digest)?;
        let kind = if v.get("quote").is_some() { Tee::Tdx } else { Tee::Snp };
        *self.kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(kind);
        Ok(v)
    }
}

impl EmulatedPortAttester {
    fn ask(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let err = |detail: String| AttesterError::Platform { tee: "emulated", detail };
        let rd = cloister_kbs_protocol::binding::fit::<64>(digest);
        let (tx, rx) = std::sync::mpsc::channel();
        let (port, path) = (self.port.clone(), self.path.clone());
        // The port has no read timeout: ask on a thread and stop waiting after `timeout`.
        std::thread::spawn(move || {
            let mut guard = port.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = (|| {
                if guard.is_none() {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|e| format!("opening {}: {e}", path.display()))?;
                    *guard = Some(f);
                }
                let f = guard.as_mut().ok_or("port not open")?;
                cloister_emulate::service::request(f, &rd)
            })();
            if r.is_err() {
                // Start over with a fresh open next time (a half-read reply must not leak into
                // the next request).
                *guard = None;
            }
            let _ = tx.send(r);
        });
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r.map_err(err),
            Err(_) => Err(err(format!("no reply from {} within {:?}", self.path.display(), self.timeout))),
        }
    }
}

/// This machine's hardware TEE, probed in order: configfs-tsm (SNP, TDX), then `/dev/sev-guest`,
/// then `/dev/tdx_guest` (its quote from the host's QGS over vsock).
/// Never the emulated platform and never `sample`: those must be asked for by name.
pub fn detect() -> Result<Arc<dyn Attester>, AttesterError> {
    let tsm = match crate::tsm::TsmAttester::detect() {
        Ok(a) => return Ok(Arc::new(a)),
        Err(e) => e,
    };
    let sev = match crate::sevguest::SevGuestAttester::detect() {
        Ok(a) => return Ok(Arc::new(a)),
        Err(e) => e,
    };
    let tdx = match crate::tdxguest::TdxGuestAttester::detect() {
        Ok(a) => return Ok(Arc::new(a)),
        Err(e) => e,
    };
    Err(AttesterError::Platform { tee: "auto", detail: format!("no hardware TEE found: {tsm}; {sev}; {tdx}") })
}
