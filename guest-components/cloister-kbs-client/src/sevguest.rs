//! The `/dev/sev-guest` attester (SNP_GET_REPORT), for kernels without configfs-tsm. The device
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

/// A device answering SNP_GET_REPORT with the firmware's response message
/// (`u32 status, u32 report_size, 24 reserved bytes, report`).
pub trait SevGuestDevice: Send + Sync {
    /// The response message for `user_data` at `vmpl`.
    fn get_report(&self, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, String>;
}

/// The kernel device.
#[derive(Debug)]
pub struct DevSevGuest(std::fs::File);

impl DevSevGuest {
    /// Opens the device.
    pub fn open(path: &Path) -> Result<Self, AttesterError> {
        std::fs::OpenOptions::new().read(true).write(true).open(path).map(Self).map_err(|e| AttesterError::Platform {
            tee: "sev-guest",
            detail: format!("cannot open {}: {e}", path.display()),
        })
    }
}

impl SevGuestDevice for DevSevGuest {
    fn get_report(&self, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, String> {
        crate::sys::snp_get_report(&self.0, user_data, vmpl)
            .map_err(|(errno, exitinfo2)| format!("SNP_GET_REPORT failed: errno {errno}, exitinfo2 {exitinfo2:#x}"))
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

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let rd = cloister_kbs_protocol::binding::fit::<64>(digest);
        let msg = self.device.get_report(&rd, 0).map_err(platform)?;
        let report = report_from_response(&msg)?;
        // Without the extended report there is no certificate table: the verifier takes the VCEK
        // from its cache or KDS.
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
    fn no_device_here_is_reported() {
        if Path::new(SEV_GUEST_DEVICE).exists() {
            return;
        }
        assert!(SevGuestAttester::detect().unwrap_err().to_string().contains("does not exist"));
    }
}
