//! IBM Secure Execution (s390x) attestation formats: parse and serialise.
//!
//! SE attestation is a challenge–response. The verifier builds an **attestation request control
//! block** (ARCB, [`SeArcb`]) holding a random measurement key and a nonce, encrypted to the host
//! keys of the machines allowed to run the guest. The guest hands it to the Ultravisor (`/dev/uv`,
//! `pvattest perform`, or the CoCo attester), which answers with
//! `HMAC-SHA512(measurement key, measured inputs)` plus the configuration UID, the user data the
//! guest supplied and the *additional data* the request's flags asked for ([`AdditionalData`]).
//! This module covers every byte format on that path:
//!
//! * [`SeAttestationRequest`] / [`SeAttestationResponse`]: the JSON that trustee's SE verifier
//!   sends as the KBS challenge and that the guest-components SE attester returns as evidence
//!   (every byte field standard base64 with padding; `image_hdr_tags` is PLD‖ALD‖TLD‖tag,
//!   208 bytes; `cuid` 16 bytes; `encr_measurement_key` / `encr_request_nonce` are opaque to the
//!   guest and only meaningful to the verifier that created them).
//! * [`SeArcb`]: the binary ARCB (all integers big-endian):
//!
//!   | offset | size | field |
//!   |---|---|---|
//!   | 0x00 | 8 | magic, all zero for attestation requests |
//!   | 0x08 | 4 | request version (0x0100) |
//!   | 0x0C | 4 | total length |
//!   | 0x10 | 12 | AES-GCM IV |
//!   | 0x1C | 4 + 7 | reserved (zero) |
//!   | 0x27 | 1 | number of key slots (≥ 1) |
//!   | 0x28 | 4 | reserved (zero) |
//!   | 0x2C | 4 | size of the encrypted area |
//!   | 0x30 | 8 | plaintext attestation flags ([`AttestationFlags`], MSB-0 bit numbering) |
//!   | 0x38 | 4 | measurement algorithm (1 = HMAC-SHA512) |
//!   | 0x3C | 4 | reserved (zero) |
//!   | 0x40 | 160 | customer ECDH P-521 public key, X‖Y each left-padded to 80 bytes |
//!   | 0xE0 | 80 × n | key slots: PHKH (32), wrapped request-protection key (32), slot tag (16) |
//!   | … | 64 (+16) | encrypted: measurement key, then the nonce if flag 1 is set |
//!   | end − 16 | 16 | AES-GCM tag over everything before the encrypted area (as AAD) and it |
//!
//! * [`PvattestExchangeRequest`] / [`PvattestExchangeResponse`]: the `pvattest` exchange file
//!   (magic `pvattest`, version 0x0100, five `{size, offset}` entries for ARCB, measurement,
//!   additional data, user data and CUID).
//!
//! Sources (read to learn the layouts, no code taken): s390-tools `rust/pv` (`uvattest/arcb.rs`,
//! `uvattest/additional.rs`, `req.rs`, `brcb.rs`), `rust/pv_core` (`uvattest.rs`,
//! `uvdevice/attest.rs`, `uvdevice/ffi.rs`, the MSB-0 `UvFlags`), `rust/pvattest/src/exchange.rs`,
//! trustee `deps/verifier/src/se/ibmse.rs` and guest-components `attestation-agent/attester/src/se`.
//!
//! **What it trusts:** nothing. All input is untrusted: every length is bounded by the limits the
//! Linux uvdevice enforces (ARCB ≤ 1 MiB, measurement and additional data ≤ 32 KiB, user data
//! ≤ 256 bytes), malformed input is rejected with a typed [`SeEvidenceError`], and parsing never
//! panics. Parsing does no cryptography: a parsed response says what the bytes claim; only the
//! verifier, holding the measurement key, can tell whether an Ultravisor produced it. JSON parsing
//! is strict: unknown fields are rejected (they are not covered by the measurement).

use serde::{Deserialize, Serialize};

/// Length of the configuration unique ID.
pub const CUID_LEN: usize = 16;
/// Length of a SHA-512 image digest (PLD, ALD, TLD).
pub const DIGEST_LEN: usize = 64;
/// Length of the SE header tag.
pub const HDR_TAG_LEN: usize = 16;
/// Length of PLD‖ALD‖TLD‖tag.
pub const BOOT_HDR_TAGS_LEN: usize = 3 * DIGEST_LEN + HDR_TAG_LEN;
/// Length of the request nonce.
pub const NONCE_LEN: usize = 16;
/// Length of the measurement key for HMAC-SHA512.
pub const MEASUREMENT_KEY_LEN: usize = 64;
/// Length of an HMAC-SHA512 measurement.
pub const HMAC_SHA512_LEN: usize = 64;
/// Length of a public host-key hash.
pub const PHKH_LEN: usize = 32;
/// Length of the secret-store hash in additional data.
pub const SECRET_STORE_HASH_LEN: usize = 64;
/// Length of the firmware state in additional data.
pub const FIRMWARE_STATE_LEN: usize = 0x140;
/// Largest user data the Ultravisor accepts.
pub const USER_DATA_MAX_LEN: usize = 0x100;
/// Largest additional-data buffer the uvdevice accepts.
pub const ADDITIONAL_MAX_LEN: usize = 0x8000;
/// Largest measurement buffer the uvdevice accepts.
pub const MEASUREMENT_MAX_LEN: usize = 0x8000;
/// Largest ARCB the uvdevice accepts.
pub const ARCB_MAX_LEN: usize = 0x10_0000;
/// Largest verifier-sealed field (`encr_measurement_key`, `encr_request_nonce`) accepted: room for
/// an RSA-8192 ciphertext (trustee uses RSA PKCS#1 v1.5) or any AEAD-sealed secret.
pub const SEALED_FIELD_MAX_LEN: usize = 0x1000;
/// The only attestation request version defined (0x0100); also trustee's `se.version` claim.
pub const ATTESTATION_VERSION_1: u32 = 0x0100;
/// Measurement algorithm identifier of HMAC-SHA512.
pub const MAI_HMAC_SHA512: u32 = 1;
/// Length of a customer public key (P-521 X‖Y, each padded to 80 bytes).
pub const CUSTOMER_KEY_LEN: usize = 160;
/// Length of an ARCB key slot.
pub const ARCB_KEY_SLOT_LEN: usize = 80;
/// Length of the generic request header.
pub const ARCB_HEADER_LEN: usize = 0x30;
/// Length of the attestation-specific authenticated fields (flags, algorithm, reserved).
pub const ARCB_AUTH_LEN: usize = 0x10;
/// Length of the AES-GCM tag.
pub const GCM_TAG_LEN: usize = 16;
/// Length of the AES-GCM IV.
pub const GCM_IV_LEN: usize = 12;
/// Magic of an attestation request (eight zero bytes).
pub const ARCB_MAGIC: [u8; 8] = [0; 8];
/// Magic of the `pvattest` exchange format, ASCII `pvattest`.
pub const EXCHANGE_MAGIC: [u8; 8] = *b"pvattest";
/// The only `pvattest` exchange format version (0x0100).
pub const EXCHANGE_VERSION_1: u32 = 0x0100;
/// Length of the exchange-format header.
pub const EXCHANGE_HEADER_LEN: usize = 0x40;

/// A configuration unique ID, assigned by the Ultravisor to a running SE guest.
pub type ConfigUid = [u8; CUID_LEN];

/// Why SE attestation bytes or JSON are malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeEvidenceError {
    /// A JSON field is not standard padded base64.
    #[error("SE field {field} is not valid standard base64")]
    Base64 {
        /// Field name.
        field: &'static str,
    },
    /// A field that has one fixed length has another.
    #[error("SE field {field} is {len} bytes, expected exactly {expected}")]
    FieldLength {
        /// Field name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Length required.
        expected: usize,
    },
    /// A field is longer than the Ultravisor allows.
    #[error("SE field {field} is {len} bytes, more than the maximum of {max}")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A field that must not be empty (or zero) is.
    #[error("SE field {field} is empty")]
    FieldEmpty {
        /// Field name.
        field: &'static str,
    },
    /// Additional data lacks an item its flags request.
    #[error("SE additional data has {available} bytes left for {item}, which needs {needed}")]
    AdditionalDataMissing {
        /// Item name.
        item: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// Input shorter than the smallest ARCB.
    #[error("ARCB is {len} bytes, shorter than the minimum of {min}")]
    ArcbTooShort {
        /// Length found.
        len: usize,
        /// Minimum.
        min: usize,
    },
    /// The ARCB magic is not eight zero bytes.
    #[error("ARCB magic is {found:02x?}, not all zero (not an attestation request)")]
    ArcbBadMagic {
        /// The magic found.
        found: [u8; 8],
    },
    /// An ARCB version other than 0x0100.
    #[error("ARCB version {0:#x} is not supported (only 0x100)")]
    ArcbUnsupportedVersion(u32),
    /// The declared length differs from the input length.
    #[error("ARCB declares {declared} bytes but {actual} were given")]
    ArcbLength {
        /// Declared length.
        declared: u32,
        /// Input length.
        actual: usize,
    },
    /// A reserved ARCB byte is not zero.
    #[error("ARCB reserved byte at {offset:#x} is not zero")]
    ArcbReservedNotZero {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// The ARCB has no key slots.
    #[error("ARCB has no key slots")]
    ArcbNoKeySlots,
    /// The authenticated part is not header, flags, customer key and key slots.
    #[error("ARCB authenticated area is {found} bytes, but {key_slots} key slots need {expected}")]
    ArcbAadSize {
        /// Size implied by the length and encrypted-area fields.
        found: usize,
        /// Size implied by the key-slot count.
        expected: usize,
        /// Key-slot count.
        key_slots: u8,
    },
    /// The encrypted area does not hold exactly the key and the nonce the flags announce.
    #[error("ARCB encrypted area is {found} bytes, expected {expected} for the key and flagged nonce")]
    ArcbEncryptedSize {
        /// Declared size.
        found: u32,
        /// Required size.
        expected: u32,
    },
    /// A measurement algorithm other than HMAC-SHA512.
    #[error("unsupported SE measurement algorithm {0} (only 1 = HMAC-SHA512)")]
    UnsupportedMeasurementAlgorithm(u32),
    /// Attestation flags the Ultravisor does not define.
    #[error("unknown SE attestation flag bits {0:#018x}")]
    UnknownFlags(u64),
    /// Input shorter than the exchange-format header.
    #[error("pvattest exchange data is {len} bytes, shorter than its {min}-byte header")]
    ExchangeTooShort {
        /// Length found.
        len: usize,
        /// Header length.
        min: usize,
    },
    /// Not the `pvattest` magic.
    #[error("not pvattest exchange data: the magic is {found:02x?}")]
    ExchangeBadMagic {
        /// First 8 bytes.
        found: [u8; 8],
    },
    /// Unsupported exchange-format version.
    #[error("pvattest exchange version {0:#x} is not supported (only 0x100)")]
    ExchangeUnsupportedVersion(u32),
    /// The declared exchange size differs from the input.
    #[error("pvattest exchange data declares {declared} bytes but {actual} were given")]
    ExchangeSize {
        /// Declared size.
        declared: u32,
        /// Input length.
        actual: usize,
    },
    /// An exchange entry points outside the data or into the header.
    #[error("pvattest exchange entry {entry} (offset {offset:#x}, size {size}) {reason}")]
    ExchangeEntry {
        /// Entry name.
        entry: &'static str,
        /// Offset.
        offset: u32,
        /// Size.
        size: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A required exchange entry is absent or holds only an expected size.
    #[error("pvattest exchange data has no {entry}")]
    ExchangeMissing {
        /// Entry name.
        entry: &'static str,
    },
}

// ---------------------------------------------------------------------------------------------
// Header tags, flags, additional data
// ---------------------------------------------------------------------------------------------

/// The SE header values the Ultravisor measures: page-, address- and tweak-list digests and the
/// header tag (`BootHdrTags` in s390-tools, `image_hdr_tags` in trustee).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootHdrTags {
    /// Page-list digest.
    pub pld: [u8; DIGEST_LEN],
    /// Address-list digest.
    pub ald: [u8; DIGEST_LEN],
    /// Tweak-list digest.
    pub tld: [u8; DIGEST_LEN],
    /// The SE header's AES-GCM tag (`se.tag`).
    pub tag: [u8; HDR_TAG_LEN],
}

impl std::fmt::Debug for BootHdrTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootHdrTags")
            .field("pld", &hex::encode(self.pld))
            .field("ald", &hex::encode(self.ald))
            .field("tld", &hex::encode(self.tld))
            .field("tag", &hex::encode(self.tag))
            .finish()
    }
}

impl BootHdrTags {
    /// From the 208-byte concatenation PLD‖ALD‖TLD‖tag (what `SeHeader::boot_hdr_tags` of
    /// `cloister-measure` returns).
    pub fn from_array(b: &[u8; BOOT_HDR_TAGS_LEN]) -> Self {
        let mut t = BootHdrTags { pld: [0; DIGEST_LEN], ald: [0; DIGEST_LEN], tld: [0; DIGEST_LEN], tag: [0; 16] };
        t.pld.copy_from_slice(&b[0..64]);
        t.ald.copy_from_slice(&b[64..128]);
        t.tld.copy_from_slice(&b[128..192]);
        t.tag.copy_from_slice(&b[192..208]);
        t
    }

    /// From a slice that must be exactly 208 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, SeEvidenceError> {
        let arr: &[u8; BOOT_HDR_TAGS_LEN] = b.try_into().map_err(|_| SeEvidenceError::FieldLength {
            field: "image_hdr_tags",
            len: b.len(),
            expected: BOOT_HDR_TAGS_LEN,
        })?;
        Ok(Self::from_array(arr))
    }

    /// PLD‖ALD‖TLD‖tag.
    pub fn to_bytes(&self) -> [u8; BOOT_HDR_TAGS_LEN] {
        let mut out = [0u8; BOOT_HDR_TAGS_LEN];
        out[0..64].copy_from_slice(&self.pld);
        out[64..128].copy_from_slice(&self.ald);
        out[128..192].copy_from_slice(&self.tld);
        out[192..].copy_from_slice(&self.tag);
        out
    }
}

/// One attestation flag of an ARCB. Bit numbers count from the most significant bit of the
/// 64-bit field (MSB-0), as the Ultravisor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeAttestationFlag {
    /// Bit 1: the request carries a nonce, which the Ultravisor measures.
    Nonce,
    /// Bit 2: add the hash of the host key that unpacked the image (32 bytes).
    ImagePhkh,
    /// Bit 3: add the hash of the host key that decrypted this request (32 bytes).
    AttestationPhkh,
    /// Bit 4: add the SHA-512 of the guest's secret store (64 bytes).
    SecretStoreHash,
    /// Bit 5: add the firmware state, for IBM's service to interpret (320 bytes).
    FirmwareState,
}

impl SeAttestationFlag {
    /// All defined flags, in additional-data order.
    pub const ALL: [SeAttestationFlag; 5] = [
        SeAttestationFlag::Nonce,
        SeAttestationFlag::ImagePhkh,
        SeAttestationFlag::AttestationPhkh,
        SeAttestationFlag::SecretStoreHash,
        SeAttestationFlag::FirmwareState,
    ];

    /// MSB-0 bit number.
    pub const fn bit(self) -> u32 {
        match self {
            SeAttestationFlag::Nonce => 1,
            SeAttestationFlag::ImagePhkh => 2,
            SeAttestationFlag::AttestationPhkh => 3,
            SeAttestationFlag::SecretStoreHash => 4,
            SeAttestationFlag::FirmwareState => 5,
        }
    }

    /// The flag as a mask on the `u64` field.
    pub const fn mask(self) -> u64 {
        1u64 << (63 - self.bit())
    }

    /// Bytes this flag adds to the additional data.
    pub const fn additional_len(self) -> usize {
        match self {
            SeAttestationFlag::Nonce => 0,
            SeAttestationFlag::ImagePhkh | SeAttestationFlag::AttestationPhkh => PHKH_LEN,
            SeAttestationFlag::SecretStoreHash => SECRET_STORE_HASH_LEN,
            SeAttestationFlag::FirmwareState => FIRMWARE_STATE_LEN,
        }
    }

    /// A short machine-friendly name.
    pub const fn name(self) -> &'static str {
        match self {
            SeAttestationFlag::Nonce => "nonce",
            SeAttestationFlag::ImagePhkh => "image_phkh",
            SeAttestationFlag::AttestationPhkh => "attestation_phkh",
            SeAttestationFlag::SecretStoreHash => "secret_store_hash",
            SeAttestationFlag::FirmwareState => "firmware_state",
        }
    }
}

/// The plaintext attestation flags of an ARCB (a big-endian `u64`, MSB-0 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttestationFlags(pub u64);

impl AttestationFlags {
    /// What trustee requests: nonce, image PHKH and attestation PHKH.
    pub const TRUSTEE: AttestationFlags = AttestationFlags(
        SeAttestationFlag::Nonce.mask()
            | SeAttestationFlag::ImagePhkh.mask()
            | SeAttestationFlag::AttestationPhkh.mask(),
    );

    /// No flags.
    pub const fn empty() -> Self {
        AttestationFlags(0)
    }

    /// These flags plus `flag`.
    pub const fn with(self, flag: SeAttestationFlag) -> Self {
        AttestationFlags(self.0 | flag.mask())
    }

    /// These flags without `flag`.
    pub const fn without(self, flag: SeAttestationFlag) -> Self {
        AttestationFlags(self.0 & !flag.mask())
    }

    /// Whether `flag` is set.
    pub const fn contains(self, flag: SeAttestationFlag) -> bool {
        self.0 & flag.mask() != 0
    }

    /// The defined flags that are set.
    pub fn flags(self) -> Vec<SeAttestationFlag> {
        SeAttestationFlag::ALL.into_iter().filter(|f| self.contains(*f)).collect()
    }

    /// Set bits that no defined flag uses (the Ultravisor rejects them).
    pub fn unknown_bits(self) -> u64 {
        SeAttestationFlag::ALL.into_iter().fold(self.0, |acc, f| acc & !f.mask())
    }

    /// Size of the additional data the Ultravisor returns for these flags (trustee's
    /// `additional_size`).
    pub fn expected_additional_len(self) -> usize {
        self.flags().into_iter().map(SeAttestationFlag::additional_len).sum()
    }

    /// Size of the ARCB encrypted area for these flags: the measurement key and, if flagged, the
    /// nonce.
    pub fn encrypted_len(self) -> usize {
        MEASUREMENT_KEY_LEN + if self.contains(SeAttestationFlag::Nonce) { NONCE_LEN } else { 0 }
    }
}

/// The additional data of an attestation response, split according to the request's flags
/// (order: image PHKH, attestation PHKH, secret-store hash, firmware state; bytes beyond those are
/// kept as `unrecognized`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdditionalData {
    /// Hash of the host key that unpacked the image (`se.image_phkh`).
    pub image_phkh: Option<[u8; PHKH_LEN]>,
    /// Hash of the host key that decrypted the request (`se.attestation_phkh`).
    pub attestation_phkh: Option<[u8; PHKH_LEN]>,
    /// SHA-512 over the add-secret request tags and the lock state.
    pub secret_store_hash: Option<[u8; SECRET_STORE_HASH_LEN]>,
    /// Firmware state (320 bytes, opaque).
    pub firmware_state: Option<Vec<u8>>,
    /// Bytes after the items the flags announce.
    pub unrecognized: Vec<u8>,
}

impl AdditionalData {
    /// Splits `data` according to `flags`. Fails if an announced item is missing.
    pub fn parse(data: &[u8], flags: AttestationFlags) -> Result<Self, SeEvidenceError> {
        let mut rest = data;
        let mut take = |flag: SeAttestationFlag| -> Result<Option<&[u8]>, SeEvidenceError> {
            if !flags.contains(flag) {
                return Ok(None);
            }
            let n = flag.additional_len();
            if rest.len() < n {
                return Err(SeEvidenceError::AdditionalDataMissing {
                    item: flag.name(),
                    needed: n,
                    available: rest.len(),
                });
            }
            let (item, tail) = rest.split_at(n);
            rest = tail;
            Ok(Some(item))
        };
        let image_phkh = take(SeAttestationFlag::ImagePhkh)?.and_then(|b| b.try_into().ok());
        let attestation_phkh = take(SeAttestationFlag::AttestationPhkh)?.and_then(|b| b.try_into().ok());
        let secret_store_hash = take(SeAttestationFlag::SecretStoreHash)?.and_then(|b| b.try_into().ok());
        let firmware_state = take(SeAttestationFlag::FirmwareState)?.map(<[u8]>::to_vec);
        Ok(AdditionalData {
            image_phkh,
            attestation_phkh,
            secret_store_hash,
            firmware_state,
            unrecognized: rest.to_vec(),
        })
    }

    /// The concatenated bytes, in Ultravisor order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = &self.image_phkh {
            out.extend_from_slice(v);
        }
        if let Some(v) = &self.attestation_phkh {
            out.extend_from_slice(v);
        }
        if let Some(v) = &self.secret_store_hash {
            out.extend_from_slice(v);
        }
        if let Some(v) = &self.firmware_state {
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&self.unrecognized);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// trustee / guest-components JSON
// ---------------------------------------------------------------------------------------------

/// The SE evidence the guest-components attester returns (trustee `SeAttestationResponse`).
///
/// Only `measurement` is produced by the Ultravisor's secret; `additional_data`, `user_data` and
/// `cuid` are what it measured, `image_hdr_tags` is what the request said the image is (also
/// measured, with the *running* image's values), and the two `encr_*` fields are echoed back
/// unchanged from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeAttestationResponseJson", into = "SeAttestationResponseJson")]
pub struct SeAttestationResponse {
    /// The attestation measurement (HMAC-SHA512: 64 bytes).
    pub measurement: Vec<u8>,
    /// Additional data as returned by the Ultravisor.
    pub additional_data: Vec<u8>,
    /// User data the guest supplied (≤ 256 bytes; CoCo: the report-data digest, zero-padded to 64).
    pub user_data: Vec<u8>,
    /// Configuration unique ID.
    pub cuid: ConfigUid,
    /// The verifier's sealed measurement key, echoed.
    pub encr_measurement_key: Vec<u8>,
    /// The verifier's sealed nonce, echoed.
    pub encr_request_nonce: Vec<u8>,
    /// PLD‖ALD‖TLD‖tag of the image the request was made for, echoed.
    pub image_hdr_tags: BootHdrTags,
}

/// The wire form of [`SeAttestationResponse`]: every field a standard padded base64 string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeAttestationResponseJson {
    /// Base64 of [`SeAttestationResponse::measurement`].
    pub measurement: String,
    /// Base64 of [`SeAttestationResponse::additional_data`].
    pub additional_data: String,
    /// Base64 of [`SeAttestationResponse::user_data`].
    pub user_data: String,
    /// Base64 of [`SeAttestationResponse::cuid`].
    pub cuid: String,
    /// Base64 of [`SeAttestationResponse::encr_measurement_key`].
    pub encr_measurement_key: String,
    /// Base64 of [`SeAttestationResponse::encr_request_nonce`].
    pub encr_request_nonce: String,
    /// Base64 of [`SeAttestationResponse::image_hdr_tags`].
    pub image_hdr_tags: String,
}

fn check_max(field: &'static str, v: &[u8], max: usize) -> Result<(), SeEvidenceError> {
    if v.len() > max { Err(SeEvidenceError::FieldTooLong { field, len: v.len(), max }) } else { Ok(()) }
}

impl SeAttestationResponse {
    /// Checks every length against the Ultravisor limits: measurement 1..=32 KiB, additional
    /// data ≤ 32 KiB, user data ≤ 256 bytes, sealed fields ≤ 4 KiB. (Fixed-size fields are
    /// enforced by their types.)
    pub fn validate(&self) -> Result<(), SeEvidenceError> {
        if self.measurement.is_empty() {
            return Err(SeEvidenceError::FieldEmpty { field: "measurement" });
        }
        check_max("measurement", &self.measurement, MEASUREMENT_MAX_LEN)?;
        check_max("additional_data", &self.additional_data, ADDITIONAL_MAX_LEN)?;
        check_max("user_data", &self.user_data, USER_DATA_MAX_LEN)?;
        check_max("encr_measurement_key", &self.encr_measurement_key, SEALED_FIELD_MAX_LEN)?;
        check_max("encr_request_nonce", &self.encr_request_nonce, SEALED_FIELD_MAX_LEN)?;
        Ok(())
    }

    /// Builds the JSON-shaped response from a `pvattest` exchange response and the header tags
    /// of the image (which the exchange format does not carry). The sealed fields are empty.
    pub fn from_exchange(
        resp: &PvattestExchangeResponse,
        image_hdr_tags: BootHdrTags,
    ) -> Result<Self, SeEvidenceError> {
        let r = SeAttestationResponse {
            measurement: resp.measurement.clone(),
            additional_data: resp.additional.clone().unwrap_or_default(),
            user_data: resp.user_data.clone().unwrap_or_default(),
            cuid: resp.cuid,
            encr_measurement_key: Vec::new(),
            encr_request_nonce: Vec::new(),
            image_hdr_tags,
        };
        r.validate()?;
        Ok(r)
    }
}

fn fixed<const N: usize>(field: &'static str, v: Vec<u8>) -> Result<[u8; N], SeEvidenceError> {
    let len = v.len();
    v.try_into().map_err(|_| SeEvidenceError::FieldLength { field, len, expected: N })
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, SeEvidenceError> {
    base64::decode(s).ok_or(SeEvidenceError::Base64 { field })
}

impl TryFrom<SeAttestationResponseJson> for SeAttestationResponse {
    type Error = SeEvidenceError;

    fn try_from(j: SeAttestationResponseJson) -> Result<Self, Self::Error> {
        let r = SeAttestationResponse {
            measurement: b64("measurement", &j.measurement)?,
            additional_data: b64("additional_data", &j.additional_data)?,
            user_data: b64("user_data", &j.user_data)?,
            cuid: fixed("cuid", b64("cuid", &j.cuid)?)?,
            encr_measurement_key: b64("encr_measurement_key", &j.encr_measurement_key)?,
            encr_request_nonce: b64("encr_request_nonce", &j.encr_request_nonce)?,
            image_hdr_tags: BootHdrTags::from_slice(&b64("image_hdr_tags", &j.image_hdr_tags)?)?,
        };
        r.validate()?;
        Ok(r)
    }
}

impl From<SeAttestationResponse> for SeAttestationResponseJson {
    fn from(r: SeAttestationResponse) -> Self {
        SeAttestationResponseJson {
            measurement: base64::encode(&r.measurement),
            additional_data: base64::encode(&r.additional_data),
            user_data: base64::encode(&r.user_data),
            cuid: base64::encode(&r.cuid),
            encr_measurement_key: base64::encode(&r.encr_measurement_key),
            encr_request_nonce: base64::encode(&r.encr_request_nonce),
            image_hdr_tags: base64::encode(&r.image_hdr_tags.to_bytes()),
        }
    }
}

/// The SE challenge trustee's verifier sends to the guest (the KBS `/auth` nonce for `se`):
/// the ARCB plus what the attester needs to call the Ultravisor and echo back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeAttestationRequestJson", into = "SeAttestationRequestJson")]
pub struct SeAttestationRequest {
    /// The binary ARCB ([`SeArcb`]).
    pub request_blob: Vec<u8>,
    /// Size of the measurement buffer (64 for HMAC-SHA512).
    pub measurement_size: u32,
    /// Size of the additional-data buffer ([`AttestationFlags::expected_additional_len`]).
    pub additional_size: u32,
    /// The measurement key sealed for the verifier itself (opaque to the guest).
    pub encr_measurement_key: Vec<u8>,
    /// The nonce sealed for the verifier itself (opaque to the guest).
    pub encr_request_nonce: Vec<u8>,
    /// PLD‖ALD‖TLD‖tag of the expected image.
    pub image_hdr_tags: BootHdrTags,
    /// Report-data digest the guest must put in the user data (≤ 64 bytes), if the verifier
    /// already knows it.
    pub runtime_data_digest: Option<Vec<u8>>,
}

/// The wire form of [`SeAttestationRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeAttestationRequestJson {
    /// Base64 of [`SeAttestationRequest::request_blob`].
    pub request_blob: String,
    /// [`SeAttestationRequest::measurement_size`].
    pub measurement_size: u32,
    /// [`SeAttestationRequest::additional_size`].
    pub additional_size: u32,
    /// Base64 of [`SeAttestationRequest::encr_measurement_key`].
    pub encr_measurement_key: String,
    /// Base64 of [`SeAttestationRequest::encr_request_nonce`].
    pub encr_request_nonce: String,
    /// Base64 of [`SeAttestationRequest::image_hdr_tags`].
    pub image_hdr_tags: String,
    /// Base64 of [`SeAttestationRequest::runtime_data_digest`]; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_data_digest: Option<String>,
}

impl SeAttestationRequest {
    /// Checks lengths: ARCB 1 B..=1 MiB, measurement size 1..=32 KiB, additional size ≤ 32 KiB,
    /// sealed fields ≤ 4 KiB, runtime data digest ≤ 64 bytes.
    pub fn validate(&self) -> Result<(), SeEvidenceError> {
        if self.request_blob.is_empty() {
            return Err(SeEvidenceError::FieldEmpty { field: "request_blob" });
        }
        check_max("request_blob", &self.request_blob, ARCB_MAX_LEN)?;
        if self.measurement_size == 0 {
            return Err(SeEvidenceError::FieldEmpty { field: "measurement_size" });
        }
        if self.measurement_size as usize > MEASUREMENT_MAX_LEN {
            return Err(SeEvidenceError::FieldTooLong {
                field: "measurement_size",
                len: self.measurement_size as usize,
                max: MEASUREMENT_MAX_LEN,
            });
        }
        if self.additional_size as usize > ADDITIONAL_MAX_LEN {
            return Err(SeEvidenceError::FieldTooLong {
                field: "additional_size",
                len: self.additional_size as usize,
                max: ADDITIONAL_MAX_LEN,
            });
        }
        check_max("encr_measurement_key", &self.encr_measurement_key, SEALED_FIELD_MAX_LEN)?;
        check_max("encr_request_nonce", &self.encr_request_nonce, SEALED_FIELD_MAX_LEN)?;
        if let Some(d) = &self.runtime_data_digest {
            check_max("runtime_data_digest", d, 64)?;
        }
        Ok(())
    }
}

impl TryFrom<SeAttestationRequestJson> for SeAttestationRequest {
    type Error = SeEvidenceError;

    fn try_from(j: SeAttestationRequestJson) -> Result<Self, Self::Error> {
        let r = SeAttestationRequest {
            request_blob: b64("request_blob", &j.request_blob)?,
            measurement_size: j.measurement_size,
            additional_size: j.additional_size,
            encr_measurement_key: b64("encr_measurement_key", &j.encr_measurement_key)?,
            encr_request_nonce: b64("encr_request_nonce", &j.encr_request_nonce)?,
            image_hdr_tags: BootHdrTags::from_slice(&b64("image_hdr_tags", &j.image_hdr_tags)?)?,
            runtime_data_digest: j.runtime_data_digest.as_deref().map(|s| b64("runtime_data_digest", s)).transpose()?,
        };
        r.validate()?;
        Ok(r)
    }
}

impl From<SeAttestationRequest> for SeAttestationRequestJson {
    fn from(r: SeAttestationRequest) -> Self {
        SeAttestationRequestJson {
            request_blob: base64::encode(&r.request_blob),
            measurement_size: r.measurement_size,
            additional_size: r.additional_size,
            encr_measurement_key: base64::encode(&r.encr_measurement_key),
            encr_request_nonce: base64::encode(&r.encr_request_nonce),
            image_hdr_tags: base64::encode(&r.image_hdr_tags.to_bytes()),
            runtime_data_digest: r.runtime_data_digest.as_deref().map(base64::encode),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ARCB
// ---------------------------------------------------------------------------------------------

/// One key slot of an ARCB: the request-protection key wrapped for one host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeArcbKeySlot {
    /// SHA-256 of the host public key (X‖Y, each padded to 80 bytes).
    pub phkh: [u8; PHKH_LEN],
    /// The request-protection key, AES-256-GCM encrypted with the ECDH-derived key.
    pub wrapped_key: [u8; 32],
    /// AES-GCM tag of the wrapped key.
    pub tag: [u8; GCM_TAG_LEN],
}

/// A parsed attestation request control block (see the module documentation for the layout).
#[derive(Clone, PartialEq, Eq)]
pub struct SeArcb {
    /// Request version (0x0100).
    pub version: u32,
    /// AES-GCM IV of the encrypted area.
    pub iv: [u8; GCM_IV_LEN],
    /// Plaintext attestation flags.
    pub flags: AttestationFlags,
    /// Measurement algorithm (1 = HMAC-SHA512).
    pub measurement_algorithm: u32,
    /// Customer (request) ECDH public key, X‖Y each padded to 80 bytes.
    pub customer_public_key: [u8; CUSTOMER_KEY_LEN],
    /// Key slots, one per host key.
    pub key_slots: Vec<SeArcbKeySlot>,
    /// The encrypted measurement key (and nonce).
    pub encrypted: Vec<u8>,
    /// AES-GCM tag.
    pub tag: [u8; GCM_TAG_LEN],
}

impl std::fmt::Debug for SeArcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeArcb")
            .field("version", &self.version)
            .field("flags", &self.flags)
            .field("measurement_algorithm", &self.measurement_algorithm)
            .field("key_slots", &self.key_slots.len())
            .field("encrypted_len", &self.encrypted.len())
            .finish_non_exhaustive()
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        a.copy_from_slice(s);
    }
    a
}

impl SeArcb {
    /// Smallest ARCB: header, flags, customer key, one key slot, the measurement key, the tag.
    pub const MIN_LEN: usize =
        ARCB_HEADER_LEN + ARCB_AUTH_LEN + CUSTOMER_KEY_LEN + ARCB_KEY_SLOT_LEN + MEASUREMENT_KEY_LEN + GCM_TAG_LEN;

    /// Length of the authenticated (AAD) part for `n` key slots.
    pub const fn aad_len_for(n: usize) -> usize {
        ARCB_HEADER_LEN + ARCB_AUTH_LEN + CUSTOMER_KEY_LEN + n * ARCB_KEY_SLOT_LEN
    }

    /// Parses and checks an ARCB: magic, version, exact length, zero reserved bytes, at least one
    /// key slot, consistent sizes, HMAC-SHA512, known flags, and an encrypted area holding
    /// exactly the measurement key and (if flagged) the nonce.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SeEvidenceError> {
        if b.len() < Self::MIN_LEN {
            return Err(SeEvidenceError::ArcbTooShort { len: b.len(), min: Self::MIN_LEN });
        }
        if b.len() > ARCB_MAX_LEN {
            return Err(SeEvidenceError::FieldTooLong { field: "arcb", len: b.len(), max: ARCB_MAX_LEN });
        }
        let magic: [u8; 8] = arr(b, 0);
        if magic != ARCB_MAGIC {
            return Err(SeEvidenceError::ArcbBadMagic { found: magic });
        }
        let version = be_u32(b, 0x08);
        if version != ATTESTATION_VERSION_1 {
            return Err(SeEvidenceError::ArcbUnsupportedVersion(version));
        }
        let declared = be_u32(b, 0x0C);
        if declared as usize != b.len() {
            return Err(SeEvidenceError::ArcbLength { declared, actual: b.len() });
        }
        for (start, end) in [(0x1C, 0x27), (0x28, 0x2C), (0x3C, 0x40)] {
            if let Some(i) = b[start..end].iter().position(|&x| x != 0) {
                return Err(SeEvidenceError::ArcbReservedNotZero { offset: start + i });
            }
        }
        let nks = b[0x27];
        if nks == 0 {
            return Err(SeEvidenceError::ArcbNoKeySlots);
        }
        let sea = be_u32(b, 0x2C);
        let expected_aad = Self::aad_len_for(nks as usize);
        let found_aad = b.len().checked_sub(GCM_TAG_LEN).and_then(|l| l.checked_sub(sea as usize)).unwrap_or(0);
        if found_aad != expected_aad {
            return Err(SeEvidenceError::ArcbAadSize { found: found_aad, expected: expected_aad, key_slots: nks });
        }
        let flags = AttestationFlags(be_u64(b, 0x30));
        if flags.unknown_bits() != 0 {
            return Err(SeEvidenceError::UnknownFlags(flags.unknown_bits()));
        }
        let mai = be_u32(b, 0x38);
        if mai != MAI_HMAC_SHA512 {
            return Err(SeEvidenceError::UnsupportedMeasurementAlgorithm(mai));
        }
        let expected_sea = flags.encrypted_len() as u32;
        if sea != expected_sea {
            return Err(SeEvidenceError::ArcbEncryptedSize { found: sea, expected: expected_sea });
        }
        let key_slots = (0..nks as usize)
            .map(|i| {
                let at = ARCB_HEADER_LEN + ARCB_AUTH_LEN + CUSTOMER_KEY_LEN + i * ARCB_KEY_SLOT_LEN;
                SeArcbKeySlot { phkh: arr(b, at), wrapped_key: arr(b, at + 32), tag: arr(b, at + 64) }
            })
            .collect();
        Ok(SeArcb {
            version,
            iv: arr(b, 0x10),
            flags,
            measurement_algorithm: mai,
            customer_public_key: arr(b, 0x40),
            key_slots,
            encrypted: b[expected_aad..expected_aad + sea as usize].to_vec(),
            tag: arr(b, b.len() - GCM_TAG_LEN),
        })
    }

    /// The authenticated part (AES-GCM AAD): header, flags, algorithm, customer key, key slots.
    /// Length and encrypted-area size are derived from the fields (clamped to `u32`/`u8`).
    pub fn authenticated_bytes(&self) -> Vec<u8> {
        let aad_len = Self::aad_len_for(self.key_slots.len());
        let total = aad_len + self.encrypted.len() + GCM_TAG_LEN;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&ARCB_MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&[0u8; 4 + 7]);
        out.push(u8::try_from(self.key_slots.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&u32::try_from(self.encrypted.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.flags.0.to_be_bytes());
        out.extend_from_slice(&self.measurement_algorithm.to_be_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.customer_public_key);
        for s in &self.key_slots {
            out.extend_from_slice(&s.phkh);
            out.extend_from_slice(&s.wrapped_key);
            out.extend_from_slice(&s.tag);
        }
        out
    }

    /// The whole ARCB: authenticated part, encrypted area, tag.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.authenticated_bytes();
        out.extend_from_slice(&self.encrypted);
        out.extend_from_slice(&self.tag);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// pvattest exchange format
// ---------------------------------------------------------------------------------------------

/// A `pvattest create` output: the ARCB and the buffer sizes to pass to the Ultravisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvattestExchangeRequest {
    /// The binary ARCB.
    pub arcb: Vec<u8>,
    /// Expected measurement size (64).
    pub measurement_size: u32,
    /// Expected additional-data size (0 if none).
    pub additional_size: u32,
}

/// A `pvattest perform` output: the ARCB and what the Ultravisor returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvattestExchangeResponse {
    /// The binary ARCB the response answers.
    pub arcb: Vec<u8>,
    /// The measurement.
    pub measurement: Vec<u8>,
    /// Additional data, if any was requested.
    pub additional: Option<Vec<u8>>,
    /// User data, if the guest supplied any.
    pub user_data: Option<Vec<u8>>,
    /// Configuration unique ID.
    pub cuid: ConfigUid,
}

/// An exchange-format entry as found.
enum Entry<'a> {
    None,
    Expected(u32),
    Data(&'a [u8]),
}

const EXCHANGE_ENTRIES: [&str; 5] = ["arcb", "measurement", "additional data", "user data", "config UID"];

fn exchange_header(b: &[u8]) -> Result<[Entry<'_>; 5], SeEvidenceError> {
    if b.len() < EXCHANGE_HEADER_LEN {
        return Err(SeEvidenceError::ExchangeTooShort { len: b.len(), min: EXCHANGE_HEADER_LEN });
    }
    let magic: [u8; 8] = arr(b, 0);
    if magic != EXCHANGE_MAGIC {
        return Err(SeEvidenceError::ExchangeBadMagic { found: magic });
    }
    let version = be_u32(b, 8);
    if version != EXCHANGE_VERSION_1 {
        return Err(SeEvidenceError::ExchangeUnsupportedVersion(version));
    }
    let declared = be_u32(b, 12);
    if declared as usize != b.len() {
        return Err(SeEvidenceError::ExchangeSize { declared, actual: b.len() });
    }
    let mut out = [Entry::None, Entry::None, Entry::None, Entry::None, Entry::None];
    for (i, slot) in out.iter_mut().enumerate() {
        let size = be_u32(b, 0x18 + 8 * i);
        let offset = be_u32(b, 0x1C + 8 * i);
        let entry = EXCHANGE_ENTRIES[i];
        *slot = match (size, offset) {
            (0, _) => Entry::None,
            (s, 0) => Entry::Expected(s),
            (_, o) if (o as usize) < EXCHANGE_HEADER_LEN => {
                return Err(SeEvidenceError::ExchangeEntry { entry, offset, size, reason: "points into the header" });
            }
            (s, o) => match (o as usize).checked_add(s as usize).and_then(|end| b.get(o as usize..end)) {
                Some(d) => Entry::Data(d),
                None => {
                    return Err(SeEvidenceError::ExchangeEntry { entry, offset, size, reason: "lies beyond the data" });
                }
            },
        };
    }
    Ok(out)
}

fn put_entry(out: &mut [u8], i: usize, size: usize, offset: usize) {
    let at = 0x18 + 8 * i;
    out[at..at + 4].copy_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_be_bytes());
}

fn exchange_skeleton() -> Vec<u8> {
    let mut out = vec![0u8; EXCHANGE_HEADER_LEN];
    out[0..8].copy_from_slice(&EXCHANGE_MAGIC);
    out[8..12].copy_from_slice(&EXCHANGE_VERSION_1.to_be_bytes());
    out
}

fn finish_exchange(mut out: Vec<u8>) -> Vec<u8> {
    let total = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[12..16].copy_from_slice(&total.to_be_bytes());
    out
}

impl PvattestExchangeRequest {
    /// Parses a `pvattest create` file.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SeEvidenceError> {
        let [arcb, meas, add, _, _] = exchange_header(b)?;
        let Entry::Data(arcb) = arcb else { return Err(SeEvidenceError::ExchangeMissing { entry: "arcb" }) };
        check_max("arcb", arcb, ARCB_MAX_LEN)?;
        let size = |e: Entry<'_>| match e {
            Entry::None => 0,
            Entry::Expected(s) => s,
            Entry::Data(d) => u32::try_from(d.len()).unwrap_or(u32::MAX),
        };
        let r =
            PvattestExchangeRequest { arcb: arcb.to_vec(), measurement_size: size(meas), additional_size: size(add) };
        if r.measurement_size == 0 {
            return Err(SeEvidenceError::ExchangeMissing { entry: "measurement" });
        }
        if r.measurement_size as usize > MEASUREMENT_MAX_LEN {
            return Err(SeEvidenceError::FieldTooLong {
                field: "measurement",
                len: r.measurement_size as usize,
                max: MEASUREMENT_MAX_LEN,
            });
        }
        if r.additional_size as usize > ADDITIONAL_MAX_LEN {
            return Err(SeEvidenceError::FieldTooLong {
                field: "additional_data",
                len: r.additional_size as usize,
                max: ADDITIONAL_MAX_LEN,
            });
        }
        Ok(r)
    }

    /// Serialises as `pvattest create` does.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = exchange_skeleton();
        put_entry(&mut out, 0, self.arcb.len(), EXCHANGE_HEADER_LEN);
        put_entry(&mut out, 1, self.measurement_size as usize, 0);
        put_entry(&mut out, 2, self.additional_size as usize, 0);
        out.extend_from_slice(&self.arcb);
        finish_exchange(out)
    }
}

impl PvattestExchangeResponse {
    /// Parses a `pvattest perform` file: ARCB, measurement and CUID must be present as data.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SeEvidenceError> {
        let [arcb, meas, add, user, cuid] = exchange_header(b)?;
        let data = |e: Entry<'_>| match e {
            Entry::Data(d) => Some(d.to_vec()),
            _ => None,
        };
        let arcb = data(arcb).ok_or(SeEvidenceError::ExchangeMissing { entry: "arcb" })?;
        check_max("arcb", &arcb, ARCB_MAX_LEN)?;
        let measurement = data(meas).ok_or(SeEvidenceError::ExchangeMissing { entry: "measurement" })?;
        check_max("measurement", &measurement, MEASUREMENT_MAX_LEN)?;
        let additional = data(add);
        if let Some(a) = &additional {
            check_max("additional_data", a, ADDITIONAL_MAX_LEN)?;
        }
        let user_data = data(user);
        if let Some(u) = &user_data {
            check_max("user_data", u, USER_DATA_MAX_LEN)?;
        }
        let cuid = data(cuid).ok_or(SeEvidenceError::ExchangeMissing { entry: "config UID" })?;
        Ok(PvattestExchangeResponse { arcb, measurement, additional, user_data, cuid: fixed("cuid", cuid)? })
    }

    /// Serialises as `pvattest perform` does (data in entry order after the header).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = exchange_skeleton();
        let parts: [Option<&[u8]>; 5] = [
            Some(&self.arcb),
            Some(&self.measurement),
            self.additional.as_deref(),
            self.user_data.as_deref(),
            Some(&self.cuid),
        ];
        let mut offset = EXCHANGE_HEADER_LEN;
        for (i, p) in parts.iter().enumerate() {
            if let Some(p) = p {
                put_entry(&mut out, i, p.len(), offset);
                offset += p.len();
            }
        }
        for p in parts.into_iter().flatten() {
            out.extend_from_slice(p);
        }
        finish_exchange(out)
    }
}

// ---------------------------------------------------------------------------------------------
// base64 (standard alphabet, padded, strict)
// ---------------------------------------------------------------------------------------------

/// Thin wrappers over the `base64` crate's strict standard engine (canonical padding, no
/// trailing bits, no whitespace).
mod base64 {
    use ::base64::Engine as _;
    use ::base64::engine::general_purpose::STANDARD;

    pub(super) fn encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    /// Decodes canonical padded base64; `None` on any deviation.
    pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
        STANDARD.decode(s).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn tags() -> BootHdrTags {
        BootHdrTags { pld: [1; 64], ald: [2; 64], tld: [3; 64], tag: [4; 16] }
    }

    fn response() -> SeAttestationResponse {
        SeAttestationResponse {
            measurement: vec![0xAB; 64],
            additional_data: vec![0x11; 64],
            user_data: vec![0x22; 64],
            cuid: [0x33; 16],
            encr_measurement_key: vec![0x44; 100],
            encr_request_nonce: vec![0x55; 50],
            image_hdr_tags: tags(),
        }
    }

    fn arcb(nks: usize, flags: AttestationFlags) -> SeArcb {
        SeArcb {
            version: ATTESTATION_VERSION_1,
            iv: [0x55; 12],
            flags,
            measurement_algorithm: MAI_HMAC_SHA512,
            customer_public_key: [0xC1; 160],
            key_slots: (0..nks)
                .map(|i| SeArcbKeySlot { phkh: [i as u8; 32], wrapped_key: [0x20 + i as u8; 32], tag: [0x30; 16] })
                .collect(),
            encrypted: vec![0xEE; flags.encrypted_len()],
            tag: [0xF0; 16],
        }
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), enc);
            assert_eq!(base64::decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64::encode(&[0xFB, 0xFF]), "+/8=");
        for bad in ["Zg", "Zg=", "Z===", "Zh==", "Zm9=", "Zg==Zg==", "Zm9v\n", "Zm 9", "Zm-_", "=Zm9"] {
            assert_eq!(base64::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn flags_are_msb0() {
        assert_eq!(SeAttestationFlag::Nonce.mask(), 0x4000_0000_0000_0000);
        assert_eq!(SeAttestationFlag::ImagePhkh.mask(), 0x2000_0000_0000_0000);
        assert_eq!(SeAttestationFlag::AttestationPhkh.mask(), 0x1000_0000_0000_0000);
        assert_eq!(SeAttestationFlag::SecretStoreHash.mask(), 0x0800_0000_0000_0000);
        assert_eq!(SeAttestationFlag::FirmwareState.mask(), 0x0400_0000_0000_0000);
        assert_eq!(AttestationFlags::TRUSTEE.0, 0x7000_0000_0000_0000);
        assert_eq!(AttestationFlags::TRUSTEE.expected_additional_len(), 64);
        assert_eq!(AttestationFlags::TRUSTEE.encrypted_len(), 80);
        let all = SeAttestationFlag::ALL.into_iter().fold(AttestationFlags::empty(), AttestationFlags::with);
        assert_eq!(all.expected_additional_len(), 32 + 32 + 64 + 320);
        assert_eq!(AttestationFlags(1).unknown_bits(), 1);
        assert_eq!(AttestationFlags(1 << 63).unknown_bits(), 1 << 63);
        assert!(!all.without(SeAttestationFlag::Nonce).contains(SeAttestationFlag::Nonce));
    }

    #[test]
    fn additional_data_split() {
        let mut data = vec![0xA1; 32];
        data.extend([0xA2; 32]);
        data.extend([0xA3; 64]);
        data.extend([0xA4; 320]);
        data.extend([0xA5; 3]);
        let all = SeAttestationFlag::ALL.into_iter().fold(AttestationFlags::empty(), AttestationFlags::with);
        let a = AdditionalData::parse(&data, all).unwrap();
        assert_eq!(a.image_phkh, Some([0xA1; 32]));
        assert_eq!(a.attestation_phkh, Some([0xA2; 32]));
        assert_eq!(a.secret_store_hash, Some([0xA3; 64]));
        assert_eq!(a.firmware_state.as_deref(), Some(&[0xA4; 320][..]));
        assert_eq!(a.unrecognized, vec![0xA5; 3]);
        assert_eq!(a.to_bytes(), data);

        // Only the attestation PHKH flagged: the first 32 bytes are it.
        let a = AdditionalData::parse(&data[..32], AttestationFlags::empty().with(SeAttestationFlag::AttestationPhkh))
            .unwrap();
        assert_eq!(a.image_phkh, None);
        assert_eq!(a.attestation_phkh, Some([0xA1; 32]));
        assert!(a.unrecognized.is_empty());

        assert_eq!(
            AdditionalData::parse(&data[..40], AttestationFlags::TRUSTEE),
            Err(SeEvidenceError::AdditionalDataMissing { item: "attestation_phkh", needed: 32, available: 8 })
        );
        assert_eq!(AdditionalData::parse(&[], AttestationFlags::empty()).unwrap(), AdditionalData::default());
    }

    #[test]
    fn response_json_round_trip() {
        let r = response();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(&format!("\"cuid\":\"{}\"", base64::encode(&[0x33; 16]))));
        let back: SeAttestationResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // The trustee shape: exactly these seven keys.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "additional_data",
                "cuid",
                "encr_measurement_key",
                "encr_request_nonce",
                "image_hdr_tags",
                "measurement",
                "user_data"
            ]
        );
    }

    fn with_field(field: &str, value: serde_json::Value) -> String {
        let mut v = serde_json::to_value(response()).unwrap();
        v[field] = value;
        v.to_string()
    }

    fn parse(s: &str) -> Result<SeAttestationResponse, String> {
        let j: SeAttestationResponseJson = serde_json::from_str(s).map_err(|e| e.to_string())?;
        SeAttestationResponse::try_from(j).map_err(|e| e.to_string())
    }

    #[test]
    fn response_json_rejects_bad_fields() {
        let e = |field: &str, v: serde_json::Value| {
            let j: SeAttestationResponseJson = serde_json::from_str(&with_field(field, v)).unwrap();
            SeAttestationResponse::try_from(j).unwrap_err()
        };
        assert_eq!(
            e("cuid", base64::encode(&[0; 17]).into()),
            SeEvidenceError::FieldLength { field: "cuid", len: 17, expected: 16 }
        );
        assert_eq!(
            e("image_hdr_tags", base64::encode(&[0; 207]).into()),
            SeEvidenceError::FieldLength { field: "image_hdr_tags", len: 207, expected: 208 }
        );
        assert_eq!(
            e("user_data", base64::encode(&[0; 257]).into()),
            SeEvidenceError::FieldTooLong { field: "user_data", len: 257, max: 256 }
        );
        assert_eq!(
            e("additional_data", base64::encode(&vec![0; 0x8001]).into()),
            SeEvidenceError::FieldTooLong { field: "additional_data", len: 0x8001, max: 0x8000 }
        );
        assert_eq!(e("measurement", "".into()), SeEvidenceError::FieldEmpty { field: "measurement" });
        assert_eq!(e("measurement", "!!!!".into()), SeEvidenceError::Base64 { field: "measurement" });
        // Unknown and missing fields, wrong types: serde errors.
        assert!(parse(&with_field("extra", "AA==".into())).is_err());
        assert!(parse(&with_field("cuid", 5.into())).is_err());
        let mut v = serde_json::to_value(response()).unwrap();
        v.as_object_mut().unwrap().remove("cuid");
        assert!(parse(&v.to_string()).is_err());
    }

    #[test]
    fn request_json_round_trip() {
        let mut r = SeAttestationRequest {
            request_blob: arcb(1, AttestationFlags::TRUSTEE).to_bytes(),
            measurement_size: 64,
            additional_size: 64,
            encr_measurement_key: vec![1; 512],
            encr_request_nonce: vec![2; 512],
            image_hdr_tags: tags(),
            runtime_data_digest: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("runtime_data_digest"));
        assert_eq!(serde_json::from_str::<SeAttestationRequest>(&json).unwrap(), r);
        r.runtime_data_digest = Some(vec![9; 64]);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SeAttestationRequest>(&json).unwrap(), r);
        r.runtime_data_digest = Some(vec![9; 65]);
        assert!(r.validate().is_err());
        r.runtime_data_digest = None;
        r.measurement_size = 0;
        assert_eq!(r.validate(), Err(SeEvidenceError::FieldEmpty { field: "measurement_size" }));
    }

    #[test]
    fn arcb_round_trip_and_layout() {
        let a = arcb(2, AttestationFlags::TRUSTEE);
        let b = a.to_bytes();
        assert_eq!(b.len(), 0x30 + 0x10 + 160 + 160 + 80 + 16);
        assert_eq!(&b[0..8], &[0; 8]);
        assert_eq!(&b[8..12], &[0, 0, 1, 0]);
        assert_eq!(u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize, b.len());
        assert_eq!(&b[16..28], &[0x55; 12]);
        assert_eq!(b[0x27], 2);
        assert_eq!(&b[0x2C..0x30], &80u32.to_be_bytes());
        assert_eq!(&b[0x30..0x38], &0x7000_0000_0000_0000u64.to_be_bytes());
        assert_eq!(&b[0x38..0x3C], &[0, 0, 0, 1]);
        assert_eq!(&b[0x40..0xE0], &[0xC1; 160]);
        assert_eq!(&b[0xE0 + 80..0xE0 + 112], &[1; 32]);
        assert_eq!(SeArcb::from_bytes(&b).unwrap(), a);
        assert_eq!(a.authenticated_bytes(), b[..b.len() - 96]);

        let a = arcb(1, AttestationFlags::empty());
        assert_eq!(SeArcb::from_bytes(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn arcb_rejects_malformed() {
        let good = arcb(1, AttestationFlags::TRUSTEE).to_bytes();
        let set32 = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());

        assert!(matches!(SeArcb::from_bytes(&good[..100]), Err(SeEvidenceError::ArcbTooShort { .. })));
        let mut b = good.clone();
        b[3] = 1;
        assert!(matches!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbBadMagic { .. })));
        let mut b = good.clone();
        set32(&mut b, 8, 0x200);
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbUnsupportedVersion(0x200)));
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbLength { .. })));
        let mut b = good.clone();
        b[0x20] = 1;
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbReservedNotZero { offset: 0x20 }));
        let mut b = good.clone();
        b[0x3F] = 1;
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbReservedNotZero { offset: 0x3F }));
        let mut b = good.clone();
        b[0x27] = 0;
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbNoKeySlots));
        let mut b = good.clone();
        b[0x27] = 2;
        assert!(matches!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbAadSize { .. })));
        let mut b = good.clone();
        set32(&mut b, 0x2C, u32::MAX);
        assert!(matches!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbAadSize { .. })));
        let mut b = good.clone();
        set32(&mut b, 0x38, 2);
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::UnsupportedMeasurementAlgorithm(2)));
        let mut b = good.clone();
        b[0x37] = 1;
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::UnknownFlags(1)));
        // Nonce flag cleared but 80 encrypted bytes.
        let mut b = good.clone();
        b[0x30] = 0x30;
        assert_eq!(SeArcb::from_bytes(&b), Err(SeEvidenceError::ArcbEncryptedSize { found: 80, expected: 64 }));
    }

    #[test]
    fn exchange_round_trip() {
        let req = PvattestExchangeRequest { arcb: vec![0x11; 16], measurement_size: 64, additional_size: 32 };
        let b = req.to_bytes();
        assert_eq!(&b[..8], b"pvattest");
        assert_eq!(b.len(), 0x40 + 16);
        // Entries: arcb {16, 0x40}, measurement {64, 0}, additional {32, 0}.
        assert_eq!(&b[0x18..0x30], &[0, 0, 0, 16, 0, 0, 0, 0x40, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0]);
        assert_eq!(PvattestExchangeRequest::from_bytes(&b).unwrap(), req);

        let resp = PvattestExchangeResponse {
            arcb: vec![0x11; 16],
            measurement: vec![0x12; 64],
            additional: Some(vec![0x13; 32]),
            user_data: Some(vec![0x15; 256]),
            cuid: [0x14; 16],
        };
        let b = resp.to_bytes();
        assert_eq!(b.len(), 0x40 + 16 + 64 + 32 + 256 + 16);
        assert_eq!(PvattestExchangeResponse::from_bytes(&b).unwrap(), resp);
        let minimal = PvattestExchangeResponse { additional: None, user_data: None, ..resp.clone() };
        assert_eq!(PvattestExchangeResponse::from_bytes(&minimal.to_bytes()).unwrap(), minimal);

        // A request is not a response (no measurement data, no CUID).
        assert_eq!(
            PvattestExchangeResponse::from_bytes(&req.to_bytes()),
            Err(SeEvidenceError::ExchangeMissing { entry: "measurement" })
        );
        let r = SeAttestationResponse::from_exchange(&resp, tags()).unwrap();
        assert_eq!(r.user_data, vec![0x15; 256]);
        assert!(r.encr_measurement_key.is_empty());
    }

    #[test]
    fn exchange_rejects_malformed() {
        let resp = PvattestExchangeResponse {
            arcb: vec![0x11; 16],
            measurement: vec![0x12; 64],
            additional: None,
            user_data: None,
            cuid: [0x14; 16],
        };
        let good = resp.to_bytes();
        assert!(matches!(
            PvattestExchangeResponse::from_bytes(&good[..10]),
            Err(SeEvidenceError::ExchangeTooShort { .. })
        ));
        let mut b = good.clone();
        b[0] = b'P';
        assert!(matches!(PvattestExchangeResponse::from_bytes(&b), Err(SeEvidenceError::ExchangeBadMagic { .. })));
        let mut b = good.clone();
        b[8] = 0xFF;
        assert!(matches!(
            PvattestExchangeResponse::from_bytes(&b),
            Err(SeEvidenceError::ExchangeUnsupportedVersion(_))
        ));
        assert!(matches!(
            PvattestExchangeResponse::from_bytes(&good[..good.len() - 1]),
            Err(SeEvidenceError::ExchangeSize { .. })
        ));
        // CUID of 15 bytes.
        let mut b = good.clone();
        b[0x3B] = 15;
        assert_eq!(
            PvattestExchangeResponse::from_bytes(&b),
            Err(SeEvidenceError::FieldLength { field: "cuid", len: 15, expected: 16 })
        );
        // Measurement beyond the end, into the header.
        let mut b = good.clone();
        b[0x24..0x28].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert!(matches!(PvattestExchangeResponse::from_bytes(&b), Err(SeEvidenceError::ExchangeEntry { .. })));
        let mut b = good.clone();
        b[0x24..0x28].copy_from_slice(&8u32.to_be_bytes());
        assert!(matches!(
            PvattestExchangeResponse::from_bytes(&b),
            Err(SeEvidenceError::ExchangeEntry { reason: "points into the header", .. })
        ));
    }

    proptest! {
        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(base64::decode(&base64::encode(&data)).unwrap(), data);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = SeArcb::from_bytes(&bytes);
            let _ = PvattestExchangeRequest::from_bytes(&bytes);
            let _ = PvattestExchangeResponse::from_bytes(&bytes);
            let _ = AdditionalData::parse(&bytes, AttestationFlags(u64::from_le_bytes([bytes.first().copied().unwrap_or(0); 8])));
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = base64::decode(s);
                let _ = parse(s);
            }
        }

        #[test]
        fn mutated_structures_never_panic(pos in 0usize..700, byte in any::<u8>(), cut in 0usize..700) {
            let mut a = arcb(2, AttestationFlags::TRUSTEE).to_bytes();
            let p = pos % a.len();
            a[p] = byte;
            let _ = SeArcb::from_bytes(&a[..cut.min(a.len())]);
            if let Ok(parsed) = SeArcb::from_bytes(&a) {
                prop_assert_eq!(parsed.to_bytes(), a);
            }
            let resp = PvattestExchangeResponse {
                arcb: vec![0x11; 16],
                measurement: vec![0x12; 64],
                additional: Some(vec![0x13; 32]),
                user_data: Some(vec![0x15; 100]),
                cuid: [0x14; 16],
            };
            let mut e = resp.to_bytes();
            let p = pos % e.len();
            e[p] = byte;
            let _ = PvattestExchangeResponse::from_bytes(&e[..cut.min(e.len())]);
            let _ = PvattestExchangeResponse::from_bytes(&e);
        }
    }
}
