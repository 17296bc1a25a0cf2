//! IBM Secure Execution attestation: build the request's secrets, recompute the Ultravisor's
//! HMAC-SHA512 measurement and appraise the response against image reference values.
//!
//! SE has no vendor signature at verification time. The verifier makes a random **measurement
//! key** and nonce ([`SeRequestSecrets`]), encrypts them in an ARCB to the host keys of the
//! machines it accepts, and the Ultravisor of such a machine — and nothing else — can answer with
//! `HMAC-SHA512(measurement key, measured inputs)`. [`verify_se_response`] recomputes that HMAC
//! over exactly what the Ultravisor measures and compares in constant time
//! (`ring::hmac::verify`), as trustee's `se` verifier does with s390-tools' `pv` crate, then
//! checks the image and host-key hashes against [`SeReference`] and the user data against the
//! expected report data, and returns [`VerifiedSeEvidence`] with trustee's claim names.
//!
//! The measured input ([`measured_input`]; `AttestationItems` in s390-tools `rust/pv`, whose
//! published test vectors this module reproduces), all integers big-endian:
//!
//! | size | field |
//! |---|---|
//! | 64 + 64 + 64 + 16 | SE header PLD, ALD, TLD, tag (`image_hdr_tags`) |
//! | 16 | configuration UID |
//! | 2 | user-data length |
//! | 2 | zero |
//! | 4 | additional-data length |
//! | 0–256 | user data |
//! | 0 or 16 | nonce, iff the request's flags have the nonce bit (MSB-0 bit 1) |
//! | 0–32 KiB | additional data (image PHKH, attestation PHKH, secret-store hash, firmware state, in that order, as flagged) |
//!
//! The ARCB ([`build_arcb`], [`open_arcb`]) is AES-256-GCM under a random 32-byte request
//! protection key (ARPK) with the header IV, AAD = everything before the encrypted area, plaintext
//! = measurement key ‖ nonce. Each key slot wraps the ARPK with AES-256-GCM (IV = 12 zero bytes,
//! no AAD) under `SHA-256(Z ‖ 00 00 00 01)`, Z being the ECDH P-521 shared secret of the request's
//! customer key and the host key ([`wrap_key_slot`]). trustee additionally hands the guest the
//! measurement key and nonce sealed for itself (RSA); [`SeSecretSealer`] does the same with
//! AES-256-GCM so a stateless verifier can recover them from the echoed response fields.
//!
//! Sources, read to learn the layouts (no code copied): s390-tools `rust/pv/src/uvattest/{attest,
//! arcb,additional}.rs`, `rust/pv/src/{req,crypto,brcb}.rs`, `rust/pv_core/src/uvattest.rs`,
//! `rust/pvattest/src/{exchange,cmd/verify}.rs`; trustee `deps/verifier/src/se/ibmse.rs`;
//! guest-components `attestation-agent/attester/src/se/mod.rs`.
//!
//! ## What is verified, and what is not (the gaps)
//!
//! Verified by [`verify_se_response`]:
//! * the evidence is well-formed (typed errors, lengths bounded by the Ultravisor's limits);
//! * the measurement is 64 bytes and equals HMAC-SHA512 under the request's measurement key over
//!   header tags, CUID, user data, the request's nonce and the additional data — so all of them
//!   are what an Ultravisor holding the key measured, and the response answers *this* request;
//! * the additional data holds every item the request's flags asked for;
//! * the header tag is one of the reference images' `se.tag`; with a reference built from the
//!   header itself, PLD, ALD and TLD are compared too;
//! * `se.image_phkh` is one of the reference image's key-slot PHKHs, and `se.attestation_phkh`
//!   one of the allowed request host keys (when the reference lists any);
//! * the user data starts with the expected report data, zero-padded to 64 bytes (trustee's rule).
//!
//! Not verified, and why:
//! * **Host-key documents are checked in [`hostkey`], not here.** That the ARCB is encrypted
//!   only to genuine IBM Z host keys (HKD → IBM Z host key signing key → root, CRLs) is what
//!   makes the HMAC mean "a real Ultravisor"; it happens when the request is built
//!   ([`hostkey::HostKeyAuthority`], then [`hostkey::P521HostKeyWrap`] as the
//!   [`SeHostKeyWrap`]). The ARCB format, encryption and key-slot wrapping are tested round-trip
//!   and against an independent re-implementation in the emulated Ultravisor
//!   (`cloister-emulate`), **not against an IBM Ultravisor or an ARCB made by s390-tools** (its
//!   binary test vectors are not available here).
//! * **Real Ultravisor output has not been seen.** No public SE evidence exists (it is only
//!   checkable with the verifier's key); the HMAC layout is confirmed by s390-tools' own HMAC
//!   test vectors, the rest by an emulated Ultravisor.
//! * **Firmware state is not interpreted** (IBM's service does that; trustee can forward it).
//!   The secret-store hash is reported as a claim, not compared.
//! * trustee's RSA-sealed `encr_measurement_key` / `encr_request_nonce` cannot be opened (ring
//!   has no RSA decryption); Cloister's own sealing ([`SeSecretSealer`]) or session-held
//!   secrets are used instead. Replay of a complete old response is stopped by the nonce only
//!   if the secrets come from the current session; with sealed secrets (stateless, as trustee)
//!   freshness rests on the expected report data, so pass it.
//!
//! **What it trusts:** the caller's [`SeRequestSecrets`] (that they are the ones put in the
//! request, and that the request went only to genuine host keys), the [`SeReference`] (read from
//! the image actually deployed), the expected report data, and ring. Evidence is untrusted input.
//! Key material is zeroed on drop (best effort: a manual overwrite, no `zeroize` dependency;
//! `ring::hmac::Key` and `ring::aead` keys derived from it are ring-internal and not zeroed) and
//! is never logged or printed by `Debug`.

pub mod hostkey;

use std::fmt;

use cloister_evidence::se::{
    ATTESTATION_VERSION_1, AdditionalData, AttestationFlags, BOOT_HDR_TAGS_LEN, BootHdrTags, CUSTOMER_KEY_LEN,
    ConfigUid, GCM_IV_LEN, GCM_TAG_LEN, HMAC_SHA512_LEN, MAI_HMAC_SHA512, MEASUREMENT_KEY_LEN, NONCE_LEN, PHKH_LEN,
    SeArcb, SeArcbKeySlot, SeAttestationFlag, SeAttestationResponse, SeAttestationResponseJson, SeEvidenceError,
    USER_DATA_MAX_LEN,
};
use cloister_measure::Sha256Digest;
use cloister_measure::se::{SeHeader, SeReferenceValues};
use ring::aead;
use ring::digest;
use ring::hmac;
use ring::rand::SecureRandom;

/// Length of the report data SE carries (SHA-512).
pub const SE_REPORT_DATA_LEN: usize = 64;
/// Largest evidence JSON accepted (the largest valid response is about 88 KiB of base64).
pub const MAX_EVIDENCE_JSON_LEN: usize = 256 * 1024;
/// Length of the request protection key (AES-256).
pub const ARPK_LEN: usize = 32;

const SEAL_KEY_AAD: &[u8] = b"cloister/se/measurement-key/v1";
const SEAL_NONCE_AAD: &[u8] = b"cloister/se/request-nonce/v1";

/// Why SE evidence was not accepted, or a request could not be built. Every variant is one
/// failed check; [`SeVerifyError::check`] names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeVerifyError {
    /// The evidence is not JSON of the expected shape.
    #[error("SE evidence is not valid JSON of the expected shape: {0}")]
    Json(String),
    /// The evidence is larger than any valid response.
    #[error("SE evidence is {len} bytes, more than the maximum of {max}")]
    EvidenceTooLarge {
        /// Length given.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A field of the evidence is malformed.
    #[error("malformed SE evidence: {0}")]
    Evidence(#[from] SeEvidenceError),
    /// The measurement is not an HMAC-SHA512.
    #[error("SE measurement is {len} bytes, not the 64 of HMAC-SHA512")]
    MeasurementLength {
        /// Length found.
        len: usize,
    },
    /// The recomputed HMAC differs: some measured input was altered, or the key or nonce is not
    /// this request's.
    #[error("SE measurement does not match the HMAC-SHA512 recomputed with the request's key and nonce")]
    HmacMismatch,
    /// The additional data lacks an item the request asked for.
    #[error("SE additional data does not match the request flags: {0}")]
    AdditionalData(SeEvidenceError),
    /// The reference names no image, so nothing could be compared.
    #[error("no SE image reference values given")]
    NoImageReference,
    /// The header tag is not one of the reference images'.
    #[error("SE image tag {tag} is not among the reference values")]
    ImageTagNotAllowed {
        /// The tag, hex.
        tag: String,
    },
    /// The tag matches a reference image whose PLD/ALD/TLD differ.
    #[error("SE image with tag {tag} has page/address/tweak digests that differ from the reference header")]
    ImageHeaderTagsMismatch {
        /// The tag, hex.
        tag: String,
    },
    /// The image PHKH is required but was not requested or returned.
    #[error("SE response carries no image host-key hash (image_phkh flag not set)")]
    ImagePhkhMissing,
    /// The host key that unpacked the image is not one of the image's key slots.
    #[error("SE image host-key hash {phkh} is not one of the reference image's key slots")]
    ImagePhkhNotAllowed {
        /// The PHKH, hex.
        phkh: String,
    },
    /// The attestation PHKH is required but was not requested or returned.
    #[error("SE response carries no attestation host-key hash (attestation_phkh flag not set)")]
    AttestationPhkhMissing,
    /// The host key that decrypted the request is not allowed.
    #[error("SE attestation host-key hash {phkh} is not among the allowed host keys")]
    AttestationPhkhNotAllowed {
        /// The PHKH, hex.
        phkh: String,
    },
    /// The expected report data is longer than 64 bytes.
    #[error("expected SE report data is {len} bytes, more than 64")]
    ReportDataTooLong {
        /// Length given.
        len: usize,
    },
    /// The user data does not start with the expected report data.
    #[error("SE user data does not start with the expected report data (zero-padded to 64 bytes)")]
    ReportDataMismatch,
    /// The secrets' nonce does not agree with the nonce flag.
    #[error("SE request secrets: nonce flag is {flagged} but a nonce is {}", if *.present { "present" } else { "absent" })]
    NonceFlagMismatch {
        /// Whether the nonce flag is set.
        flagged: bool,
        /// Whether a nonce is present.
        present: bool,
    },
    /// Attestation flags the Ultravisor does not define.
    #[error("SE request flags have unknown bits {0:#018x}")]
    UnknownFlags(u64),
    /// The ARCB is malformed.
    #[error("malformed SE attestation request: {0}")]
    Arcb(SeEvidenceError),
    /// The ARCB's AES-GCM tag does not verify under the protection key.
    #[error("SE attestation request does not decrypt under the given protection key")]
    ArcbDecrypt,
    /// A key slot does not unwrap under the given shared secret.
    #[error("SE key slot does not unwrap under the given shared secret")]
    KeySlotUnwrap,
    /// The host-key wrapper failed or returned no key slots.
    #[error("SE host-key wrapping failed: {0}")]
    KeyWrap(String),
    /// Verifier-sealed secrets do not open.
    #[error("SE sealed request secrets are invalid: {0}")]
    SealedSecrets(&'static str),
    /// The random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A ring key could not be constructed.
    #[error("cryptographic key setup failed: {0}")]
    Crypto(&'static str),
}

impl SeVerifyError {
    /// A short name of the failed check: `evidence`, `measurement`, `additional_data`,
    /// `reference`, `image_tag`, `image_phkh`, `attestation_phkh`, `report_data`, `request`,
    /// `sealed_secrets` or `crypto`.
    pub fn check(&self) -> &'static str {
        use SeVerifyError as E;
        match self {
            E::Json(_) | E::EvidenceTooLarge { .. } | E::Evidence(_) => "evidence",
            E::MeasurementLength { .. } | E::HmacMismatch => "measurement",
            E::AdditionalData(_) => "additional_data",
            E::NoImageReference => "reference",
            E::ImageTagNotAllowed { .. } | E::ImageHeaderTagsMismatch { .. } => "image_tag",
            E::ImagePhkhMissing | E::ImagePhkhNotAllowed { .. } => "image_phkh",
            E::AttestationPhkhMissing | E::AttestationPhkhNotAllowed { .. } => "attestation_phkh",
            E::ReportDataTooLong { .. } | E::ReportDataMismatch => "report_data",
            E::NonceFlagMismatch { .. }
            | E::UnknownFlags(_)
            | E::Arcb(_)
            | E::ArcbDecrypt
            | E::KeySlotUnwrap
            | E::KeyWrap(_) => "request",
            E::SealedSecrets(_) => "sealed_secrets",
            E::Random | E::Crypto(_) => "crypto",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Overwrites `bytes` with zeros in a way the optimiser must keep.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(&*bytes);
}

/// A 64-byte HMAC-SHA512 measurement key. Zeroed on drop; `Debug` prints no key bytes.
pub struct SeMeasurementKey(Box<[u8; MEASUREMENT_KEY_LEN]>);

impl SeMeasurementKey {
    /// Wraps key bytes (the caller's copy is not wiped).
    pub fn from_bytes(bytes: &[u8; MEASUREMENT_KEY_LEN]) -> Self {
        SeMeasurementKey(Box::new(*bytes))
    }

    /// A fresh random key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, SeVerifyError> {
        let mut k = SeMeasurementKey(Box::new([0u8; MEASUREMENT_KEY_LEN]));
        rng.fill(&mut k.0[..]).map_err(|_| SeVerifyError::Random)?;
        Ok(k)
    }

    /// The raw key. Only for putting it into a request or a sealed blob.
    pub fn expose(&self) -> &[u8; MEASUREMENT_KEY_LEN] {
        &self.0
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA512, &self.0[..])
    }
}

impl Drop for SeMeasurementKey {
    fn drop(&mut self) {
        wipe(&mut self.0[..]);
    }
}

impl fmt::Debug for SeMeasurementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeMeasurementKey(<redacted>)")
    }
}

/// A 32-byte AES-256 request protection key (ARPK). Zeroed on drop; `Debug` prints no key bytes.
pub struct SeProtectionKey(Box<[u8; ARPK_LEN]>);

impl SeProtectionKey {
    /// Wraps key bytes (the caller's copy is not wiped).
    pub fn from_bytes(bytes: &[u8; ARPK_LEN]) -> Self {
        SeProtectionKey(Box::new(*bytes))
    }

    /// A fresh random key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, SeVerifyError> {
        let mut k = SeProtectionKey(Box::new([0u8; ARPK_LEN]));
        rng.fill(&mut k.0[..]).map_err(|_| SeVerifyError::Random)?;
        Ok(k)
    }

    /// The raw key, for a key-slot wrapper.
    pub fn expose(&self) -> &[u8; ARPK_LEN] {
        &self.0
    }
}

impl Drop for SeProtectionKey {
    fn drop(&mut self) {
        wipe(&mut self.0[..]);
    }
}

impl fmt::Debug for SeProtectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeProtectionKey(<redacted>)")
    }
}

/// What the verifier put into an attestation request and needs to verify the answer: the
/// measurement key, the nonce and the flags. `Debug` shows only the flags.
pub struct SeRequestSecrets {
    key: SeMeasurementKey,
    nonce: Option<[u8; NONCE_LEN]>,
    flags: AttestationFlags,
}

impl SeRequestSecrets {
    /// Fresh secrets for a request with `flags`. Like s390-tools, a nonce is always used: the
    /// nonce flag is added if missing.
    pub fn generate(flags: AttestationFlags, rng: &dyn SecureRandom) -> Result<Self, SeVerifyError> {
        if flags.unknown_bits() != 0 {
            return Err(SeVerifyError::UnknownFlags(flags.unknown_bits()));
        }
        let key = SeMeasurementKey::generate(rng)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SeVerifyError::Random)?;
        Ok(SeRequestSecrets { key, nonce: Some(nonce), flags: flags.with(SeAttestationFlag::Nonce) })
    }

    /// Secrets known from elsewhere (a session store, a sealed blob, a decrypted ARCB). The nonce
    /// must be present exactly when the nonce flag is set.
    pub fn new(
        key: SeMeasurementKey,
        nonce: Option<[u8; NONCE_LEN]>,
        flags: AttestationFlags,
    ) -> Result<Self, SeVerifyError> {
        if flags.unknown_bits() != 0 {
            return Err(SeVerifyError::UnknownFlags(flags.unknown_bits()));
        }
        let flagged = flags.contains(SeAttestationFlag::Nonce);
        if flagged != nonce.is_some() {
            return Err(SeVerifyError::NonceFlagMismatch { flagged, present: nonce.is_some() });
        }
        Ok(SeRequestSecrets { key, nonce, flags })
    }

    /// The measurement key.
    pub fn measurement_key(&self) -> &SeMeasurementKey {
        &self.key
    }

    /// The nonce, if the request uses one.
    pub fn nonce(&self) -> Option<&[u8; NONCE_LEN]> {
        self.nonce.as_ref()
    }

    /// The attestation flags of the request.
    pub fn flags(&self) -> AttestationFlags {
        self.flags
    }

    /// The measurement size to ask the Ultravisor for (trustee's `measurement_size`).
    pub fn measurement_size(&self) -> u32 {
        HMAC_SHA512_LEN as u32
    }

    /// The additional-data size to ask for (trustee's `additional_size`).
    pub fn additional_size(&self) -> u32 {
        u32::try_from(self.flags.expected_additional_len()).unwrap_or(u32::MAX)
    }
}

impl Drop for SeRequestSecrets {
    fn drop(&mut self) {
        if let Some(n) = self.nonce.as_mut() {
            wipe(n);
        }
    }
}

impl fmt::Debug for SeRequestSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeRequestSecrets")
            .field("flags", &self.flags)
            .field("nonce", &self.nonce.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The measurement
// ---------------------------------------------------------------------------------------------

/// The exact bytes the Ultravisor's HMAC covers (see the module documentation). Fails if the user
/// data exceeds 256 bytes or the additional data 32 KiB.
pub fn measured_input(
    tags: &BootHdrTags,
    cuid: &ConfigUid,
    user_data: &[u8],
    nonce: Option<&[u8; NONCE_LEN]>,
    additional: &[u8],
) -> Result<Vec<u8>, SeVerifyError> {
    let too_long = |field, len, max| SeVerifyError::Evidence(SeEvidenceError::FieldTooLong { field, len, max });
    if user_data.len() > USER_DATA_MAX_LEN {
        return Err(too_long("user_data", user_data.len(), USER_DATA_MAX_LEN));
    }
    let max_add = cloister_evidence::se::ADDITIONAL_MAX_LEN;
    if additional.len() > max_add {
        return Err(too_long("additional_data", additional.len(), max_add));
    }
    let mut m = Vec::with_capacity(BOOT_HDR_TAGS_LEN + 24 + user_data.len() + NONCE_LEN + additional.len());
    m.extend_from_slice(&tags.to_bytes());
    m.extend_from_slice(cuid);
    m.extend_from_slice(&(user_data.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(additional.len() as u32).to_be_bytes());
    m.extend_from_slice(user_data);
    if let Some(n) = nonce {
        m.extend_from_slice(n);
    }
    m.extend_from_slice(additional);
    Ok(m)
}

/// HMAC-SHA512 of the measured input under `key`: what the Ultravisor returns. For an emulated
/// Ultravisor and for tests; verification uses [`verify_se_response`].
pub fn compute_measurement(
    key: &SeMeasurementKey,
    tags: &BootHdrTags,
    cuid: &ConfigUid,
    user_data: &[u8],
    nonce: Option<&[u8; NONCE_LEN]>,
    additional: &[u8],
) -> Result<[u8; HMAC_SHA512_LEN], SeVerifyError> {
    let input = measured_input(tags, cuid, user_data, nonce, additional)?;
    let tag = hmac::sign(&key.hmac_key(), &input);
    let mut out = [0u8; HMAC_SHA512_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reference values
// ---------------------------------------------------------------------------------------------

/// One acceptable image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    tag: [u8; 16],
    hdr_tags: Option<BootHdrTags>,
    image_phkhs: Vec<[u8; PHKH_LEN]>,
}

/// What an SE response is compared with: acceptable images (from their SE headers or from
/// reference values) and, optionally, the host keys the request may have been decrypted with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeReference {
    images: Vec<ImageRef>,
    attestation_phkhs: Vec<[u8; PHKH_LEN]>,
}

impl SeReference {
    /// An empty reference (accepts nothing until an image is added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts the image with this SE header: tag, PLD/ALD/TLD and its key slots' PHKHs.
    pub fn from_header(hdr: &SeHeader) -> Self {
        Self::new().allow_header(hdr)
    }

    /// Accepts the image these reference values describe (tag and image PHKHs).
    pub fn from_reference_values(rv: &SeReferenceValues) -> Self {
        Self::new().allow_reference_values(rv)
    }

    /// Also accepts the image with this SE header.
    pub fn allow_header(mut self, hdr: &SeHeader) -> Self {
        self.images.push(ImageRef {
            tag: hdr.tag,
            hdr_tags: Some(BootHdrTags::from_array(&hdr.boot_hdr_tags())),
            image_phkhs: hdr.image_phkhs().iter().map(|d| d.0).collect(),
        });
        self
    }

    /// Also accepts the image these reference values describe.
    pub fn allow_reference_values(mut self, rv: &SeReferenceValues) -> Self {
        self.images.push(ImageRef {
            tag: rv.tag,
            hdr_tags: None,
            image_phkhs: rv.image_phkh.iter().map(|d| d.0).collect(),
        });
        self
    }

    /// Requires `se.attestation_phkh` to be one of the allowed host keys (call once per key; see
    /// `cloister_measure::se::phkh_from_host_key_coordinates`). Without any, it is not checked.
    pub fn allow_attestation_phkh(mut self, phkh: Sha256Digest) -> Self {
        self.attestation_phkhs.push(phkh.0);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// SE evidence whose measurement verified and whose values matched the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSeEvidence {
    /// Configuration unique ID of the guest.
    pub cuid: ConfigUid,
    /// The measured header tags.
    pub image_hdr_tags: BootHdrTags,
    /// The measured user data.
    pub user_data: Vec<u8>,
    /// The measured additional data, split by the request's flags.
    pub additional: AdditionalData,
    /// The request's attestation flags.
    pub flags: AttestationFlags,
    /// Whether the user data was compared with expected report data.
    pub report_data_checked: bool,
}

impl VerifiedSeEvidence {
    /// The report data: the first 64 bytes of the user data (fewer if it is shorter).
    pub fn report_data(&self) -> &[u8] {
        &self.user_data[..self.user_data.len().min(SE_REPORT_DATA_LEN)]
    }

    /// Claims named as trustee's SE verifier and attestation service name them: `se.version`
    /// (256), `se.cuid`, `se.tag`, `se.image_phkh`, `se.attestation_phkh` (when requested),
    /// `se.user_data` (all user data) and `se.report_data` (its first 64 bytes); plus
    /// `se.secret_store_hash` and `se.firmware_state` when requested. Byte values are lowercase
    /// hex.
    pub fn claims(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("se.version".into(), serde_json::Value::from(ATTESTATION_VERSION_1));
        m.insert("se.cuid".into(), hex::encode(self.cuid).into());
        m.insert("se.tag".into(), hex::encode(self.image_hdr_tags.tag).into());
        if let Some(p) = &self.additional.image_phkh {
            m.insert("se.image_phkh".into(), hex::encode(p).into());
        }
        if let Some(p) = &self.additional.attestation_phkh {
            m.insert("se.attestation_phkh".into(), hex::encode(p).into());
        }
        m.insert("se.user_data".into(), hex::encode(&self.user_data).into());
        m.insert("se.report_data".into(), hex::encode(self.report_data()).into());
        if let Some(h) = &self.additional.secret_store_hash {
            m.insert("se.secret_store_hash".into(), hex::encode(h).into());
        }
        if let Some(f) = &self.additional.firmware_state {
            m.insert("se.firmware_state".into(), hex::encode(f).into());
        }
        serde_json::Value::Object(m)
    }
}

/// Parses trustee-shaped SE evidence JSON (what the guest-components SE attester returns).
pub fn parse_se_evidence(json: &[u8]) -> Result<SeAttestationResponse, SeVerifyError> {
    if json.len() > MAX_EVIDENCE_JSON_LEN {
        return Err(SeVerifyError::EvidenceTooLarge { len: json.len(), max: MAX_EVIDENCE_JSON_LEN });
    }
    let raw: SeAttestationResponseJson =
        serde_json::from_slice(json).map_err(|e| SeVerifyError::Json(e.to_string()))?;
    Ok(SeAttestationResponse::try_from(raw)?)
}

/// Parses and verifies trustee-shaped SE evidence JSON; see [`verify_se_response`].
pub fn verify_se_evidence(
    json: &[u8],
    secrets: &SeRequestSecrets,
    reference: &SeReference,
    expected_report_data: Option<&[u8]>,
) -> Result<VerifiedSeEvidence, SeVerifyError> {
    verify_se_response(&parse_se_evidence(json)?, secrets, reference, expected_report_data)
}

/// Verifies an SE attestation response against the request's secrets, the reference values and
/// (if given) the expected report data. Checks, in order: lengths, the HMAC (constant time), the
/// additional data against the flags, the image tag (and header digests), the image PHKH, the
/// attestation PHKH, the report data.
pub fn verify_se_response(
    resp: &SeAttestationResponse,
    secrets: &SeRequestSecrets,
    reference: &SeReference,
    expected_report_data: Option<&[u8]>,
) -> Result<VerifiedSeEvidence, SeVerifyError> {
    resp.validate()?;
    if resp.measurement.len() != HMAC_SHA512_LEN {
        return Err(SeVerifyError::MeasurementLength { len: resp.measurement.len() });
    }
    let input =
        measured_input(&resp.image_hdr_tags, &resp.cuid, &resp.user_data, secrets.nonce(), &resp.additional_data)?;
    hmac::verify(&secrets.key.hmac_key(), &input, &resp.measurement).map_err(|_| SeVerifyError::HmacMismatch)?;
    tracing::debug!("SE measurement verified");

    let flags = secrets.flags();
    let additional = AdditionalData::parse(&resp.additional_data, flags).map_err(SeVerifyError::AdditionalData)?;

    if reference.images.is_empty() {
        return Err(SeVerifyError::NoImageReference);
    }
    let tags = &resp.image_hdr_tags;
    let candidates: Vec<&ImageRef> = reference.images.iter().filter(|i| i.tag == tags.tag).collect();
    if candidates.is_empty() {
        return Err(SeVerifyError::ImageTagNotAllowed { tag: hex::encode(tags.tag) });
    }
    let images: Vec<&ImageRef> =
        candidates.into_iter().filter(|i| i.hdr_tags.as_ref().is_none_or(|h| h == tags)).collect();
    if images.is_empty() {
        return Err(SeVerifyError::ImageHeaderTagsMismatch { tag: hex::encode(tags.tag) });
    }

    if images.iter().any(|i| !i.image_phkhs.is_empty()) {
        let phkh = additional.image_phkh.ok_or(SeVerifyError::ImagePhkhMissing)?;
        if !images.iter().any(|i| i.image_phkhs.contains(&phkh)) {
            return Err(SeVerifyError::ImagePhkhNotAllowed { phkh: hex::encode(phkh) });
        }
    }

    if !reference.attestation_phkhs.is_empty() {
        let phkh = additional.attestation_phkh.ok_or(SeVerifyError::AttestationPhkhMissing)?;
        if !reference.attestation_phkhs.contains(&phkh) {
            return Err(SeVerifyError::AttestationPhkhNotAllowed { phkh: hex::encode(phkh) });
        }
    }

    if let Some(expected) = expected_report_data {
        if expected.len() > SE_REPORT_DATA_LEN {
            return Err(SeVerifyError::ReportDataTooLong { len: expected.len() });
        }
        let mut padded = [0u8; SE_REPORT_DATA_LEN];
        padded[..expected.len()].copy_from_slice(expected);
        if resp.user_data.get(..SE_REPORT_DATA_LEN) != Some(&padded[..]) {
            return Err(SeVerifyError::ReportDataMismatch);
        }
    }
    tracing::debug!(tag = %hex::encode(tags.tag), "SE evidence appraised");

    Ok(VerifiedSeEvidence {
        cuid: resp.cuid,
        image_hdr_tags: *tags,
        user_data: resp.user_data.clone(),
        additional,
        flags,
        report_data_checked: expected_report_data.is_some(),
    })
}

// ---------------------------------------------------------------------------------------------
// Building and opening the ARCB
// ---------------------------------------------------------------------------------------------

/// Wraps the request protection key for the accepted host keys: [`hostkey::P521HostKeyWrap`]
/// (verified host-key documents, a fresh ECDH P-521 customer key, [`wrap_key_slot`] per host).
pub trait SeHostKeyWrap {
    /// Returns the customer public key (X‖Y, each big-endian padded to 80 bytes) and one key
    /// slot per host key, each wrapping `arpk`.
    fn wrap(&self, arpk: &SeProtectionKey) -> Result<([u8; CUSTOMER_KEY_LEN], Vec<SeArcbKeySlot>), SeVerifyError>;
}

fn slot_key(shared_secret: &[u8]) -> Result<aead::LessSafeKey, SeVerifyError> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(shared_secret);
    ctx.update(&[0, 0, 0, 1]);
    let d = ctx.finish();
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, d.as_ref()).map_err(|_| SeVerifyError::Crypto("AES-256"))?;
    Ok(aead::LessSafeKey::new(key))
}

/// Wraps `arpk` for one host: AES-256-GCM under `SHA-256(shared_secret ‖ 00 00 00 01)` with a
/// zero IV and no AAD. `shared_secret` is the ECDH P-521 shared secret (X coordinate, 66 bytes)
/// of the customer key and the host key whose hash is `host_phkh`.
pub fn wrap_key_slot(
    shared_secret: &[u8],
    host_phkh: [u8; PHKH_LEN],
    arpk: &SeProtectionKey,
) -> Result<SeArcbKeySlot, SeVerifyError> {
    let key = slot_key(shared_secret)?;
    let mut wrapped_key = *arpk.expose();
    let tag = key
        .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key([0; 12]), aead::Aad::empty(), &mut wrapped_key)
        .map_err(|_| SeVerifyError::Crypto("AES-256-GCM seal"))?;
    let mut t = [0u8; GCM_TAG_LEN];
    t.copy_from_slice(tag.as_ref());
    Ok(SeArcbKeySlot { phkh: host_phkh, wrapped_key, tag: t })
}

/// Unwraps a key slot with the ECDH shared secret (what the Ultravisor does with the host's
/// private key).
pub fn unwrap_key_slot(shared_secret: &[u8], slot: &SeArcbKeySlot) -> Result<SeProtectionKey, SeVerifyError> {
    let key = slot_key(shared_secret)?;
    let mut buf = [0u8; ARPK_LEN + GCM_TAG_LEN];
    buf[..ARPK_LEN].copy_from_slice(&slot.wrapped_key);
    buf[ARPK_LEN..].copy_from_slice(&slot.tag);
    let result = key
        .open_in_place(aead::Nonce::assume_unique_for_key([0; 12]), aead::Aad::empty(), &mut buf)
        .ok()
        .and_then(|p| <&[u8; ARPK_LEN]>::try_from(&*p).ok())
        .map(SeProtectionKey::from_bytes);
    wipe(&mut buf);
    result.ok_or(SeVerifyError::KeySlotUnwrap)
}

fn arpk_key(arpk: &SeProtectionKey) -> Result<aead::LessSafeKey, SeVerifyError> {
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, arpk.expose()).map_err(|_| SeVerifyError::Crypto("AES-256"))?;
    Ok(aead::LessSafeKey::new(key))
}

/// Builds the binary ARCB for `secrets`: a fresh protection key and IV, key slots from `wrap`,
/// flags and HMAC-SHA512 in the clear, measurement key ‖ nonce encrypted.
pub fn build_arcb(
    secrets: &SeRequestSecrets,
    wrap: &dyn SeHostKeyWrap,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SeVerifyError> {
    let arpk = SeProtectionKey::generate(rng)?;
    let mut iv = [0u8; GCM_IV_LEN];
    rng.fill(&mut iv).map_err(|_| SeVerifyError::Random)?;
    let (customer_public_key, key_slots) = wrap.wrap(&arpk)?;
    if key_slots.is_empty() || key_slots.len() > usize::from(u8::MAX) {
        return Err(SeVerifyError::KeyWrap(format!("{} key slots (1 to 255 allowed)", key_slots.len())));
    }
    let mut plain = Vec::with_capacity(MEASUREMENT_KEY_LEN + NONCE_LEN + GCM_TAG_LEN);
    plain.extend_from_slice(secrets.key.expose());
    if let Some(n) = secrets.nonce() {
        plain.extend_from_slice(n);
    }
    let mut arcb = SeArcb {
        version: ATTESTATION_VERSION_1,
        iv,
        flags: secrets.flags(),
        measurement_algorithm: MAI_HMAC_SHA512,
        customer_public_key,
        key_slots,
        encrypted: vec![0; plain.len()],
        tag: [0; GCM_TAG_LEN],
    };
    let aad = arcb.authenticated_bytes();
    let sealed = arpk_key(&arpk)?.seal_in_place_separate_tag(
        aead::Nonce::assume_unique_for_key(iv),
        aead::Aad::from(&aad[..]),
        &mut plain,
    );
    let result = sealed.map(|tag| {
        arcb.encrypted.copy_from_slice(&plain);
        arcb.tag.copy_from_slice(tag.as_ref());
        arcb.to_bytes()
    });
    wipe(&mut plain);
    result.map_err(|_| SeVerifyError::Crypto("AES-256-GCM seal"))
}

/// Parses and decrypts an ARCB with its protection key (what the Ultravisor does after
/// unwrapping a key slot; also `pvattest verify --arpk`). Returns the request's secrets.
pub fn open_arcb(arcb: &[u8], arpk: &SeProtectionKey) -> Result<SeRequestSecrets, SeVerifyError> {
    let parsed = SeArcb::from_bytes(arcb).map_err(SeVerifyError::Arcb)?;
    let aad = parsed.authenticated_bytes();
    let mut buf = Vec::with_capacity(parsed.encrypted.len() + GCM_TAG_LEN);
    buf.extend_from_slice(&parsed.encrypted);
    buf.extend_from_slice(&parsed.tag);
    let key = arpk_key(arpk)?;
    let opened = key
        .open_in_place(aead::Nonce::assume_unique_for_key(parsed.iv), aead::Aad::from(&aad[..]), &mut buf)
        .ok()
        .map(|plain| {
            let mut k = [0u8; MEASUREMENT_KEY_LEN];
            k.copy_from_slice(&plain[..MEASUREMENT_KEY_LEN]);
            let mk = SeMeasurementKey::from_bytes(&k);
            wipe(&mut k);
            let nonce = <[u8; NONCE_LEN]>::try_from(&plain[MEASUREMENT_KEY_LEN..]).ok();
            (mk, nonce)
        });
    wipe(&mut buf);
    let (mk, nonce) = opened.ok_or(SeVerifyError::ArcbDecrypt)?;
    SeRequestSecrets::new(mk, nonce, parsed.flags)
}

// ---------------------------------------------------------------------------------------------
// Sealing the secrets for a stateless verifier
// ---------------------------------------------------------------------------------------------

/// Seals request secrets for the verifier itself, into the `encr_measurement_key` and
/// `encr_request_nonce` fields the guest echoes back (trustee uses RSA for this; Cloister uses
/// AES-256-GCM under a verifier-held key). Each blob is IV (12) ‖ ciphertext ‖ tag (16); the key
/// blob holds flags (8, big-endian) ‖ measurement key (64); the nonce blob holds the nonce (or
/// nothing) and is bound to the key blob through its AAD.
pub struct SeSecretSealer {
    key: aead::LessSafeKey,
}

impl fmt::Debug for SeSecretSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeSecretSealer(<redacted>)")
    }
}

impl SeSecretSealer {
    /// A sealer with the given 32-byte key (the caller's copy is not wiped).
    pub fn new(key: &[u8; 32]) -> Result<Self, SeVerifyError> {
        let k = aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| SeVerifyError::Crypto("AES-256"))?;
        Ok(SeSecretSealer { key: aead::LessSafeKey::new(k) })
    }

    /// A sealer with a fresh random key (for a single verifier process).
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, SeVerifyError> {
        let mut k = [0u8; 32];
        rng.fill(&mut k).map_err(|_| SeVerifyError::Random)?;
        let s = Self::new(&k);
        wipe(&mut k);
        s
    }

    fn seal_one(&self, aad: &[u8], plain: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, SeVerifyError> {
        let mut iv = [0u8; GCM_IV_LEN];
        rng.fill(&mut iv).map_err(|_| SeVerifyError::Random)?;
        let mut buf = plain.to_vec();
        let tag = self
            .key
            .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(iv), aead::Aad::from(aad), &mut buf)
            .map_err(|_| SeVerifyError::Crypto("AES-256-GCM seal"))?;
        let mut out = Vec::with_capacity(GCM_IV_LEN + buf.len() + GCM_TAG_LEN);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_one(&self, aad: &[u8], blob: &[u8], what: &'static str) -> Result<Vec<u8>, SeVerifyError> {
        if blob.len() < GCM_IV_LEN + GCM_TAG_LEN {
            return Err(SeVerifyError::SealedSecrets(what));
        }
        let mut iv = [0u8; GCM_IV_LEN];
        iv.copy_from_slice(&blob[..GCM_IV_LEN]);
        let mut buf = blob[GCM_IV_LEN..].to_vec();
        let n = self
            .key
            .open_in_place(aead::Nonce::assume_unique_for_key(iv), aead::Aad::from(aad), &mut buf)
            .map_err(|_| SeVerifyError::SealedSecrets(what))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Returns `(encr_measurement_key, encr_request_nonce)`.
    pub fn seal(
        &self,
        secrets: &SeRequestSecrets,
        rng: &dyn SecureRandom,
    ) -> Result<(Vec<u8>, Vec<u8>), SeVerifyError> {
        let mut plain = [0u8; 8 + MEASUREMENT_KEY_LEN];
        plain[..8].copy_from_slice(&secrets.flags.0.to_be_bytes());
        plain[8..].copy_from_slice(secrets.key.expose());
        let key_blob = self.seal_one(SEAL_KEY_AAD, &plain, rng);
        wipe(&mut plain);
        let key_blob = key_blob?;
        let mut aad = SEAL_NONCE_AAD.to_vec();
        aad.extend_from_slice(&key_blob);
        let nonce_blob = self.seal_one(&aad, secrets.nonce().map_or(&[][..], |n| &n[..]), rng)?;
        Ok((key_blob, nonce_blob))
    }

    /// Opens the two echoed fields back into the request's secrets.
    pub fn unseal(
        &self,
        encr_measurement_key: &[u8],
        encr_request_nonce: &[u8],
    ) -> Result<SeRequestSecrets, SeVerifyError> {
        let mut plain = self.open_one(SEAL_KEY_AAD, encr_measurement_key, "measurement key blob does not open")?;
        let parsed = (plain.len() == 8 + MEASUREMENT_KEY_LEN).then(|| {
            let mut f = [0u8; 8];
            f.copy_from_slice(&plain[..8]);
            let mut k = [0u8; MEASUREMENT_KEY_LEN];
            k.copy_from_slice(&plain[8..]);
            let mk = SeMeasurementKey::from_bytes(&k);
            wipe(&mut k);
            (AttestationFlags(u64::from_be_bytes(f)), mk)
        });
        wipe(&mut plain);
        let (flags, mk) = parsed.ok_or(SeVerifyError::SealedSecrets("measurement key blob has the wrong length"))?;
        let mut aad = SEAL_NONCE_AAD.to_vec();
        aad.extend_from_slice(encr_measurement_key);
        let nonce = self.open_one(&aad, encr_request_nonce, "nonce blob does not open or belongs to another key")?;
        let nonce = match nonce.len() {
            0 => None,
            NONCE_LEN => <[u8; NONCE_LEN]>::try_from(&nonce[..]).ok(),
            _ => return Err(SeVerifyError::SealedSecrets("nonce blob has the wrong length")),
        };
        SeRequestSecrets::new(mk, nonce, flags).map_err(|_| SeVerifyError::SealedSecrets("flags and nonce disagree"))
    }
}
