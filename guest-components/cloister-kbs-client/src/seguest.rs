//! The IBM Secure Execution guest side: `/dev/uv`'s `UVIO_IOCTL_ATT` answers a verifier's
//! attestation request (the ARCB of trustee's `SeAttestationRequest`) with the Ultravisor's
//! HMAC-SHA512 measurement, which becomes the `SeAttestationResponse` evidence.
//!
//! The device is behind the small [`UvDevice`] trait (the real one does the ioctl in `sys`, the
//! only unsafe module; [`cloister_emulate::se::EmulatedSe`] is the emulated Ultravisor).
//! [`SeAttester`] is an [`crate::Attester`]: the KBS protocol carries the request as the `/auth`
//! challenge's nonce, and the client hands it over through [`crate::Attester::challenge_evidence`]
//! with the SHA-512 runtime-data digest, which becomes the user data the Ultravisor measures.
//!
//! **What it trusts:** nothing from the host. The request is opaque to the guest (only the
//! Ultravisor can open it) and is length-checked before the call; what the Ultravisor returns is
//! checked against the sizes the request asked for.

use std::path::Path;
use std::sync::Arc;

use cloister_evidence::se::{ConfigUid, SeAttestationRequest, SeAttestationResponse, USER_DATA_MAX_LEN};

use cloister_kbs_protocol::Tee;
use serde_json::Value;

use crate::attester::{Attester, AttesterError};

/// Default device path.
pub const UV_DEVICE: &str = "/dev/uv";

/// What the Ultravisor returned for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UvAttestation {
    /// The HMAC-SHA512 measurement.
    pub measurement: Vec<u8>,
    /// The additional data the request's flags asked for.
    pub additional_data: Vec<u8>,
    /// The configuration unique ID.
    pub config_uid: ConfigUid,
}

impl From<cloister_emulate::se::UvResponse> for UvAttestation {
    fn from(r: cloister_emulate::se::UvResponse) -> Self {
        Self { measurement: r.measurement, additional_data: r.additional_data, config_uid: r.config_uid }
    }
}

/// A device answering `UVIO_IOCTL_ATT`.
pub trait UvDevice: Send + Sync {
    /// The Ultravisor's attestation of `arcb` with `user_data`, into buffers of `measurement_len`
    /// and `additional_len` bytes.
    fn attest(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        measurement_len: u32,
        additional_len: u32,
    ) -> Result<UvAttestation, String>;
}

/// The kernel device.
#[derive(Debug)]
pub struct DevUv(std::fs::File);

impl DevUv {
    /// Opens the device read-write.
    pub fn open(path: &Path) -> Result<Self, AttesterError> {
        crate::attester::open_device(path, "se").map(Self)
    }
}

impl UvDevice for DevUv {
    fn attest(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        measurement_len: u32,
        additional_len: u32,
    ) -> Result<UvAttestation, String> {
        let mut measurement = vec![0u8; measurement_len as usize];
        let mut additional_data = vec![0u8; additional_len as usize];
        let config_uid = crate::sys::uv_attest(&self.0, arcb, user_data, &mut measurement, &mut additional_data)
            .map_err(|e| {
                format!(
                    "UVIO_IOCTL_ATT failed: {} (Ultravisor rc {:#06x}, rrc {:#06x})",
                    std::io::Error::from_raw_os_error(e.errno),
                    e.uv_rc,
                    e.uv_rrc
                )
            })?;
        Ok(UvAttestation { measurement, additional_data, config_uid })
    }
}

fn platform(detail: impl Into<String>) -> AttesterError {
    AttesterError::Platform { tee: "se", detail: detail.into() }
}

/// Answers SE attestation requests through the Ultravisor.
pub struct SeAttester {
    device: Arc<dyn UvDevice>,
}

impl std::fmt::Debug for SeAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeAttester")
    }
}

impl SeAttester {
    /// Over any device.
    pub fn new(device: Arc<dyn UvDevice>) -> Self {
        Self { device }
    }

    /// The emulated Ultravisor. **Emulated evidence proves nothing about hardware.**
    pub fn emulated(platform: Arc<cloister_emulate::se::EmulatedSe>) -> Self {
        tracing::warn!("EMULATED IBM SE attester in use: its evidence proves nothing about hardware");
        Self::new(platform)
    }

    /// `/dev/uv`, if present.
    pub fn detect() -> Result<Self, AttesterError> {
        let p = Path::new(UV_DEVICE);
        if !p.exists() {
            return Err(platform(format!("{UV_DEVICE} does not exist (not an IBM Secure Execution guest)")));
        }
        Ok(Self::new(Arc::new(DevUv::open(p)?)))
    }

    /// The evidence for `request`, binding `report_data` (the runtime-data digest) as the user
    /// data. When the request names the digest it expects, `report_data` must be it.
    pub fn respond(
        &self,
        request: &SeAttestationRequest,
        report_data: &[u8],
    ) -> Result<SeAttestationResponse, AttesterError> {
        request.validate().map_err(|e| platform(format!("attestation request: {e}")))?;
        if report_data.len() > USER_DATA_MAX_LEN {
            return Err(platform(format!("report data is {} bytes (at most {USER_DATA_MAX_LEN})", report_data.len())));
        }
        if let Some(expected) = &request.runtime_data_digest
            && expected.as_slice() != report_data
        {
            return Err(platform("the request expects other report data than this guest binds"));
        }
        let att = self
            .device
            .attest(&request.request_blob, report_data, request.measurement_size, request.additional_size)
            .map_err(platform)?;
        if att.measurement.len() != request.measurement_size as usize {
            return Err(platform(format!(
                "the Ultravisor returned a {}-byte measurement, the request asked for {}",
                att.measurement.len(),
                request.measurement_size
            )));
        }
        if att.additional_data.len() > request.additional_size as usize {
            return Err(platform("the Ultravisor returned more additional data than the request allows"));
        }
        let response = SeAttestationResponse {
            measurement: att.measurement,
            additional_data: att.additional_data,
            user_data: report_data.to_vec(),
            cuid: att.config_uid,
            encr_measurement_key: request.encr_measurement_key.clone(),
            encr_request_nonce: request.encr_request_nonce.clone(),
            image_hdr_tags: request.image_hdr_tags,
        };
        response.validate().map_err(|e| platform(format!("response: {e}")))?;
        Ok(response)
    }
}

/// Largest attestation request accepted from a challenge.
const MAX_REQUEST_JSON: usize = 64 * 1024;

impl Attester for SeAttester {
    fn tee(&self) -> Tee {
        Tee::Se
    }

    fn evidence(&self, _digest: &[u8]) -> Result<Value, AttesterError> {
        Err(platform("SE evidence answers the key broker's attestation request: use challenge_evidence"))
    }

    fn challenge_evidence(&self, nonce: &str, digest: &[u8]) -> Result<Value, AttesterError> {
        if nonce.len() > MAX_REQUEST_JSON {
            return Err(platform(format!("attestation request is larger than {MAX_REQUEST_JSON} bytes")));
        }
        let request: SeAttestationRequest = serde_json::from_str(nonce)
            .map_err(|e| platform(format!("the challenge is not an SE attestation request: {e}")))?;
        let response = self.respond(&request, digest)?;
        serde_json::to_value(&response).map_err(|e| platform(e.to_string()))
    }
}

/// The emulated IBM SE machine behind a host endpoint's unix socket (`cloister emulate serve
/// --tee se`): each `UVIO_IOCTL_ATT` is one request on a fresh connection. **Emulated evidence
/// proves nothing about hardware.**
#[derive(Debug)]
pub struct EmulatedSocketUv {
    path: std::path::PathBuf,
}

impl EmulatedSocketUv {
    /// The endpoint at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        tracing::warn!("EMULATED IBM SE endpoint in use: its evidence proves nothing about hardware");
        Self { path: path.into() }
    }
}

impl UvDevice for EmulatedSocketUv {
    fn attest(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        measurement_len: u32,
        additional_len: u32,
    ) -> Result<UvAttestation, String> {
        let stream = crate::attester::connect_emulator(&self.path)?;
        let request = cloister_emulate::service::UvRequest {
            arcb: arcb.to_vec(),
            user_data: user_data.to_vec(),
            measurement_len,
            additional_len,
        };
        Ok(cloister_emulate::service::uv_request(stream, &request)?.into())
    }
}

impl UvDevice for cloister_emulate::se::EmulatedSe {
    fn attest(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        measurement_len: u32,
        additional_len: u32,
    ) -> Result<UvAttestation, String> {
        let r = cloister_emulate::se::EmulatedSe::attest(self, arcb, user_data, measurement_len, additional_len)
            .map_err(|e| format!("emulated UVIO_IOCTL_ATT failed: {e}"))?;
        Ok(r.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_evidence::se::{AttestationFlags, BootHdrTags, SeArcb, SeArcbKeySlot};
    use cloister_verifier::se::{
        SeHostKeyWrap, SeProtectionKey, SeReference, SeRequestSecrets, SeVerifyError, build_arcb, compute_measurement,
        open_arcb, unwrap_key_slot, verify_se_response, wrap_key_slot,
    };
    use ring::rand::SystemRandom;

    /// One host: its key hash and the ECDH shared secret its key gives with the request's
    /// customer key (a stand-in, as in the verifier's own SE tests).
    const PHKH: [u8; 32] = [0x11; 32];
    const SHARED: [u8; 66] = [0x22; 66];
    const CUID: [u8; 16] = [0x33; 16];

    struct Hosts;
    impl SeHostKeyWrap for Hosts {
        fn wrap(&self, arpk: &SeProtectionKey) -> Result<([u8; 160], Vec<SeArcbKeySlot>), SeVerifyError> {
            Ok(([0x99; 160], vec![wrap_key_slot(&SHARED, PHKH, arpk)?]))
        }
    }

    /// An Ultravisor running an image with `tags` on the host above.
    struct EmulatedUv {
        tags: BootHdrTags,
        fail: bool,
        short: bool,
    }

    impl UvDevice for EmulatedUv {
        fn attest(&self, arcb: &[u8], user_data: &[u8], mlen: u32, alen: u32) -> Result<UvAttestation, String> {
            if self.fail {
                return Err("UVIO_IOCTL_ATT failed: Input/output error (os error 5) (Ultravisor rc 0x0106)".into());
            }
            let parsed = SeArcb::from_bytes(arcb).map_err(|e| e.to_string())?;
            let slot = parsed.key_slots.iter().find(|s| s.phkh == PHKH).ok_or("no key slot for this host")?;
            let arpk = unwrap_key_slot(&SHARED, slot).map_err(|e| e.to_string())?;
            let secrets = open_arcb(arcb, &arpk).map_err(|e| e.to_string())?;
            let m = compute_measurement(secrets.measurement_key(), &self.tags, &CUID, user_data, secrets.nonce(), &[])
                .map_err(|e| e.to_string())?;
            assert_eq!((mlen, alen), (64, 0));
            let measurement = if self.short { m[..32].to_vec() } else { m.to_vec() };
            Ok(UvAttestation { measurement, additional_data: Vec::new(), config_uid: CUID })
        }
    }

    fn tags() -> BootHdrTags {
        let mut b = [0u8; cloister_evidence::se::BOOT_HDR_TAGS_LEN];
        for (i, v) in b.iter_mut().enumerate() {
            *v = i as u8;
        }
        BootHdrTags::from_array(&b)
    }

    fn request(runtime_data_digest: Option<Vec<u8>>) -> (SeAttestationRequest, SeRequestSecrets) {
        let rng = SystemRandom::new();
        let secrets = SeRequestSecrets::generate(AttestationFlags(0), &rng).unwrap();
        let arcb = build_arcb(&secrets, &Hosts, &rng).unwrap();
        let req = SeAttestationRequest {
            request_blob: arcb,
            measurement_size: secrets.measurement_size(),
            additional_size: secrets.additional_size(),
            encr_measurement_key: vec![1; 32],
            encr_request_nonce: vec![2; 16],
            image_hdr_tags: tags(),
            runtime_data_digest,
        };
        (req, secrets)
    }

    fn reference() -> SeReference {
        let t = tags();
        SeReference::from_reference_values(&cloister_measure::se::SeReferenceValues {
            version: 0x100,
            tag: t.tag,
            image_phkh: Vec::new(),
        })
    }

    #[test]
    fn the_response_verifies_with_the_requests_secrets() {
        let rd = [0xAB; 64];
        let (req, secrets) = request(Some(rd.to_vec()));
        // The request travels as JSON, as in the challenge.
        let req: SeAttestationRequest = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        let a = SeAttester::new(Arc::new(EmulatedUv { tags: tags(), fail: false, short: false }));
        let resp = a.respond(&req, &rd).unwrap();
        assert_eq!(resp.cuid, CUID);
        assert_eq!(resp.encr_measurement_key, vec![1; 32]);
        let json = serde_json::to_string(&resp).unwrap();
        let back: SeAttestationResponse = serde_json::from_str(&json).unwrap();
        let verified = verify_se_response(&back, &secrets, &reference(), Some(&rd)).unwrap();
        assert_eq!(verified.report_data(), &rd[..]);
        // Other report data than the verifier expects: refused by the verifier.
        let (req, secrets) = request(None);
        let resp = a.respond(&req, &[0xCD; 64]).unwrap();
        assert!(verify_se_response(&resp, &secrets, &reference(), Some(&rd)).is_err());
    }

    #[test]
    fn bad_requests_and_devices_are_clear_errors() {
        let good = || Arc::new(EmulatedUv { tags: tags(), fail: false, short: false });
        let (req, _) = request(Some(vec![1; 64]));
        let e = SeAttester::new(good()).respond(&req, &[2; 64]).unwrap_err().to_string();
        assert!(e.contains("expects other report data"), "{e}");
        let e = SeAttester::new(good()).respond(&req, &[1; 257]).unwrap_err().to_string();
        assert!(e.contains("at most 256"), "{e}");
        let mut empty = req.clone();
        empty.request_blob.clear();
        let e = SeAttester::new(good()).respond(&empty, &[1; 64]).unwrap_err().to_string();
        assert!(e.contains("attestation request"), "{e}");
        let failing = Arc::new(EmulatedUv { tags: tags(), fail: true, short: false });
        let e = SeAttester::new(failing).respond(&req, &[1; 64]).unwrap_err().to_string();
        assert!(e.contains("UVIO_IOCTL_ATT failed"), "{e}");
        let short = Arc::new(EmulatedUv { tags: tags(), fail: false, short: true });
        let e = SeAttester::new(short).respond(&req, &[1; 64]).unwrap_err().to_string();
        assert!(e.contains("32-byte measurement"), "{e}");
        if !Path::new(UV_DEVICE).exists() {
            let e = SeAttester::detect().unwrap_err().to_string();
            assert!(e.contains("not an IBM Secure Execution guest"), "{e}");
        }
    }
}
