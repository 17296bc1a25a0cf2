//! The emulated IBM Secure Execution platform: an IBM-shaped host-key chain (root CA → *IBM Z
//! Host Key Signing Service* key → host-key document with a P-521 host key), an SE image header
//! with a key slot for that host, and an Ultravisor that answers `UVIO_IOCTL_ATT`.
//!
//! **Emulated evidence proves nothing about hardware**: whoever holds the host private key can
//! answer any attestation request for any image.
//!
//! The Ultravisor here is written from the s390-tools layouts independently of
//! `cloister-verifier`'s SE code, so that a request built by the verifier and answered here tests
//! both: it finds its key slot by PHKH, derives the shared secret (ECDH P-521 of the host key and
//! the request's customer key), unwraps the request protection key (AES-256-GCM under
//! `SHA-256(Z ‖ 00 00 00 01)`, zero IV), opens the ARCB (AES-256-GCM, AAD = the plaintext part),
//! and returns HMAC-SHA512 under the measurement key over header tags ‖ CUID ‖ user-data length
//! ‖ 0 ‖ additional length ‖ user data ‖ nonce ‖ additional data.

use std::path::Path;

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::AsBigEndian as _;
use cloister_evidence::se::{
    AttestationFlags, BOOT_HDR_TAGS_LEN, BootHdrTags, ConfigUid, MEASUREMENT_KEY_LEN, NONCE_LEN, PHKH_LEN, SeArcb,
    SeAttestationFlag,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use ring::{aead, digest, hmac};

use crate::EmulateError;
use crate::der::{self, oids};

/// Organisation and unit of IBM's host key signing key, as the verifier requires them.
const IBM_O: &str = "International Business Machines Corporation";
const IBM_OU: &str = "IBM Z Host Key Signing Service";
const P521_POINT_LEN: usize = 133;
const P521_COORD_LEN: usize = 66;
const COORD_SLOT: usize = 80;
const SECP521R1: &[u64] = &[1, 3, 132, 0, 35];
const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10_045, 4, 3, 3];
const HEAD_LEN: usize = 0x1A0;
const MIN_ENCRYPTED_AREA_LEN: usize = 32 + 64 + 16 + 8 + 4 + 4;

const FILES: [&str; 7] =
    ["se-root.crt", "se-signing.crt", "se-hkd.crt", "se-host.key", "se-hdr.bin", "se-cuid", "se-signing.key"];

fn crypto(e: impl std::fmt::Debug) -> EmulateError {
    EmulateError::Crypto(format!("{e:?}"))
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], EmulateError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(crypto)?;
    Ok(out)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ibm_name(cn: &str, ou: Option<&str>) -> Vec<u8> {
    let mut attrs = vec![(oids::C, der::printable("US")), (oids::O, der::utf8(IBM_O))];
    if let Some(ou) = ou {
        attrs.push((oids::OU, der::utf8(ou)));
    }
    attrs.push((oids::L, der::utf8("Emulated")));
    attrs.push((oids::CN, der::utf8(cn)));
    der::name(&attrs)
}

struct Issue<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    spki: Vec<u8>,
    ca: bool,
    lifetime_days: i64,
}

fn issue(rng: &SystemRandom, spec: &Issue<'_>, key: &EcdsaKeyPair) -> Result<Vec<u8>, EmulateError> {
    let alg = der::seq(&[&der::oid(ECDSA_SHA384)]);
    let mut serial = random::<16>(rng)?;
    serial[0] = (serial[0] & 0x7f) | 1;
    let start = now() - 3600;
    let mut exts = Vec::new();
    if spec.ca {
        exts.push(der::extension(oids::BASIC_CONSTRAINTS, true, &der::seq(&[&der::boolean(true)])));
        // keyCertSign | cRLSign
        exts.push(der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[1, 0x06])));
    } else {
        // digitalSignature
        exts.push(der::extension(oids::KEY_USAGE, true, &der::tlv(0x03, &[7, 0x80])));
    }
    let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint(2)),
        &der::uint_bytes(&serial),
        &alg,
        spec.issuer,
        &der::seq(&[&der::time(start), &der::time(start + spec.lifetime_days * 86_400)]),
        spec.subject,
        &spec.spki,
        &der::explicit(3, &der::seq(&ext_refs)),
    ]);
    let sig = key.sign(rng, &tbs).map_err(crypto)?;
    Ok(der::seq(&[&tbs, &alg, &der::bit_string(sig.as_ref())]))
}

fn p384_spki(key: &EcdsaKeyPair) -> Vec<u8> {
    der::seq(&[
        &der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(oids::SECP384R1)]),
        &der::bit_string(key.public_key().as_ref()),
    ])
}

fn p521_spki(point: &[u8]) -> Vec<u8> {
    der::seq(&[&der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(SECP521R1)]), &der::bit_string(point)])
}

/// X‖Y of an uncompressed P-521 point, each left-padded to 80 bytes.
fn coords(point: &[u8; P521_POINT_LEN]) -> [u8; 2 * COORD_SLOT] {
    let mut out = [0u8; 2 * COORD_SLOT];
    let pad = COORD_SLOT - P521_COORD_LEN;
    out[pad..COORD_SLOT].copy_from_slice(&point[1..=P521_COORD_LEN]);
    out[COORD_SLOT + pad..].copy_from_slice(&point[1 + P521_COORD_LEN..]);
    out
}

/// Builds a version-1 SE header whose single key slot is for `phkh` (the slot's wrapped key and
/// the encrypted area are random: nothing here boots).
fn build_header(rng: &SystemRandom, phkh: &[u8; PHKH_LEN]) -> Result<Vec<u8>, EmulateError> {
    let sea = MIN_ENCRYPTED_AREA_LEN;
    let size = HEAD_LEN + 80 + sea + 16;
    let mut h = Vec::with_capacity(size);
    h.extend_from_slice(b"IBMSecEx");
    h.extend_from_slice(&0x100u32.to_be_bytes());
    h.extend_from_slice(&u32::try_from(size).map_err(crypto)?.to_be_bytes());
    h.extend_from_slice(&random::<12>(rng)?);
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&1u64.to_be_bytes()); // key slots
    h.extend_from_slice(&(sea as u64).to_be_bytes());
    h.extend_from_slice(&256u64.to_be_bytes()); // encrypted pages
    h.extend_from_slice(&0u64.to_be_bytes()); // plaintext control flags
    h.extend_from_slice(&[0; 14]);
    h.extend_from_slice(&random::<66>(rng)?);
    h.extend_from_slice(&[0; 14]);
    h.extend_from_slice(&random::<66>(rng)?);
    for _ in 0..3 {
        h.extend_from_slice(&random::<64>(rng)?); // PLD, ALD, TLD
    }
    h.extend_from_slice(phkh);
    h.extend_from_slice(&random::<32>(rng)?);
    h.extend_from_slice(&random::<16>(rng)?);
    let mut area = vec![0u8; sea];
    rng.fill(&mut area).map_err(crypto)?;
    h.extend_from_slice(&area);
    h.extend_from_slice(&random::<16>(rng)?); // header tag
    Ok(h)
}

/// What the emulated Ultravisor returns for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UvResponse {
    /// HMAC-SHA512.
    pub measurement: Vec<u8>,
    /// Additional data, as the request's flags asked.
    pub additional_data: Vec<u8>,
    /// The configuration unique ID.
    pub config_uid: ConfigUid,
}

/// An emulated IBM Z machine with one host key, running one SE image.
pub struct EmulatedSe {
    root: Vec<u8>,
    signing: Vec<u8>,
    signing_pkcs8: Vec<u8>,
    hkd: Vec<u8>,
    host_key: agreement::PrivateKey,
    phkh: [u8; PHKH_LEN],
    header: Vec<u8>,
    cuid: ConfigUid,
}

impl std::fmt::Debug for EmulatedSe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedSe").field("phkh", &hex::encode(self.phkh)).finish_non_exhaustive()
    }
}

impl EmulatedSe {
    /// A fresh platform: root, signing key, host key, HKD, image header, CUID.
    pub fn generate() -> Result<Self, EmulateError> {
        tracing::warn!("EMULATED IBM SE platform generated: its evidence proves nothing about hardware");
        let rng = SystemRandom::new();
        let root_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).map_err(crypto)?;
        let root_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, root_pkcs8.as_ref(), &rng).map_err(crypto)?;
        let root_name = ibm_name("Cloister EMULATED IBM Z root CA", None);
        let root = issue(
            &rng,
            &Issue {
                issuer: &root_name,
                subject: &root_name,
                spki: p384_spki(&root_key),
                ca: true,
                lifetime_days: 3650,
            },
            &root_key,
        )?;
        let signing_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).map_err(crypto)?.as_ref().to_vec();
        let signing_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &signing_pkcs8, &rng).map_err(crypto)?;
        let signing_name = ibm_name(IBM_O, Some(IBM_OU));
        let signing = issue(
            &rng,
            &Issue {
                issuer: &root_name,
                subject: &signing_name,
                spki: p384_spki(&signing_key),
                ca: false,
                lifetime_days: 1825,
            },
            &root_key,
        )?;
        let host_key = agreement::PrivateKey::generate(&agreement::ECDH_P521).map_err(crypto)?;
        let mut platform = Self {
            root,
            signing,
            signing_pkcs8,
            hkd: Vec::new(),
            host_key,
            phkh: [0; PHKH_LEN],
            header: Vec::new(),
            cuid: random::<16>(&rng)?,
        };
        platform.hkd = platform.issue_hkd(&rng)?;
        platform.header = build_header(&rng, &platform.phkh)?;
        Ok(platform)
    }

    fn host_point(&self) -> Result<[u8; P521_POINT_LEN], EmulateError> {
        let public = self.host_key.compute_public_key().map_err(crypto)?;
        public.as_ref().try_into().map_err(crypto)
    }

    fn issue_hkd(&mut self, rng: &SystemRandom) -> Result<Vec<u8>, EmulateError> {
        let point = self.host_point()?;
        let d = digest::digest(&digest::SHA256, &coords(&point));
        self.phkh.copy_from_slice(d.as_ref());
        let signing_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &self.signing_pkcs8, rng).map_err(crypto)?;
        let subject = ibm_name("Cloister EMULATED IBM Z host key", Some("IBM Z Host Key"));
        issue(
            rng,
            &Issue {
                issuer: &ibm_name(IBM_O, Some(IBM_OU)),
                subject: &subject,
                spki: p521_spki(&point),
                ca: false,
                lifetime_days: 1825,
            },
            &signing_key,
        )
    }

    /// Whether `dir` holds a saved platform.
    pub fn exists(dir: &Path) -> bool {
        FILES.iter().all(|f| dir.join(f).exists())
    }

    /// SHA-256 of the root (hex): the pin a key broker's `emulated_roots` entry names.
    pub fn root_sha256_hex(&self) -> String {
        hex::encode(digest::digest(&digest::SHA256, &self.root))
    }

    /// The emulated root (DER): configure it as an *emulated* SE root.
    pub fn root_der(&self) -> &[u8] {
        &self.root
    }

    /// The emulated host key signing key certificate (DER).
    pub fn signing_der(&self) -> &[u8] {
        &self.signing
    }

    /// The host-key document (DER).
    pub fn hkd_der(&self) -> &[u8] {
        &self.hkd
    }

    /// The host key's PHKH.
    pub fn phkh(&self) -> [u8; PHKH_LEN] {
        self.phkh
    }

    /// The SE header (`hdr.bin`) of the image this machine runs.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// PLD‖ALD‖TLD‖tag of that image.
    pub fn boot_hdr_tags(&self) -> BootHdrTags {
        let mut b = [0u8; BOOT_HDR_TAGS_LEN];
        b[..192].copy_from_slice(&self.header[HEAD_LEN - 192..HEAD_LEN]);
        b[192..].copy_from_slice(&self.header[self.header.len() - 16..]);
        BootHdrTags::from_array(&b)
    }

    /// The configuration unique ID.
    pub fn cuid(&self) -> ConfigUid {
        self.cuid
    }

    /// Writes the platform to `dir` (the host private key and signing key in the clear:
    /// **test material**).
    pub fn save(&self, dir: &Path) -> Result<(), EmulateError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| EmulateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let scalar: aws_lc_rs::encoding::EcPrivateKeyBin<'_> = self.host_key.as_be_bytes().map_err(crypto)?;
        let files: [(&str, Vec<u8>); 7] = [
            (FILES[0], der::pem_encode("CERTIFICATE", &self.root).into_bytes()),
            (FILES[1], der::pem_encode("CERTIFICATE", &self.signing).into_bytes()),
            (FILES[2], der::pem_encode("CERTIFICATE", &self.hkd).into_bytes()),
            (FILES[3], hex::encode(scalar.as_ref()).into_bytes()),
            (FILES[4], self.header.clone()),
            (FILES[5], hex::encode(self.cuid).into_bytes()),
            (FILES[6], hex::encode(&self.signing_pkcs8).into_bytes()),
        ];
        for (name, bytes) in files {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(io(&p))?;
        }
        Ok(())
    }

    /// Reads a platform [`EmulatedSe::save`] wrote.
    pub fn load(dir: &Path) -> Result<Self, EmulateError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|source| EmulateError::Io { path: p.display().to_string(), source })
        };
        let bad = |name: &str, reason: &str| EmulateError::InvalidState {
            path: dir.join(name).display().to_string(),
            reason: reason.to_owned(),
        };
        let cert = |name: &str| -> Result<Vec<u8>, EmulateError> {
            let text = String::from_utf8(read(name)?).map_err(|_| bad(name, "not PEM"))?;
            der::pem_decode_all(&text, "CERTIFICATE")?.into_iter().next().ok_or_else(|| bad(name, "no certificate"))
        };
        let hexfile = |name: &str| -> Result<Vec<u8>, EmulateError> {
            hex::decode(String::from_utf8_lossy(&read(name)?).trim()).map_err(|_| bad(name, "not hex"))
        };
        let scalar = hexfile(FILES[3])?;
        let host_key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P521, &scalar)
            .map_err(|_| bad(FILES[3], "not a P-521 private key"))?;
        let cuid: ConfigUid = hexfile(FILES[5])?.try_into().map_err(|_| bad(FILES[5], "not 16 bytes"))?;
        let mut platform = Self {
            root: cert(FILES[0])?,
            signing: cert(FILES[1])?,
            signing_pkcs8: hexfile(FILES[6])?,
            hkd: cert(FILES[2])?,
            host_key,
            phkh: [0; PHKH_LEN],
            header: read(FILES[4])?,
            cuid,
        };
        let point = platform.host_point()?;
        platform.phkh.copy_from_slice(digest::digest(&digest::SHA256, &coords(&point)).as_ref());
        if platform.header.len() < HEAD_LEN + 80 + 16 || platform.header[HEAD_LEN..HEAD_LEN + 32] != platform.phkh {
            return Err(bad(FILES[4], "the header has no key slot for this host key"));
        }
        Ok(platform)
    }

    /// `UVIO_IOCTL_ATT`: answers `arcb` with `user_data`, into buffers of the given sizes.
    pub fn attest(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        measurement_len: u32,
        additional_len: u32,
    ) -> Result<UvResponse, EmulateError> {
        let invalid = |m: &str| EmulateError::InvalidRequest(format!("Ultravisor: {m}"));
        if user_data.len() > 256 {
            return Err(invalid("user data longer than 256 bytes"));
        }
        let req = SeArcb::from_bytes(arcb).map_err(|e| invalid(&e.to_string()))?;
        let flags: AttestationFlags = req.flags;
        if flags.unknown_bits() != 0 {
            return Err(invalid("unknown attestation flags"));
        }
        if measurement_len != 64 {
            return Err(invalid("measurement buffer is not 64 bytes (HMAC-SHA512)"));
        }
        if (additional_len as usize) < flags.expected_additional_len() {
            return Err(invalid("additional-data buffer too small for the requested items"));
        }
        let slot =
            req.key_slots.iter().find(|s| s.phkh == self.phkh).ok_or_else(|| invalid("no key slot for this host"))?;

        // Shared secret with the request's customer key, then the slot key.
        let pad = COORD_SLOT - P521_COORD_LEN;
        let c = &req.customer_public_key;
        let mut point = [0u8; P521_POINT_LEN];
        point[0] = 4;
        point[1..=P521_COORD_LEN].copy_from_slice(&c[pad..COORD_SLOT]);
        point[1 + P521_COORD_LEN..].copy_from_slice(&c[COORD_SLOT + pad..]);
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P521, &point[..]);
        let slot_key = agreement::agree(&self.host_key, peer, invalid("bad customer key"), |z| {
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(z);
            ctx.update(&[0, 0, 0, 1]);
            Ok(ctx.finish())
        })?;
        let open = |key: &[u8], nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>| -> Result<usize, EmulateError> {
            let k = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(crypto)?);
            let n = k
                .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), buf)
                .map_err(|_| invalid("authentication failed"))?
                .len();
            Ok(n)
        };
        let mut arpk = slot.wrapped_key.to_vec();
        arpk.extend_from_slice(&slot.tag);
        let n = open(slot_key.as_ref(), [0; 12], &[], &mut arpk)?;
        arpk.truncate(n);
        let mut plain = req.encrypted.clone();
        plain.extend_from_slice(&req.tag);
        let n = open(&arpk, req.iv, &req.authenticated_bytes(), &mut plain)?;
        plain.truncate(n);
        arpk.fill(0);
        let result = (|| {
            let want = MEASUREMENT_KEY_LEN + if flags.contains(SeAttestationFlag::Nonce) { NONCE_LEN } else { 0 };
            if plain.len() != want {
                return Err(invalid("encrypted area does not match the flags"));
            }
            let mut additional = Vec::new();
            if flags.contains(SeAttestationFlag::ImagePhkh) {
                additional.extend_from_slice(&self.header[HEAD_LEN..HEAD_LEN + PHKH_LEN]);
            }
            if flags.contains(SeAttestationFlag::AttestationPhkh) {
                additional.extend_from_slice(&slot.phkh);
            }
            if flags.contains(SeAttestationFlag::SecretStoreHash) || flags.contains(SeAttestationFlag::FirmwareState) {
                return Err(invalid("secret-store hash and firmware state are not emulated"));
            }
            let key = hmac::Key::new(hmac::HMAC_SHA512, &plain[..MEASUREMENT_KEY_LEN]);
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(&self.boot_hdr_tags().to_bytes());
            ctx.update(&self.cuid);
            ctx.update(&u16::try_from(user_data.len()).map_err(crypto)?.to_be_bytes());
            ctx.update(&[0, 0]);
            ctx.update(&u32::try_from(additional.len()).map_err(crypto)?.to_be_bytes());
            ctx.update(user_data);
            ctx.update(&plain[MEASUREMENT_KEY_LEN..]);
            ctx.update(&additional);
            Ok(UvResponse {
                measurement: ctx.sign().as_ref().to_vec(),
                additional_data: additional,
                config_uid: self.cuid,
            })
        })();
        plain.fill(0);
        result
    }
}
