//! The `/dev/tdx_guest` attester, for TD guests whose kernel has no configfs-tsm (before 6.7):
//! `TDX_CMD_GET_REPORT0` gives the TDREPORT for the report data, then the host's TD Quote
//! Generation Service (QGS) turns it into a quote, reached over vsock (host CID 2, port 4050, or
//! the `port=` of Intel's `/etc/tdx-attest.conf`), speaking Intel's QGS message protocol
//! ([`cloister_evidence::tdx::qgs`]).
//!
//! The device is behind the small [`TdxGuestDevice`] trait (the real one does the ioctl in `sys`,
//! the only unsafe module; tests use a fake backed by the emulated platform), and the QGS address
//! may be a unix socket (tests, or a QGS on the same machine).
//!
//! **What it trusts:** neither the host nor its QGS: the quote is only passed on if it parses as a
//! TDX quote whose REPORTDATA is exactly what this guest asked for and whose TD fields equal the
//! TDREPORT the TDX module gave; whether it is genuine is for the verifier to decide.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_evidence::tdx::Quote;
use cloister_evidence::tdx::qgs;
use cloister_evidence::tdx::tdreport::TdReport;
use cloister_kbs_protocol::Tee;
use serde_json::{Value, json};

use crate::attester::{Attester, AttesterError};

/// Default device path.
pub const TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";
/// Intel's configuration file of the in-guest quote library (`port=<vsock port>`).
pub const TDX_ATTEST_CONF: &str = "/etc/tdx-attest.conf";
/// The host's vsock CID.
pub const VMADDR_CID_HOST: u32 = 2;

/// A device answering `TDX_CMD_GET_REPORT0`.
pub trait TdxGuestDevice: Send + Sync {
    /// The 1024-byte TDREPORT for `report_data`.
    fn get_report0(&self, report_data: &[u8; 64]) -> Result<[u8; 1024], String>;
}

/// The kernel device.
#[derive(Debug)]
pub struct DevTdxGuest(std::fs::File);

impl DevTdxGuest {
    /// Opens the device read-write.
    pub fn open(path: &Path) -> Result<Self, AttesterError> {
        crate::attester::open_device(path, "tdx-guest").map(Self)
    }
}

impl TdxGuestDevice for DevTdxGuest {
    fn get_report0(&self, report_data: &[u8; 64]) -> Result<[u8; 1024], String> {
        crate::sys::tdx_get_report0(&self.0, report_data)
            .map_err(|errno| format!("TDX_CMD_GET_REPORT0 failed: {}", std::io::Error::from_raw_os_error(errno)))
    }
}

/// Where the quote generation service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QgsAddress {
    /// `AF_VSOCK` `cid:port` (the guest's normal path: the host, port 4050).
    Vsock {
        /// Context ID (2 = the host).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// A unix socket.
    Unix(PathBuf),
}

impl Default for QgsAddress {
    fn default() -> Self {
        Self::Vsock { cid: VMADDR_CID_HOST, port: qgs::DEFAULT_VSOCK_PORT }
    }
}

impl std::fmt::Display for QgsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl QgsAddress {
    /// The host's QGS at the port named in Intel's `tdx-attest.conf` text (`port=N`; `#`
    /// comments), or the default port when it names none. A malformed port is an error, not a
    /// silent default.
    pub fn from_tdx_attest_conf(text: &str) -> Result<Self, AttesterError> {
        let mut port = qgs::DEFAULT_VSOCK_PORT;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == "port"
            {
                port =
                    v.trim().parse().map_err(|_| platform(format!("{TDX_ATTEST_CONF}: port {v:?} is not a number")))?;
            }
        }
        Ok(Self::Vsock { cid: VMADDR_CID_HOST, port })
    }

    /// The address from `/etc/tdx-attest.conf` if it exists, else the default.
    pub fn from_system() -> Result<Self, AttesterError> {
        match std::fs::read_to_string(TDX_ATTEST_CONF) {
            Ok(text) => Self::from_tdx_attest_conf(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(platform(format!("reading {TDX_ATTEST_CONF}: {e}"))),
        }
    }

    /// A connected stream with read and write timeouts. A vsock socket is carried in a
    /// `UnixStream` only for its `Read`/`Write` and timeout calls, which are the same for every
    /// stream socket.
    fn connect(&self, timeout: Duration) -> std::io::Result<std::os::unix::net::UnixStream> {
        let s = match self {
            Self::Unix(p) => std::os::unix::net::UnixStream::connect(p)?,
            Self::Vsock { cid, port } => std::os::unix::net::UnixStream::from(crate::sys::vsock_connect(*cid, *port)?),
        };
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(s)
    }
}

fn platform(detail: impl Into<String>) -> AttesterError {
    AttesterError::Platform { tee: "tdx-guest", detail: detail.into() }
}

/// The attester.
pub struct TdxGuestAttester {
    device: Arc<dyn TdxGuestDevice>,
    qgs: QgsAddress,
    timeout: Duration,
}

impl std::fmt::Debug for TdxGuestAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxGuestAttester").field("qgs", &self.qgs).finish_non_exhaustive()
    }
}

impl TdxGuestAttester {
    /// Over any device and QGS address, with a 30 s timeout per read or write.
    pub fn new(device: Arc<dyn TdxGuestDevice>, qgs: QgsAddress) -> Self {
        Self { device, qgs, timeout: Duration::from_secs(30) }
    }

    /// Sets the per-read/write timeout of the QGS connection.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `/dev/tdx_guest` with the QGS of `/etc/tdx-attest.conf` (default vsock 2:4050), if the
    /// device exists.
    pub fn detect() -> Result<Self, AttesterError> {
        Self::detect_with_qgs(None)
    }

    /// `/dev/tdx_guest`, if it exists, with the given QGS (`None`: as [`Self::detect`]).
    pub fn detect_with_qgs(qgs: Option<QgsAddress>) -> Result<Self, AttesterError> {
        let p = Path::new(TDX_GUEST_DEVICE);
        if !p.exists() {
            return Err(platform(format!("{TDX_GUEST_DEVICE} does not exist (not a TDX guest)")));
        }
        let qgs = match qgs {
            Some(q) => q,
            None => QgsAddress::from_system()?,
        };
        Ok(Self::new(Arc::new(DevTdxGuest::open(p)?), qgs))
    }

    /// One GET_QUOTE exchange with the QGS.
    fn get_quote(&self, report: &[u8]) -> Result<Vec<u8>, AttesterError> {
        let request = qgs::encode_get_quote_request(report, &[]).map_err(|e| platform(e.to_string()))?;
        let mut s = self
            .qgs
            .connect(self.timeout)
            .map_err(|e| platform(format!("cannot reach the quote generation service at {}: {e}", self.qgs)))?;
        s.write_all(&request).map_err(|e| platform(format!("sending to the QGS at {}: {e}", self.qgs)))?;
        let msg =
            qgs::read_message(&mut s).map_err(|e| platform(format!("reading the QGS reply from {}: {e}", self.qgs)))?;
        let resp = qgs::decode_get_quote_response(&msg).map_err(|e| platform(format!("QGS at {}: {e}", self.qgs)))?;
        Ok(resp.quote)
    }
}

impl Attester for TdxGuestAttester {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let report_data = cloister_kbs_protocol::binding::fit::<64>(digest);
        let raw = self.device.get_report0(&report_data).map_err(platform)?;
        let report = TdReport::from_bytes(&raw).map_err(|e| platform(format!("the TDX module's report: {e}")))?;
        if report.report_data.0 != report_data {
            return Err(platform("the TDREPORT carries other report data than requested"));
        }
        let quote_bytes = self.get_quote(&raw)?;
        let quote = Quote::parse(&quote_bytes)
            .map_err(|e| platform(format!("the QGS returned something that is not a quote: {e}")))?;
        // The host must quote this very report: same REPORTDATA and TD fields.
        let expected = report.to_td10_body();
        let matches = match (quote.body().td10(), quote.body().td15()) {
            (Some(b), _) => *b == expected,
            (None, Some(b)) => b.base == expected,
            _ => false,
        };
        if !matches {
            return Err(platform("the QGS returned a quote for another TD report"));
        }
        Ok(json!({"quote": STANDARD.encode(quote_bytes)}))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use cloister_emulate::tdx::{EmulatedTdx, TdxQuoteRequest};
    use cloister_evidence::tdx::Bytes;
    use cloister_evidence::tdx::qgs::QGS_SUCCESS;

    /// `/dev/tdx_guest` of a TD on the emulated platform.
    struct Fake {
        platform: Arc<EmulatedTdx>,
        mr_td: [u8; 48],
        fail: bool,
    }

    impl TdxGuestDevice for Fake {
        fn get_report0(&self, report_data: &[u8; 64]) -> Result<[u8; 1024], String> {
            if self.fail {
                return Err("TDX_CMD_GET_REPORT0 failed: Input/output error (os error 5)".into());
            }
            let req = TdxQuoteRequest { mr_td: Bytes(self.mr_td), ..TdxQuoteRequest::new(*report_data) };
            Ok(self.platform.td_report(&req))
        }
    }

    /// A QGS on a unix socket in a thread: the emulated one, or one answering `reply` to
    /// everything.
    fn qgs(dir: &Path, platform: Arc<EmulatedTdx>, reply: Option<Vec<u8>>) -> QgsAddress {
        let path = dir.join("qgs.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                match &reply {
                    None => {
                        let _ = cloister_emulate::qgs::serve_connection(&platform, stream);
                    }
                    Some(r) => {
                        let _ = qgs::read_message(&mut stream);
                        let _ = stream.write_all(r);
                    }
                }
            }
        });
        QgsAddress::Unix(path)
    }

    fn platform() -> Arc<EmulatedTdx> {
        Arc::new(EmulatedTdx::generate().unwrap())
    }

    #[test]
    fn tdreport_then_qgs_quote() {
        let dir = tempfile::tempdir().unwrap();
        let p = platform();
        let a = TdxGuestAttester::new(
            Arc::new(Fake { platform: p.clone(), mr_td: [7; 48], fail: false }),
            qgs(dir.path(), p, None),
        );
        assert_eq!(a.tee(), Tee::Tdx);
        let ev = a.evidence(&[0xab; 48]).unwrap();
        let quote = Quote::parse(&STANDARD.decode(ev["quote"].as_str().unwrap()).unwrap()).unwrap();
        let body = quote.body().td10().unwrap();
        assert_eq!(body.mr_td.0, [7; 48]);
        assert_eq!(&body.report_data.0[..48], &[0xab; 48]);
        assert_eq!(&body.report_data.0[48..], &[0; 16]);
    }

    #[test]
    fn a_report_from_another_platform_is_refused_by_the_qgs() {
        let dir = tempfile::tempdir().unwrap();
        let a = TdxGuestAttester::new(
            Arc::new(Fake { platform: platform(), mr_td: [7; 48], fail: false }),
            qgs(dir.path(), platform(), None),
        );
        let e = a.evidence(&[1; 48]).unwrap_err().to_string();
        assert!(e.contains("quote generation service failed: unexpected error"), "{e}");
    }

    #[test]
    fn a_quote_for_another_report_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = platform();
        // The host answers with a valid quote of a TD with another MRTD.
        let other = p.quote(&TdxQuoteRequest { mr_td: Bytes([9; 48]), ..TdxQuoteRequest::new([1; 64]) }).unwrap();
        let reply = qgs::encode_get_quote_response(QGS_SUCCESS, &[], &other).unwrap();
        let a = TdxGuestAttester::new(
            Arc::new(Fake { platform: p.clone(), mr_td: [7; 48], fail: false }),
            qgs(dir.path(), p, Some(reply)),
        );
        let e = a.evidence(&[1; 64]).unwrap_err().to_string();
        assert!(e.contains("quote for another TD report"), "{e}");
    }

    #[test]
    fn garbage_and_failures_are_clear_errors() {
        let p = platform();
        let fake = || Arc::new(Fake { platform: p.clone(), mr_td: [7; 48], fail: false });
        for (reply, want) in [
            (b"\0\0\0\x05hello".to_vec(), "shorter than its 24-byte prelude"),
            (b"\xff\xff\xff\xff".to_vec(), "frame length"),
            (qgs::encode_get_quote_response(QGS_SUCCESS, &[], b"not a quote").unwrap(), "not a quote"),
            (qgs::encode_get_quote_request(&[1; 1024], &[]).unwrap(), "type 0, expected 1"),
            (Vec::new(), "reading the QGS reply"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let a = TdxGuestAttester::new(fake(), qgs(dir.path(), p.clone(), Some(reply)))
                .with_timeout(Duration::from_secs(5));
            let e = a.evidence(&[1; 64]).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let a = TdxGuestAttester::new(fake(), QgsAddress::Unix(dir.path().join("absent.sock")));
        let e = a.evidence(&[1; 64]).unwrap_err().to_string();
        assert!(e.contains("cannot reach the quote generation service at unix:"), "{e}");
        let failing = Arc::new(Fake { platform: p.clone(), mr_td: [7; 48], fail: true });
        let e = TdxGuestAttester::new(failing, QgsAddress::default()).evidence(&[1; 64]).unwrap_err().to_string();
        assert!(e.contains("TDX_CMD_GET_REPORT0 failed"), "{e}");
    }

    #[test]
    fn vsock_without_a_host_is_an_error_not_a_hang() {
        // No vsock transport (or no QGS) here: connect fails at once with a typed error.
        let p = platform();
        let a = TdxGuestAttester::new(
            Arc::new(Fake { platform: p, mr_td: [7; 48], fail: false }),
            QgsAddress::Vsock { cid: VMADDR_CID_HOST, port: 4050 },
        );
        let e = a.evidence(&[1; 64]).unwrap_err().to_string();
        assert!(e.contains("cannot reach the quote generation service at vsock:2:4050"), "{e}");
    }

    #[test]
    fn tdx_attest_conf_port() {
        assert_eq!(QgsAddress::from_tdx_attest_conf("").unwrap(), QgsAddress::default());
        assert_eq!(
            QgsAddress::from_tdx_attest_conf("# vsock port of the QGS\nport=4051\n").unwrap(),
            QgsAddress::Vsock { cid: 2, port: 4051 }
        );
        assert_eq!(QgsAddress::from_tdx_attest_conf("#port=1\n").unwrap(), QgsAddress::default());
        assert!(QgsAddress::from_tdx_attest_conf("port=abc").is_err());
    }
}
