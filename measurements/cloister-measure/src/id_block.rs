//! SEV-SNP ID block and ID authentication information structure (`SNP_LAUNCH_FINISH`).
//!
//! An ID block pins a launch: it carries the expected launch digest, a family ID, an image ID, a
//! guest SVN and the guest policy, and is signed with a P-384 **ID key**. The ID key's public part
//! may in turn be signed by an **author key**. The hypervisor hands both structures to the AMD
//! secure processor at `SNP_LAUNCH_FINISH`; the firmware refuses the launch when the measured
//! digest or the policy differ, and from then on every attestation report of the guest carries
//! `FAMILY_ID`, `IMAGE_ID`, `GUEST_SVN`, `ID_KEY_DIGEST` and (only when the VMM set
//! `AUTHOR_KEY_EN`) `AUTHOR_KEY_DIGEST`.
//!
//! Layouts (AMD SEV-SNP firmware ABI, "ID block" and "ID authentication information structure"):
//!
//! | ID block (0x60 bytes) | offset | size |
//! |---|---|---|
//! | launch digest | 0x00 | 48 |
//! | family ID | 0x30 | 16 |
//! | image ID | 0x40 | 16 |
//! | version (must be 1) | 0x50 | 4, little-endian |
//! | guest SVN | 0x54 | 4, little-endian |
//! | policy | 0x58 | 8, little-endian |
//!
//! | ID auth (0x1000 bytes) | offset | size |
//! |---|---|---|
//! | ID key algorithm (1 = ECDSA P-384 with SHA-384) | 0x000 | 4 |
//! | author key algorithm (0 when there is no author key) | 0x004 | 4 |
//! | ID block signature | 0x040 | 0x200 |
//! | ID public key | 0x240 | 0x404 |
//! | ID key signature (by the author key, over the 0x404 ID key bytes) | 0x680 | 0x200 |
//! | author public key | 0x880 | 0x404 |
//!
//! A signature area holds R then S, each a little-endian integer zero-padded to 72 bytes; the rest
//! of the 0x200 bytes is zero. A public-key area holds the curve (2 = P-384) as a little-endian
//! `u32`, then Qx and Qy, each little-endian zero-padded to 72 bytes; the rest of the 0x404 bytes
//! is zero. `ID_KEY_DIGEST` / `AUTHOR_KEY_DIGEST` in the report are SHA-384 over the whole
//! 0x404-byte public-key area ([`key_digest`]).
//!
//! Outputs: [`SignedIdBlock::id_block_base64`] / [`SignedIdBlock::id_auth_base64`] are the strings
//! QEMU's `sev-snp-guest` object takes as `id-block=` / `id-auth=` and Kata takes as
//! `snp_id_block` / `snp_id_auth`. QEMU honours the author key only with `author-key-enabled=on`;
//! Kata's Go runtime does not emit that property, so under Kata the report's `AUTHOR_KEY_DIGEST`
//! stays zero even when the ID auth carries an author key.
//!
//! Signatures are deterministic (RFC 6979), so the same key and block always give the same bytes.
//!
//! **What it trusts:** nothing it is given. Private keys arrive as PEM text (SEC1
//! `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`, unencrypted); the DER is parsed here with bounds
//! checks, the curve must be named and be P-384, the scalar must be in range and any embedded
//! public key must match it. Decoded key bytes live only in zeroizing buffers, the signing key is
//! zeroized on drop, and no `Debug`/`Display`/error message ever contains key material. ID blocks
//! and ID auth structures read back from bytes or base64 are length-checked and their public keys
//! validated as curve points before any signature is checked.

use std::fmt;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::elliptic_curve::ALGORITHM_OID;
use p384::pkcs8::der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef};
use p384::pkcs8::der::{self, Decode, Reader, SliceReader, TagMode, TagNumber};
use p384::pkcs8::{AssociatedOid, PrivateKeyInfo};
use zeroize::Zeroizing;

use crate::digest::{Sha384Digest, sha384};

/// Size of the ID block.
pub const ID_BLOCK_LEN: usize = 0x60;
/// Size of the ID authentication information structure.
pub const ID_AUTH_LEN: usize = 0x1000;
/// Size of an AMD-format ECDSA public key.
pub const PUBKEY_LEN: usize = 0x404;
/// Size of an AMD-format ECDSA signature.
pub const SIGNATURE_LEN: usize = 0x200;
/// The only ID block version the firmware accepts.
pub const ID_BLOCK_VERSION: u32 = 1;
/// Algorithm code for ECDSA P-384 with SHA-384 (`ID_KEY_ALGO` / `AUTHOR_KEY_ALGO`).
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Curve code for P-384 in an AMD public key.
pub const CURVE_P384: u32 = 2;
/// Policy sev-snp-measure and the `sev` crate put in an ID block by default (SMT allowed, ABI 0.0).
pub const DEFAULT_POLICY: u64 = 0x30000;

/// Byte offsets of the fields of the ID authentication information structure.
pub mod auth_offsets {
    /// `ID_KEY_ALGO` (u32).
    pub const ID_KEY_ALGO: usize = 0x000;
    /// `AUTHOR_KEY_ALGO` (u32).
    pub const AUTHOR_KEY_ALGO: usize = 0x004;
    /// Signature of the ID block by the ID key.
    pub const ID_BLOCK_SIG: usize = 0x040;
    /// ID public key.
    pub const ID_KEY: usize = 0x240;
    /// Signature of the ID public key by the author key.
    pub const ID_KEY_SIG: usize = 0x680;
    /// Author public key.
    pub const AUTHOR_KEY: usize = 0x880;
}

/// Width of one little-endian coordinate / scalar slot in AMD's formats.
const AMD_INT_LEN: usize = 72;
/// Bytes of a P-384 field element or scalar.
const P384_LEN: usize = 48;
/// PEM inputs larger than this are rejected before any parsing (a P-384 key is under 400 bytes).
pub const MAX_PEM_LEN: usize = 64 * 1024;

/// Why an ID block or ID auth structure could not be built, loaded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdBlockError {
    /// The PEM text is larger than [`MAX_PEM_LEN`].
    #[error("key PEM is {len} bytes, more than the {max} accepted")]
    PemTooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// No `-----BEGIN ...-----` block at all.
    #[error("no PEM block found in the key text")]
    NoPemBlock,
    /// PEM blocks exist but none is an EC private key (e.g. a public key or a certificate).
    #[error("PEM block \"{label}\" is not a private key (expected \"EC PRIVATE KEY\" or \"PRIVATE KEY\")")]
    UnsupportedPemLabel {
        /// The label of the first unusable block.
        label: String,
    },
    /// The key is password-protected; decrypt it first (`openssl pkey -in k.pem -out plain.pem`).
    #[error("the private key is encrypted; provide an unencrypted PEM")]
    EncryptedPrivateKey,
    /// The PEM armour or its base64 body is malformed.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// The DER inside the PEM is malformed.
    #[error("malformed key DER: {0}")]
    Der(String),
    /// A PKCS#8 key for another algorithm (RSA, Ed25519, ...).
    #[error("PKCS#8 key algorithm {algorithm} is not an elliptic-curve key (1.2.840.10045.2.1)")]
    NotEcKey {
        /// Algorithm OID found.
        algorithm: String,
    },
    /// An EC key on a curve other than P-384.
    #[error("EC key is on curve {curve}, but SNP ID and author keys must be P-384 (secp384r1)")]
    WrongCurve {
        /// Curve OID found, with its common name when known.
        curve: String,
    },
    /// Neither the SEC1 structure nor the PKCS#8 wrapper names the curve.
    #[error("EC private key does not name its curve")]
    MissingCurve,
    /// The private scalar is not 48 bytes long.
    #[error("EC private key is {len} bytes long, a P-384 key is 48")]
    BadPrivateKeyLength {
        /// Length found.
        len: usize,
    },
    /// The private scalar is zero or not below the group order.
    #[error("EC private key is not a valid P-384 scalar")]
    InvalidScalar,
    /// The public key embedded next to the private key does not belong to it.
    #[error("the public key embedded in the private-key file does not match the private key")]
    PublicKeyMismatch,
    /// A binary structure has the wrong size.
    #[error("{what} is {got} bytes, expected {expected}")]
    BadLength {
        /// Which structure.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Size found.
        got: usize,
    },
    /// A base64 string is malformed or decodes to the wrong size.
    #[error("{what} is not valid base64 of {expected} bytes")]
    BadBase64 {
        /// Which structure.
        what: &'static str,
        /// Expected decoded size.
        expected: usize,
    },
    /// An ID block whose version is not 1.
    #[error("ID block version is {found}, the firmware only accepts 1")]
    UnsupportedIdBlockVersion {
        /// Version found.
        found: u32,
    },
    /// An algorithm code other than ECDSA P-384/SHA-384 (or 0 for an absent author key).
    #[error("{field} is {value}, expected 1 (ECDSA P-384 with SHA-384)")]
    UnsupportedAlgorithm {
        /// Which field.
        field: &'static str,
        /// Value found.
        value: u32,
    },
    /// A public key area whose curve field is not 2 (P-384).
    #[error("{which} curve field is {value}, expected 2 (P-384)")]
    UnsupportedCurve {
        /// Which key.
        which: &'static str,
        /// Value found.
        value: u32,
    },
    /// A public key area that is not a point on P-384.
    #[error("{which} is not a valid P-384 public key")]
    InvalidPublicKey {
        /// Which key.
        which: &'static str,
    },
    /// A signature area whose R or S do not fit a P-384 scalar.
    #[error("{which} is not a well-formed P-384 signature")]
    MalformedSignature {
        /// Which signature.
        which: &'static str,
    },
    /// A signature that does not verify.
    #[error("{which} does not verify")]
    SignatureInvalid {
        /// Which signature.
        which: &'static str,
    },
    /// The ECDSA implementation refused to sign.
    #[error("ECDSA signing failed")]
    Signing,
}

fn der_error(e: der::Error) -> IdBlockError {
    IdBlockError::Der(e.to_string())
}

/// The SNP ID block (96 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IdBlock {
    /// Launch digest the firmware must measure, else it refuses the launch.
    pub launch_digest: Sha384Digest,
    /// Owner-chosen family ID, reported as `FAMILY_ID`.
    pub family_id: [u8; 16],
    /// Owner-chosen image ID, reported as `IMAGE_ID`.
    pub image_id: [u8; 16],
    /// Structure version, must be [`ID_BLOCK_VERSION`].
    pub version: u32,
    /// Guest security version number, reported as `GUEST_SVN`.
    pub guest_svn: u32,
    /// Guest policy; the firmware refuses the launch if it differs from the policy at launch start.
    pub policy: u64,
}

impl IdBlock {
    /// An ID block for `launch_digest` and `policy` with zero IDs and SVN (what
    /// `snp-create-id-block` builds when given policy [`DEFAULT_POLICY`]).
    pub fn new(launch_digest: Sha384Digest, policy: u64) -> Self {
        Self { launch_digest, family_id: [0; 16], image_id: [0; 16], version: ID_BLOCK_VERSION, guest_svn: 0, policy }
    }

    /// The 96 bytes the firmware reads.
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_LEN] {
        let mut out = [0u8; ID_BLOCK_LEN];
        out[0x00..0x30].copy_from_slice(self.launch_digest.as_bytes());
        out[0x30..0x40].copy_from_slice(&self.family_id);
        out[0x40..0x50].copy_from_slice(&self.image_id);
        out[0x50..0x54].copy_from_slice(&self.version.to_le_bytes());
        out[0x54..0x58].copy_from_slice(&self.guest_svn.to_le_bytes());
        out[0x58..0x60].copy_from_slice(&self.policy.to_le_bytes());
        out
    }

    /// Parses exactly 96 bytes; the version must be 1.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdBlockError> {
        let b: &[u8; ID_BLOCK_LEN] = bytes.try_into().map_err(|_| IdBlockError::BadLength {
            what: "ID block",
            expected: ID_BLOCK_LEN,
            got: bytes.len(),
        })?;
        let mut launch_digest = [0u8; 48];
        launch_digest.copy_from_slice(&b[0x00..0x30]);
        let mut family_id = [0u8; 16];
        family_id.copy_from_slice(&b[0x30..0x40]);
        let mut image_id = [0u8; 16];
        image_id.copy_from_slice(&b[0x40..0x50]);
        let version = le_u32(&b[0x50..0x54]);
        if version != ID_BLOCK_VERSION {
            return Err(IdBlockError::UnsupportedIdBlockVersion { found: version });
        }
        let mut policy = [0u8; 8];
        policy.copy_from_slice(&b[0x58..0x60]);
        Ok(Self {
            launch_digest: Sha384Digest(launch_digest),
            family_id,
            image_id,
            version,
            guest_svn: le_u32(&b[0x54..0x58]),
            policy: u64::from_le_bytes(policy),
        })
    }

    /// Base64 (standard alphabet, padded) of the 96 bytes.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.to_bytes())
    }

    /// Parses base64 of an ID block (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, IdBlockError> {
        let bytes = base64_decode_exact(s, ID_BLOCK_LEN, "ID block")?;
        Self::from_bytes(&bytes)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u32::from_le_bytes(a)
}

/// Writes a big-endian integer into a little-endian zero-padded slot.
fn write_le_from_be(dst: &mut [u8], be: &[u8]) {
    for (d, s) in dst.iter_mut().zip(be.iter().rev()) {
        *d = *s;
    }
}

/// Reads a little-endian 72-byte slot back into a 48-byte big-endian value; `None` if the value
/// needs more than 48 bytes.
fn read_be_from_le(slot: &[u8]) -> Option<[u8; P384_LEN]> {
    if slot.len() != AMD_INT_LEN || slot[P384_LEN..].iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = [0u8; P384_LEN];
    for (d, s) in out.iter_mut().zip(slot[..P384_LEN].iter().rev()) {
        *d = *s;
    }
    Some(out)
}

/// A P-384 public key, convertible to and from AMD's 0x404-byte format.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SnpPublicKey(VerifyingKey);

impl SnpPublicKey {
    /// The 0x404-byte AMD structure: curve 2, Qx and Qy little-endian in 72-byte slots, zeros.
    pub fn to_amd_bytes(&self) -> [u8; PUBKEY_LEN] {
        let mut out = [0u8; PUBKEY_LEN];
        out[0..4].copy_from_slice(&CURVE_P384.to_le_bytes());
        let point = self.0.to_encoded_point(false);
        if let (Some(x), Some(y)) = (point.x(), point.y()) {
            write_le_from_be(&mut out[4..4 + AMD_INT_LEN], x);
            write_le_from_be(&mut out[4 + AMD_INT_LEN..4 + 2 * AMD_INT_LEN], y);
        }
        out
    }

    /// Parses a 0x404-byte AMD public key; the curve must be P-384 and the point on the curve.
    /// The reserved tail is not checked (the firmware does not use it).
    pub fn from_amd_bytes(bytes: &[u8]) -> Result<Self, IdBlockError> {
        Self::parse_amd(bytes, "public key")
    }

    fn parse_amd(bytes: &[u8], which: &'static str) -> Result<Self, IdBlockError> {
        if bytes.len() != PUBKEY_LEN {
            return Err(IdBlockError::BadLength { what: which, expected: PUBKEY_LEN, got: bytes.len() });
        }
        let curve = le_u32(&bytes[0..4]);
        if curve != CURVE_P384 {
            return Err(IdBlockError::UnsupportedCurve { which, value: curve });
        }
        let bad = IdBlockError::InvalidPublicKey { which };
        let x = read_be_from_le(&bytes[4..4 + AMD_INT_LEN]).ok_or_else(|| bad.clone())?;
        let y = read_be_from_le(&bytes[4 + AMD_INT_LEN..4 + 2 * AMD_INT_LEN]).ok_or_else(|| bad.clone())?;
        let mut sec1 = [0u8; 1 + 2 * P384_LEN];
        sec1[0] = 0x04;
        sec1[1..1 + P384_LEN].copy_from_slice(&x);
        sec1[1 + P384_LEN..].copy_from_slice(&y);
        VerifyingKey::from_sec1_bytes(&sec1).map(Self).map_err(|_| bad)
    }

    /// SHA-384 of the 0x404-byte AMD structure: the report's `ID_KEY_DIGEST` / `AUTHOR_KEY_DIGEST`.
    pub fn digest(&self) -> Sha384Digest {
        sha384(&self.to_amd_bytes())
    }

    /// The key as a p384 verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Verifies an AMD-format signature (R, S little-endian in 72-byte slots) over `message`
    /// (hashed with SHA-384).
    pub fn verify_amd(&self, message: &[u8], signature: &[u8], which: &'static str) -> Result<(), IdBlockError> {
        let sig = signature_from_amd(signature, which)?;
        self.0.verify(message, &sig).map_err(|_| IdBlockError::SignatureInvalid { which })
    }
}

impl From<VerifyingKey> for SnpPublicKey {
    fn from(k: VerifyingKey) -> Self {
        Self(k)
    }
}

impl fmt::Debug for SnpPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnpPublicKey(digest {})", self.digest())
    }
}

/// SHA-384 of the 0x404-byte AMD public-key structure, which is what the attestation report's
/// `ID_KEY_DIGEST` and `AUTHOR_KEY_DIGEST` carry.
pub fn key_digest(pubkey: &SnpPublicKey) -> Sha384Digest {
    pubkey.digest()
}

fn signature_from_amd(bytes: &[u8], which: &'static str) -> Result<Signature, IdBlockError> {
    let bad = IdBlockError::MalformedSignature { which };
    if bytes.len() != SIGNATURE_LEN {
        return Err(bad);
    }
    let r = read_be_from_le(&bytes[0..AMD_INT_LEN]).ok_or_else(|| bad.clone())?;
    let s = read_be_from_le(&bytes[AMD_INT_LEN..2 * AMD_INT_LEN]).ok_or_else(|| bad.clone())?;
    let mut rs = [0u8; 2 * P384_LEN];
    rs[..P384_LEN].copy_from_slice(&r);
    rs[P384_LEN..].copy_from_slice(&s);
    Signature::from_slice(&rs).map_err(|_| bad)
}

/// A P-384 private key used to sign ID blocks or ID keys.
///
/// Held in p384's signing key, which zeroizes its scalar on drop. `Debug` shows only the digest of
/// the public key.
pub struct SnpSigningKey {
    key: SigningKey,
}

impl SnpSigningKey {
    /// Loads an unencrypted P-384 private key from PEM: SEC1 (`EC PRIVATE KEY`, optionally preceded
    /// by an `EC PARAMETERS` block as `openssl ecparam -genkey` writes) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, IdBlockError> {
        if pem.len() > MAX_PEM_LEN {
            return Err(IdBlockError::PemTooLarge { len: pem.len(), max: MAX_PEM_LEN });
        }
        let block = find_private_key_block(pem)?;
        let (label, der_bytes) =
            der::pem::decode_vec(block.as_bytes()).map_err(|e| IdBlockError::Pem(e.to_string()))?;
        let der_bytes = Zeroizing::new(der_bytes);
        let secret = match label {
            "EC PRIVATE KEY" => secret_from_sec1(&der_bytes, None)?,
            "PRIVATE KEY" => secret_from_pkcs8(&der_bytes)?,
            other => {
                return Err(IdBlockError::UnsupportedPemLabel { label: other.to_owned() });
            }
        };
        Ok(Self::from_secret_key(&secret))
    }

    /// Wraps an existing p384 secret key.
    pub fn from_secret_key(secret: &p384::SecretKey) -> Self {
        Self { key: SigningKey::from(secret) }
    }

    /// The public half.
    pub fn public_key(&self) -> SnpPublicKey {
        SnpPublicKey(*self.key.verifying_key())
    }

    /// ECDSA P-384/SHA-384 signature of `message` in AMD's 0x200-byte format (deterministic,
    /// RFC 6979).
    pub fn sign_amd(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN], IdBlockError> {
        let sig: Signature = self.key.try_sign(message).map_err(|_| IdBlockError::Signing)?;
        let (r, s) = sig.split_bytes();
        let mut out = [0u8; SIGNATURE_LEN];
        write_le_from_be(&mut out[0..AMD_INT_LEN], &r);
        write_le_from_be(&mut out[AMD_INT_LEN..2 * AMD_INT_LEN], &s);
        Ok(out)
    }
}

impl fmt::Debug for SnpSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnpSigningKey {{ public_key_digest: {}, private: <redacted> }}", self.public_key().digest())
    }
}

/// Finds the private-key PEM block, skipping `EC PARAMETERS` blocks.
fn find_private_key_block(pem: &str) -> Result<&str, IdBlockError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let mut rest = pem;
    let mut base = 0usize;
    let mut first_unusable: Option<String> = None;
    while let Some(pos) = rest.find(BEGIN) {
        let start = base + pos;
        let after = &pem[start + BEGIN.len()..];
        let Some(label_len) = after.find(DASHES) else {
            break;
        };
        let label = &after[..label_len];
        // A label never spans lines; anything else is a broken BEGIN line whose "label" could run
        // into the key body, so it is not echoed.
        if label.len() > 64 || !label.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(IdBlockError::Pem("malformed BEGIN line".to_owned()));
        }
        let end_marker = format!("-----END {label}-----");
        let body_start = start + BEGIN.len() + label_len + DASHES.len();
        let Some(end_rel) = pem[body_start..].find(&end_marker) else {
            return Err(IdBlockError::Pem(format!("PEM block \"{label}\" has no END line")));
        };
        let end = body_start + end_rel + end_marker.len();
        let block = &pem[start..end];
        match label {
            "EC PRIVATE KEY" | "PRIVATE KEY" => {
                // Legacy OpenSSL encryption puts RFC 1421 headers inside the block.
                if block.contains("Proc-Type:") || block.contains("DEK-Info:") {
                    return Err(IdBlockError::EncryptedPrivateKey);
                }
                return Ok(block);
            }
            "ENCRYPTED PRIVATE KEY" => return Err(IdBlockError::EncryptedPrivateKey),
            "EC PARAMETERS" => {}
            other => {
                if first_unusable.is_none() {
                    first_unusable = Some(other.to_owned());
                }
            }
        }
        base = end;
        rest = &pem[end..];
    }
    match first_unusable {
        Some(label) => Err(IdBlockError::UnsupportedPemLabel { label }),
        None => Err(IdBlockError::NoPemBlock),
    }
}

/// The fields of an RFC 5915 `ECPrivateKey` this module uses.
struct Sec1Key<'a> {
    private_key: &'a [u8],
    curve: Option<ObjectIdentifier>,
    public_key: Option<&'a [u8]>,
}

fn parse_sec1(der_bytes: &[u8]) -> Result<Sec1Key<'_>, IdBlockError> {
    let mut reader = SliceReader::new(der_bytes).map_err(der_error)?;
    let key = reader
        .sequence(|r| {
            if u8::decode(r)? != 1 {
                return Err(der::Tag::Integer.value_error());
            }
            let private_key = OctetStringRef::decode(r)?.as_bytes();
            let curve = r.context_specific::<ObjectIdentifier>(TagNumber::N0, TagMode::Explicit)?;
            let public_key = match r.context_specific::<BitStringRef<'_>>(TagNumber::N1, TagMode::Explicit)? {
                Some(bits) => Some(bits.as_bytes().ok_or_else(|| der::Tag::BitString.value_error())?),
                None => None,
            };
            Ok(Sec1Key { private_key, curve, public_key })
        })
        .map_err(der_error)?;
    reader.finish(key).map_err(der_error)
}

fn curve_name(oid: &ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "prime256v1 / P-256",
        "1.3.132.0.34" => "secp384r1 / P-384",
        "1.3.132.0.35" => "secp521r1 / P-521",
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.33" => "secp224r1 / P-224",
        "1.2.840.10045.3.1.1" => "prime192v1 / P-192",
        _ => "",
    };
    if name.is_empty() { oid.to_string() } else { format!("{oid} ({name})") }
}

/// Builds a P-384 secret key from SEC1 DER; `outer_curve` is the curve named by a PKCS#8 wrapper.
fn secret_from_sec1(der_bytes: &[u8], outer_curve: Option<ObjectIdentifier>) -> Result<p384::SecretKey, IdBlockError> {
    let key = parse_sec1(der_bytes)?;
    for c in [key.curve, outer_curve].into_iter().flatten() {
        if c != p384::NistP384::OID {
            return Err(IdBlockError::WrongCurve { curve: curve_name(&c) });
        }
    }
    // A SEC1 key that names no curve (RustCrypto writes them that way) is accepted only when it
    // also carries its public key, which must then be a P-384 point matching the scalar below.
    if key.curve.is_none() && outer_curve.is_none() && key.public_key.is_none() {
        return Err(IdBlockError::MissingCurve);
    }
    if key.private_key.len() != P384_LEN {
        return Err(IdBlockError::BadPrivateKeyLength { len: key.private_key.len() });
    }
    let secret = p384::SecretKey::from_slice(key.private_key).map_err(|_| IdBlockError::InvalidScalar)?;
    if let Some(embedded) = key.public_key {
        let embedded = p384::PublicKey::from_sec1_bytes(embedded).map_err(|_| IdBlockError::PublicKeyMismatch)?;
        if embedded != secret.public_key() {
            return Err(IdBlockError::PublicKeyMismatch);
        }
    }
    Ok(secret)
}

fn secret_from_pkcs8(der_bytes: &[u8]) -> Result<p384::SecretKey, IdBlockError> {
    let info = PrivateKeyInfo::try_from(der_bytes).map_err(|e| IdBlockError::Der(e.to_string()))?;
    if info.algorithm.oid != ALGORITHM_OID {
        return Err(IdBlockError::NotEcKey { algorithm: info.algorithm.oid.to_string() });
    }
    let curve = info.algorithm.parameters_oid().map_err(|_| IdBlockError::MissingCurve)?;
    if curve != p384::NistP384::OID {
        return Err(IdBlockError::WrongCurve { curve: curve_name(&curve) });
    }
    secret_from_sec1(info.private_key, Some(curve))
}

/// The ID authentication information structure (4096 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct IdAuth {
    bytes: Box<[u8; ID_AUTH_LEN]>,
}

impl IdAuth {
    /// Signs `block` with `id_key` and, when given, signs the ID public key with `author_key`.
    /// Without an author key `AUTHOR_KEY_ALGO` and the author fields stay zero (as AMD's own
    /// tooling writes them); the VMM must then leave `AUTHOR_KEY_EN` clear.
    pub fn sign(
        block: &IdBlock,
        id_key: &SnpSigningKey,
        author_key: Option<&SnpSigningKey>,
    ) -> Result<Self, IdBlockError> {
        use auth_offsets as o;
        let mut bytes = Box::new([0u8; ID_AUTH_LEN]);
        bytes[o::ID_KEY_ALGO..o::ID_KEY_ALGO + 4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
        let block_sig = id_key.sign_amd(&block.to_bytes())?;
        bytes[o::ID_BLOCK_SIG..o::ID_BLOCK_SIG + SIGNATURE_LEN].copy_from_slice(&block_sig);
        let id_pub = id_key.public_key().to_amd_bytes();
        bytes[o::ID_KEY..o::ID_KEY + PUBKEY_LEN].copy_from_slice(&id_pub);
        if let Some(author) = author_key {
            bytes[o::AUTHOR_KEY_ALGO..o::AUTHOR_KEY_ALGO + 4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
            let key_sig = author.sign_amd(&id_pub)?;
            bytes[o::ID_KEY_SIG..o::ID_KEY_SIG + SIGNATURE_LEN].copy_from_slice(&key_sig);
            bytes[o::AUTHOR_KEY..o::AUTHOR_KEY + PUBKEY_LEN].copy_from_slice(&author.public_key().to_amd_bytes());
        }
        Ok(Self { bytes })
    }

    /// Parses 4096 bytes: `ID_KEY_ALGO` must be 1, `AUTHOR_KEY_ALGO` 0 or 1, and each present
    /// public key a valid P-384 point. Signatures are not checked here (see [`IdAuth::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdBlockError> {
        let arr: &[u8; ID_AUTH_LEN] = bytes.try_into().map_err(|_| IdBlockError::BadLength {
            what: "ID auth",
            expected: ID_AUTH_LEN,
            got: bytes.len(),
        })?;
        let auth = Self { bytes: Box::new(*arr) };
        if auth.id_key_algo() != ALGO_ECDSA_P384_SHA384 {
            return Err(IdBlockError::UnsupportedAlgorithm { field: "ID_KEY_ALGO", value: auth.id_key_algo() });
        }
        match auth.author_key_algo() {
            0 | ALGO_ECDSA_P384_SHA384 => {}
            value => {
                return Err(IdBlockError::UnsupportedAlgorithm { field: "AUTHOR_KEY_ALGO", value });
            }
        }
        auth.id_public_key()?;
        auth.author_public_key()?;
        Ok(auth)
    }

    /// Parses base64 of an ID auth structure (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, IdBlockError> {
        let bytes = base64_decode_exact(s, ID_AUTH_LEN, "ID auth")?;
        Self::from_bytes(&bytes)
    }

    /// The 4096 bytes the firmware reads.
    pub fn as_bytes(&self) -> &[u8; ID_AUTH_LEN] {
        &self.bytes
    }

    /// Base64 (standard alphabet, padded) of the 4096 bytes.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.bytes[..])
    }

    /// `ID_KEY_ALGO`.
    pub fn id_key_algo(&self) -> u32 {
        le_u32(&self.bytes[auth_offsets::ID_KEY_ALGO..])
    }

    /// `AUTHOR_KEY_ALGO` (0 when there is no author key).
    pub fn author_key_algo(&self) -> u32 {
        le_u32(&self.bytes[auth_offsets::AUTHOR_KEY_ALGO..])
    }

    /// Whether the structure carries an author key.
    pub fn has_author_key(&self) -> bool {
        self.author_key_algo() != 0
    }

    /// The raw 0x404-byte ID public-key area.
    pub fn id_key_bytes(&self) -> &[u8] {
        &self.bytes[auth_offsets::ID_KEY..auth_offsets::ID_KEY + PUBKEY_LEN]
    }

    /// The raw 0x404-byte author public-key area (all zero without an author key).
    pub fn author_key_bytes(&self) -> &[u8] {
        &self.bytes[auth_offsets::AUTHOR_KEY..auth_offsets::AUTHOR_KEY + PUBKEY_LEN]
    }

    /// The ID public key.
    pub fn id_public_key(&self) -> Result<SnpPublicKey, IdBlockError> {
        SnpPublicKey::parse_amd(self.id_key_bytes(), "ID public key")
    }

    /// The author public key, if present.
    pub fn author_public_key(&self) -> Result<Option<SnpPublicKey>, IdBlockError> {
        if !self.has_author_key() {
            return Ok(None);
        }
        SnpPublicKey::parse_amd(self.author_key_bytes(), "author public key").map(Some)
    }

    /// Expected `ID_KEY_DIGEST`: SHA-384 of the ID key area exactly as stored.
    pub fn id_key_digest(&self) -> Sha384Digest {
        sha384(self.id_key_bytes())
    }

    /// Expected `AUTHOR_KEY_DIGEST` when the VMM sets `AUTHOR_KEY_EN`; `None` without an author key.
    pub fn author_key_digest(&self) -> Option<Sha384Digest> {
        self.has_author_key().then(|| sha384(self.author_key_bytes()))
    }

    /// Checks the ID block signature against the ID key and, when an author key is present, the
    /// ID key signature against the author key (the checks the firmware makes at launch).
    pub fn verify(&self, block: &IdBlock) -> Result<(), IdBlockError> {
        use auth_offsets as o;
        let id_key = self.id_public_key()?;
        id_key.verify_amd(
            &block.to_bytes(),
            &self.bytes[o::ID_BLOCK_SIG..o::ID_BLOCK_SIG + SIGNATURE_LEN],
            "ID block signature",
        )?;
        if let Some(author) = self.author_public_key()? {
            author.verify_amd(
                self.id_key_bytes(),
                &self.bytes[o::ID_KEY_SIG..o::ID_KEY_SIG + SIGNATURE_LEN],
                "ID key signature",
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for IdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdAuth")
            .field("id_key_algo", &self.id_key_algo())
            .field("author_key_algo", &self.author_key_algo())
            .field("id_key_digest", &self.id_key_digest())
            .field("author_key_digest", &self.author_key_digest())
            .finish_non_exhaustive()
    }
}

/// An ID block together with its signed ID auth structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIdBlock {
    /// The ID block.
    pub block: IdBlock,
    /// Its authentication structure.
    pub auth: IdAuth,
}

impl SignedIdBlock {
    /// Signs `block` (see [`IdAuth::sign`]).
    pub fn sign(
        block: IdBlock,
        id_key: &SnpSigningKey,
        author_key: Option<&SnpSigningKey>,
    ) -> Result<Self, IdBlockError> {
        let auth = IdAuth::sign(&block, id_key, author_key)?;
        Ok(Self { block, auth })
    }

    /// Base64 of the ID block: QEMU `id-block=`, Kata `snp_id_block`.
    pub fn id_block_base64(&self) -> String {
        self.block.to_base64()
    }

    /// Base64 of the ID auth structure: QEMU `id-auth=`, Kata `snp_id_auth`.
    pub fn id_auth_base64(&self) -> String {
        self.auth.to_base64()
    }

    /// Whether the VMM must set `AUTHOR_KEY_EN` (QEMU `author-key-enabled=on`) for the author key
    /// to be used and reported.
    pub fn author_key_enabled(&self) -> bool {
        self.auth.has_author_key()
    }

    /// The `sev-snp-guest` object properties: `id-block=...,id-auth=...,author-key-enabled=on|off`.
    pub fn qemu_properties(&self) -> String {
        format!(
            "id-block={},id-auth={},author-key-enabled={}",
            self.id_block_base64(),
            self.id_auth_base64(),
            if self.author_key_enabled() { "on" } else { "off" }
        )
    }

    /// The values an attestation report of a guest launched with this ID block will carry.
    pub fn summary(&self) -> IdBlockSummary {
        IdBlockSummary {
            launch_digest: self.block.launch_digest,
            family_id: self.block.family_id,
            image_id: self.block.image_id,
            guest_svn: self.block.guest_svn,
            policy: self.block.policy,
            id_key_digest: self.auth.id_key_digest(),
            author_key_digest: self.auth.author_key_digest(),
        }
    }
}

/// Report fields pinned by an ID block, for reference values and display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdBlockSummary {
    /// `MEASUREMENT` the launch must produce.
    pub launch_digest: Sha384Digest,
    /// `FAMILY_ID`.
    pub family_id: [u8; 16],
    /// `IMAGE_ID`.
    pub image_id: [u8; 16],
    /// `GUEST_SVN`.
    pub guest_svn: u32,
    /// `POLICY`.
    pub policy: u64,
    /// `ID_KEY_DIGEST`.
    pub id_key_digest: Sha384Digest,
    /// `AUTHOR_KEY_DIGEST` when the VMM sets `AUTHOR_KEY_EN` (otherwise the report holds zeros).
    pub author_key_digest: Option<Sha384Digest>,
}

impl IdBlockSummary {
    /// A single-line JSON object; digests and IDs as lowercase hex, the policy as a number and as
    /// hex, a missing author key as `null`.
    pub fn to_json(&self) -> String {
        let author = match &self.author_key_digest {
            Some(d) => format!("\"{d}\""),
            None => "null".to_owned(),
        };
        format!(
            concat!(
                "{{\"launch_digest\":\"{}\",\"family_id\":\"{}\",\"image_id\":\"{}\",",
                "\"guest_svn\":{},\"policy\":{},\"policy_hex\":\"{:#x}\",",
                "\"id_key_digest\":\"{}\",\"author_key_digest\":{},\"author_key_enabled\":{}}}"
            ),
            self.launch_digest,
            hex::encode(self.family_id),
            hex::encode(self.image_id),
            self.guest_svn,
            self.policy,
            self.policy,
            self.id_key_digest,
            author,
            self.author_key_digest.is_some(),
        )
    }
}

/// Standard padded base64 (RFC 4648 §4).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Strict standard padded base64 decoding to exactly `expected` bytes.
fn base64_decode_exact(s: &str, expected: usize, what: &'static str) -> Result<Vec<u8>, IdBlockError> {
    use base64::Engine as _;
    let bad = IdBlockError::BadBase64 { what, expected };
    let out = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| bad.clone())?;
    if out.len() != expected {
        return Err(bad);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use p384::pkcs8::{EncodePrivateKey, LineEnding};

    fn test_secret(seed: &str) -> p384::SecretKey {
        p384::SecretKey::from_slice(sha384(seed.as_bytes()).as_bytes()).unwrap()
    }

    fn test_key(seed: &str) -> SnpSigningKey {
        SnpSigningKey::from_secret_key(&test_secret(seed))
    }

    fn sample_block() -> IdBlock {
        let mut b = IdBlock::new(sha384(b"launch"), DEFAULT_POLICY);
        b.family_id = [0x11; 16];
        b.image_id = [0x22; 16];
        b.guest_svn = 7;
        b
    }

    const P256_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIM+V+w0o2Yan+EZ/cQPAqV36pyWtsnysDAmVNjzJVok4oAoGCCqGSM49
AwEHoUQDQgAERUnWoKfeFI3jAYvU62rvwW9VJa8uwIGpKgQ7XGGM3hMbquU+SN1l
/0CQrroswUeI9OtQqkGSBRk/5U/OQee8Eg==
-----END EC PRIVATE KEY-----
";

    const P256_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgz5X7DSjZhqf4Rn9x
A8CpXfqnJa2yfKwMCZU2PMlWiTihRANCAARFSdagp94UjeMBi9Trau/Bb1Ulry7A
gakqBDtcYYzeExuq5T5I3WX/QJCuuizBR4j061CqQZIFGT/lT85B57wS
-----END PRIVATE KEY-----
";

    const ED25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIC7rCZqcDuS/StHpirChlMCPARLTCShRCLUWmM/yQmhd
-----END PRIVATE KEY-----
";

    #[test]
    fn id_block_layout() {
        let b = sample_block();
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 0x60);
        assert_eq!(&bytes[0..0x30], sha384(b"launch").as_bytes());
        assert_eq!(&bytes[0x30..0x40], &[0x11; 16]);
        assert_eq!(&bytes[0x40..0x50], &[0x22; 16]);
        assert_eq!(&bytes[0x50..0x54], &[1, 0, 0, 0]);
        assert_eq!(&bytes[0x54..0x58], &[7, 0, 0, 0]);
        assert_eq!(&bytes[0x58..0x60], &[0, 0, 3, 0, 0, 0, 0, 0]);
        assert_eq!(IdBlock::from_bytes(&bytes), Ok(b));
        assert_eq!(IdBlock::from_base64(&b.to_base64()), Ok(b));
        let mut bad = bytes;
        bad[0x50] = 2;
        assert_eq!(IdBlock::from_bytes(&bad), Err(IdBlockError::UnsupportedIdBlockVersion { found: 2 }));
        assert!(matches!(IdBlock::from_bytes(&bytes[..95]), Err(IdBlockError::BadLength { got: 95, .. })));
    }

    #[test]
    fn id_auth_layout_and_signatures() {
        let id = test_key("id");
        let author = test_key("author");
        let block = sample_block();
        let auth = IdAuth::sign(&block, &id, Some(&author)).unwrap();
        let b = auth.as_bytes();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[0..4], &[1, 0, 0, 0]);
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert!(b[8..0x40].iter().all(|&x| x == 0));
        assert_eq!(&b[0x240..0x244], &[2, 0, 0, 0]);
        assert_eq!(&b[0x880..0x884], &[2, 0, 0, 0]);
        assert!(b[0x644..0x680].iter().all(|&x| x == 0));
        assert!(b[0xC84..].iter().all(|&x| x == 0));
        // Reserved tails of the signature and key areas.
        assert!(b[0x40 + 144..0x240].iter().all(|&x| x == 0));
        assert!(b[0x240 + 148..0x644].iter().all(|&x| x == 0));
        assert_eq!(&b[0x240..0x644], &id.public_key().to_amd_bytes()[..]);
        assert_eq!(&b[0x880..0xC84], &author.public_key().to_amd_bytes()[..]);

        // Independent check with p384 directly: Qx at 0x244 little-endian.
        let vk = id.public_key();
        let point = vk.verifying_key().to_encoded_point(false);
        let mut qx_le: Vec<u8> = point.x().unwrap().to_vec();
        qx_le.reverse();
        assert_eq!(&b[0x244..0x244 + 48], &qx_le[..]);
        assert!(b[0x244 + 48..0x244 + 72].iter().all(|&x| x == 0));

        // Block signature verifies with p384 over the 96 block bytes.
        let mut r = b[0x40..0x40 + 48].to_vec();
        r.reverse();
        let mut s = b[0x40 + 72..0x40 + 72 + 48].to_vec();
        s.reverse();
        let sig = Signature::from_slice(&[r, s].concat()).unwrap();
        vk.verifying_key().verify(&block.to_bytes(), &sig).unwrap();

        auth.verify(&block).unwrap();
        assert_eq!(auth.id_key_digest(), sha384(&id.public_key().to_amd_bytes()));
        assert_eq!(auth.id_key_digest(), key_digest(&id.public_key()));
        assert_eq!(auth.author_key_digest(), Some(author.public_key().digest()));

        // Round trips through bytes and base64.
        let back = IdAuth::from_base64(&auth.to_base64()).unwrap();
        assert_eq!(back, auth);

        // Tampering is caught.
        let mut other = block;
        other.guest_svn = 8;
        assert_eq!(auth.verify(&other), Err(IdBlockError::SignatureInvalid { which: "ID block signature" }));
        let mut raw = *auth.as_bytes();
        raw[0x680] ^= 1;
        let tampered = IdAuth::from_bytes(&raw).unwrap();
        assert_eq!(tampered.verify(&block), Err(IdBlockError::SignatureInvalid { which: "ID key signature" }));
    }

    #[test]
    fn id_key_only() {
        let id = test_key("id-only");
        let signed = SignedIdBlock::sign(sample_block(), &id, None).unwrap();
        let b = signed.auth.as_bytes();
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert!(b[0x680..].iter().all(|&x| x == 0));
        assert!(!signed.author_key_enabled());
        signed.auth.verify(&signed.block).unwrap();
        let summary = signed.summary();
        assert_eq!(summary.author_key_digest, None);
        assert_eq!(summary.id_key_digest, id.public_key().digest());
        let json = summary.to_json();
        assert!(json.contains("\"author_key_digest\":null"));
        assert!(json.contains("\"policy\":196608"));
        assert!(json.contains("\"policy_hex\":\"0x30000\""));
        assert!(signed.qemu_properties().ends_with(",author-key-enabled=off"));
    }

    #[test]
    fn deterministic_signatures() {
        let id = test_key("id");
        let a = IdAuth::sign(&sample_block(), &id, None).unwrap();
        let b = IdAuth::sign(&sample_block(), &id, None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn loads_sec1_and_pkcs8_pem() {
        let secret = test_secret("pem");
        let expected = SnpSigningKey::from_secret_key(&secret).public_key();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let k = SnpSigningKey::from_pem(&sec1).unwrap();
        assert_eq!(k.public_key(), expected);
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::CRLF).unwrap();
        let k = SnpSigningKey::from_pem(&pkcs8).unwrap();
        assert_eq!(k.public_key(), expected);
        // `openssl ecparam -genkey` without -noout writes the parameters first.
        let with_params =
            format!("-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n{}", &*sec1);
        let k = SnpSigningKey::from_pem(&with_params).unwrap();
        assert_eq!(k.public_key(), expected);
        // Debug never shows the scalar.
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode(secret.to_bytes())));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn rejects_wrong_curve_and_other_keys() {
        assert_eq!(
            SnpSigningKey::from_pem(P256_SEC1).err(),
            Some(IdBlockError::WrongCurve { curve: "1.2.840.10045.3.1.7 (prime256v1 / P-256)".into() })
        );
        assert!(matches!(SnpSigningKey::from_pem(P256_PKCS8), Err(IdBlockError::WrongCurve { .. })));
        assert_eq!(
            SnpSigningKey::from_pem(ED25519_PKCS8).err(),
            Some(IdBlockError::NotEcKey { algorithm: "1.3.101.112".into() })
        );
        let public = "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            SnpSigningKey::from_pem(public).err(),
            Some(IdBlockError::UnsupportedPemLabel { label: "PUBLIC KEY".into() })
        );
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(SnpSigningKey::from_pem(encrypted).err(), Some(IdBlockError::EncryptedPrivateKey));
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMAA=\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(SnpSigningKey::from_pem(legacy).err(), Some(IdBlockError::EncryptedPrivateKey));
        assert_eq!(SnpSigningKey::from_pem("just text").err(), Some(IdBlockError::NoPemBlock));
    }

    #[test]
    fn rejects_malformed_pem() {
        let bad_b64 = "-----BEGIN EC PRIVATE KEY-----\n!!!!\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(SnpSigningKey::from_pem(bad_b64), Err(IdBlockError::Pem(_))));
        // A BEGIN line missing its closing dashes must not echo the body in the error.
        let broken = "-----BEGIN EC PRIVATE KEY\nMHcCAQEEIM+V+w0o2Yan\n-----END EC PRIVATE KEY-----\n";
        let err = SnpSigningKey::from_pem(broken).err().unwrap();
        assert!(!err.to_string().contains("MHcC"), "{err}");
        let no_end = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n";
        assert!(matches!(SnpSigningKey::from_pem(no_end), Err(IdBlockError::Pem(_))));
        // Valid base64, truncated DER.
        let secret = test_secret("trunc");
        let der = secret.to_sec1_der().unwrap();
        let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &der[..40]).unwrap();
        assert!(matches!(SnpSigningKey::from_pem(&pem), Err(IdBlockError::Der(_))));
        let huge = "A".repeat(MAX_PEM_LEN + 1);
        assert!(matches!(SnpSigningKey::from_pem(&huge), Err(IdBlockError::PemTooLarge { .. })));
    }

    #[test]
    fn rejects_sec1_without_curve_or_with_short_scalar() {
        // ECPrivateKey { version 1, privateKey 48 bytes } and nothing else: curve unknowable.
        let mut no_curve = vec![0x30, 0x35, 0x02, 0x01, 0x01, 0x04, 0x30];
        no_curve.extend_from_slice(&test_secret("nc").to_bytes()[..]);
        let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &no_curve).unwrap();
        assert_eq!(SnpSigningKey::from_pem(&pem).err(), Some(IdBlockError::MissingCurve));
        // Names secp384r1 but holds a 32-byte scalar.
        let mut short = vec![0x30, 0x2e, 0x02, 0x01, 0x01, 0x04, 0x20];
        short.extend_from_slice(&[0x42; 32]);
        short.extend_from_slice(&[0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]);
        let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &short).unwrap();
        assert_eq!(SnpSigningKey::from_pem(&pem).err(), Some(IdBlockError::BadPrivateKeyLength { len: 32 }));
        // A zero scalar of the right length.
        let mut zero = vec![0x30, 0x3e, 0x02, 0x01, 0x01, 0x04, 0x30];
        zero.extend_from_slice(&[0; 48]);
        zero.extend_from_slice(&[0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]);
        let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &zero).unwrap();
        assert_eq!(SnpSigningKey::from_pem(&pem).err(), Some(IdBlockError::InvalidScalar));
    }

    #[test]
    fn rejects_mismatched_public_key() {
        let a = test_secret("a");
        let b = test_secret("b");
        let der_a = a.to_sec1_der().unwrap();
        let der_b = b.to_sec1_der().unwrap();
        // Same structure and length: swap in b's public key (the trailing 97 bytes).
        let mut mixed = der_a.to_vec();
        let n = mixed.len();
        mixed[n - 97..].copy_from_slice(&der_b[der_b.len() - 97..]);
        let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &mixed).unwrap();
        assert_eq!(SnpSigningKey::from_pem(&pem).err(), Some(IdBlockError::PublicKeyMismatch));
    }

    #[test]
    fn rejects_bad_public_key_areas() {
        let id = test_key("pk");
        let mut amd = id.public_key().to_amd_bytes();
        assert_eq!(SnpPublicKey::from_amd_bytes(&amd), Ok(id.public_key()));
        amd[0] = 3;
        assert!(matches!(SnpPublicKey::from_amd_bytes(&amd), Err(IdBlockError::UnsupportedCurve { value: 3, .. })));
        amd[0] = 2;
        amd[10] ^= 1; // no longer on the curve
        assert!(matches!(SnpPublicKey::from_amd_bytes(&amd), Err(IdBlockError::InvalidPublicKey { .. })));
        let mut auth = *IdAuth::sign(&sample_block(), &id, None).unwrap().as_bytes();
        auth[0] = 2;
        assert!(matches!(IdAuth::from_bytes(&auth), Err(IdBlockError::UnsupportedAlgorithm { value: 2, .. })));
    }

    #[test]
    fn base64_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode_exact(enc, plain.len(), "t").unwrap(), plain.as_bytes());
        }
        assert!(base64_decode_exact("Zm9v", 2, "t").is_err());
        assert!(base64_decode_exact("Zg=a", 1, "t").is_err());
        assert!(base64_decode_exact("Z===", 1, "t").is_err());
        assert!(base64_decode_exact("Zm9*", 3, "t").is_err());
    }
}
