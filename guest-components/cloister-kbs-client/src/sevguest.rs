//! The `/dev/sev-guest` attester (SNP_GET_EXT_REPORT with the host's certificate table, else
//! SNP_GET_REPORT), for kernels without configfs-tsm. The device
//! is behind the small [`SevGuestDevice`] trait: the real one does the ioctl (in `sys`, the only
//! unsafe module), tests use a fake.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_kbs_protocol::Tee;
use serde_json::{Value, json};

use crate::attester::{Attester, AttesterError};

/// Default device path.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

const REPORT_LEN: usize = 0x4A0;

/// Largest certificate table accepted from the host (the kernel's own limit is 16 KiB pages'
/// worth; AMD's VCEK + ASK + ARK take about 5 KiB).
pub const MAX_CERT_TABLE: usize = 64 * 1024;

/// What an extended report request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtReport {
    /// The response message and the certificate table (GHCB layout; empty when the host has none).
    Report {
        /// The firmware's response message.
        response: Vec<u8>,
        /// The table.
        cert_table: Vec<u8>,
    },
    /// The buffer was too small: the kernel wants this many bytes.
    NeedsBytes(usize),
    /// The kernel or VMM does not offer extended reports.
    Unsupported(String),
}

/// A device answering SNP_GET_REPORT with the firmware's response message
/// (`u32 status, u32 report_size, 24 reserved bytes, report`), and SNP_GET_EXT_REPORT with the
/// host's certificate table besides.
pub trait SevGuestDevice: Send + Sync {
    /// The response message for `user_data` at `vmpl`.
    fn get_report(&self, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, String>;

    /// The extended report with a certificate buffer of `certs_len` bytes (a multiple of 4096).
    fn get_ext_report(&self, _user_data: &[u8; 64], _vmpl: u32, _certs_len: usize) -> Result<ExtReport, String> {
        Ok(ExtReport::Unsupported("this device has no extended reports".into()))
    }
}

/// `exitinfo2` of a certificate buffer that is too small (`SNP_GUEST_VMM_ERR_INVALID_LEN` in the
/// VMM-error half).
const VMM_ERR_INVALID_LEN: u64 = 1 << 32;

/// The kernel device.
#[derive(Debug)]
pub struct DevSevGuest(std::fs::File);

impl DevSevGuest {
    /// Opens the device.
    pub fn open(path: &Path) -> Result<Self, AttesterError> {
        crate::attester::open_device(path, "sev-guest").map(Self)
    }
}

impl SevGuestDevice for DevSevGuest {
    fn get_report(&self, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, String> {
        crate::sys::snp_get_report(&self.0, user_data, vmpl)
            .map_err(|(errno, exitinfo2)| format!("SNP_GET_REPORT failed: errno {errno}, exitinfo2 {exitinfo2:#x}"))
    }

    fn get_ext_report(&self, user_data: &[u8; 64], vmpl: u32, certs_len: usize) -> Result<ExtReport, String> {
        let mut certs = vec![0u8; certs_len];
        match crate::sys::snp_get_ext_report(&self.0, user_data, vmpl, &mut certs) {
            Ok(response) => {
                // No certificates: the kernel leaves the buffer zero. Otherwise the table is
                // re-encoded from its entries (the buffer is page-padded).
                let cert_table = if certs.iter().all(|b| *b == 0) {
                    Vec::new()
                } else {
                    let entries = cloister_evidence::snp::cert_table::parse(&certs)
                        .map_err(|e| format!("the host's certificate table: {e}"))?;
                    cloister_evidence::snp::cert_table::build(&entries)
                };
                Ok(ExtReport::Report { response, cert_table })
            }
            Err(e) if e.exitinfo2 == VMM_ERR_INVALID_LEN => Ok(ExtReport::NeedsBytes(e.certs_len as usize)),
            Err(e) if matches!(e.errno, libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => {
                Ok(ExtReport::Unsupported(format!("SNP_GET_EXT_REPORT: errno {}", e.errno)))
            }
            Err(e) => Err(format!("SNP_GET_EXT_REPORT failed: errno {}, exitinfo2 {:#x}", e.errno, e.exitinfo2)),
        }
    }
}

/// The attester.
pub struct SevGuestAttester {
    device: Arc<dyn SevGuestDevice>,
}

impl std::fmt::Debug for SevGuestAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SevGuestAttester")
    }
}

fn platform(detail: impl Into<String>) -> AttesterError {
    AttesterError::Platform { tee: "sev-guest", detail: detail.into() }
}

impl SevGuestAttester {
    /// Over any device.
    pub fn new(device: Arc<dyn SevGuestDevice>) -> Self {
        Self { device }
    }

    /// `/dev/sev-guest`, if present.
    pub fn detect() -> Result<Self, AttesterError> {
        let p = Path::new(SEV_GUEST_DEVICE);
        if !p.exists() {
            return Err(platform(format!("{SEV_GUEST_DEVICE} does not exist (not an SEV-SNP guest)")));
        }
        Ok(Self::new(Arc::new(DevSevGuest::open(p)?)))
    }
}

/// Extracts the report from a firmware response message, checking status and size.
pub fn report_from_response(msg: &[u8]) -> Result<Vec<u8>, AttesterError> {
    if msg.len() < 32 + REPORT_LEN {
        return Err(platform(format!("response is {} bytes, too short for a report", msg.len())));
    }
    let status = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let size = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]) as usize;
    if status != 0 {
        return Err(platform(format!("firmware status {status:#x}")));
    }
    if size != REPORT_LEN {
        return Err(platform(format!("firmware returned a {size}-byte report, not {REPORT_LEN}")));
    }
    Ok(msg[32..32 + REPORT_LEN].to_vec())
}

impl Attester for SevGuestAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    /// The extended report first (its certificate table, when the host has one, lets the verifier
    /// skip its cache and KDS), growing the buffer once if the kernel asks; the plain report when
    /// extended reports are not offered.
    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let rd = cloister_kbs_protocol::binding::fit::<64>(digest);
        let mut len = 4 * 4096;
        for _ in 0..2 {
            match self.device.get_ext_report(&rd, 0, len).map_err(platform)? {
                ExtReport::Report { response, cert_table } => {
                    let report = report_from_response(&response)?;
                    return Ok(if cert_table.is_empty() {
                        json!({"report": STANDARD.encode(report)})
                    } else {
                        json!({"report": STANDARD.encode(report), "cert_table": STANDARD.encode(cert_table)})
                    });
                }
                ExtReport::NeedsBytes(n) if n > len && n <= MAX_CERT_TABLE => len = n.div_ceil(4096) * 4096,
                ExtReport::NeedsBytes(n) => {
                    return Err(platform(format!(
                        "the host's certificate table needs {n} bytes (at most {MAX_CERT_TABLE})"
                    )));
                }
                ExtReport::Unsupported(why) => {
                    tracing::debug!(%why, "no extended report: plain SNP_GET_REPORT");
                    break;
                }
            }
        }
        // Without the extended report there is no certificate table: the verifier takes the VCEK
        // from its cache or KDS.
        let msg = self.device.get_report(&rd, 0).map_err(platform)?;
        let report = report_from_response(&msg)?;
        Ok(json!({"report": STANDARD.encode(report)}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
    use cloister_evidence::snp::Product;

    struct Fake {
        platform: EmulatedSnp,
        status: u32,
        size: Option<u32>,
        fail: bool,
    }

    /// A device with extended reports whose certificate table needs `table_len` bytes.
    struct ExtFake {
        inner: Fake,
        ext: bool,
        calls: std::sync::Mutex<Vec<usize>>,
    }

    impl SevGuestDevice for ExtFake {
        fn get_report(&self, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, String> {
            self.inner.get_report(user_data, vmpl)
        }

        fn get_ext_report(&self, user_data: &[u8; 64], vmpl: u32, certs_len: usize) -> Result<ExtReport, String> {
            self.calls.lock().unwrap().push(certs_len);
            if !self.ext {
                return Ok(ExtReport::Unsupported("errno 25".into()));
            }
            let table = self.inner.platform.cert_table();
            if table.len() > certs_len {
                return Ok(ExtReport::NeedsBytes(table.len()));
            }
            Ok(ExtReport::Report { response: self.inner.get_report(user_data, vmpl)?, cert_table: table })
        }
    }

    impl SevGuestDevice for Fake {
        fn get_report(&self, user_data: &[u8; 64], _vmpl: u32) -> Result<Vec<u8>, String> {
            if self.fail {
                return Err("SNP_GET_REPORT failed: errno 5, exitinfo2 0x0".into());
            }
            let report = self.platform.report(&SnpReportRequest::new(*user_data)).map_err(|e| e.to_string())?;
            let mut msg = vec![0u8; 4000];
            msg[0..4].copy_from_slice(&self.status.to_le_bytes());
            msg[4..8].copy_from_slice(&self.size.unwrap_or(report.len() as u32).to_le_bytes());
            msg[32..32 + report.len()].copy_from_slice(&report);
            Ok(msg)
        }
    }

    #[test]
    fn reports_and_device_faults() {
        let platform = EmulatedSnp::generate(Product::Genoa).unwrap();
        let fake = Fake { platform, status: 0, size: None, fail: false };
        let a = SevGuestAttester::new(Arc::new(fake));
        let ev = a.evidence(&[9; 48]).unwrap();
        let r = STANDARD.decode(ev["report"].as_str().unwrap()).unwrap();
        let parsed = cloister_evidence::snp::AttestationReport::from_bytes(&r).unwrap();
        assert_eq!(&parsed.report_data.0[..48], &[9; 48]);

        let platform = EmulatedSnp::generate(Product::Genoa).unwrap();
        let a = SevGuestAttester::new(Arc::new(Fake { platform, status: 0x16, size: None, fail: false }));
        assert!(a.evidence(&[0; 48]).unwrap_err().to_string().contains("firmware status 0x16"));
        assert!(report_from_response(&[0; 100]).unwrap_err().to_string().contains("too short"));
        let mut msg = vec![0u8; 32 + REPORT_LEN];
        msg[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(report_from_response(&msg).unwrap_err().to_string().contains("1000-byte"));
    }

    #[test]
    fn extended_reports_carry_the_certificate_table() {
        let fake = |ext| ExtFake {
            inner: Fake {
                platform: EmulatedSnp::generate(Product::Milan).unwrap(),
                status: 0,
                size: None,
                fail: false,
            },
            ext,
            calls: Default::default(),
        };
        let dev = Arc::new(fake(true));
        let ev = SevGuestAttester::new(dev.clone()).evidence(&[3; 48]).unwrap();
        let table = STANDARD.decode(ev["cert_table"].as_str().unwrap()).unwrap();
        assert_eq!(table, dev.inner.platform.cert_table());
        // The table parses and holds the VCEK the report is signed with.
        let entries = cloister_evidence::snp::cert_table::parse(&table).unwrap();
        assert!(entries.iter().any(
            |(g, der)| *g == cloister_evidence::snp::cert_table::GUID_VCEK && *der == dev.inner.platform.vcek_der()
        ));
        assert_eq!(*dev.calls.lock().unwrap(), vec![16384]);
        // No extended reports: the plain report, no table.
        let ev = SevGuestAttester::new(Arc::new(fake(false))).evidence(&[3; 48]).unwrap();
        assert!(ev.get("cert_table").is_none() && ev.get("report").is_some());
    }

    #[test]
    fn a_small_buffer_grows_once_and_a_huge_table_is_refused() {
        struct Needs(usize, std::sync::Mutex<Vec<usize>>, EmulatedSnp);
        impl SevGuestDevice for Needs {
            fn get_report(&self, _: &[u8; 64], _: u32) -> Result<Vec<u8>, String> {
                Err("not used".into())
            }
            fn get_ext_report(&self, ud: &[u8; 64], _: u32, len: usize) -> Result<ExtReport, String> {
                self.1.lock().unwrap().push(len);
                if len < self.0 {
                    return Ok(ExtReport::NeedsBytes(self.0));
                }
                let report = self.2.report(&SnpReportRequest::new(*ud)).map_err(|e| e.to_string())?;
                let mut response = vec![0u8; 4000];
                response[4..8].copy_from_slice(&(report.len() as u32).to_le_bytes());
                response[32..32 + report.len()].copy_from_slice(&report);
                Ok(ExtReport::Report { response, cert_table: vec![1; 10] })
            }
        }
        let dev = Arc::new(Needs(20_000, Default::default(), EmulatedSnp::generate(Product::Milan).unwrap()));
        SevGuestAttester::new(dev.clone()).evidence(&[0; 48]).unwrap();
        assert_eq!(*dev.1.lock().unwrap(), vec![16384, 20480]);
        let huge = Arc::new(Needs(1 << 20, Default::default(), EmulatedSnp::generate(Product::Milan).unwrap()));
        let e = SevGuestAttester::new(huge).evidence(&[0; 48]).unwrap_err().to_string();
        assert!(e.contains("needs 1048576 bytes"), "{e}");
    }

    #[test]
    fn no_device_here_is_reported() {
        if Path::new(SEV_GUEST_DEVICE).exists() {
            return;
        }
        assert!(SevGuestAttester::detect().unwrap_err().to_string().contains("does not exist"));
    }
}
