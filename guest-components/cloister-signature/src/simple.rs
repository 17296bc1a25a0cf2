//! Simple signing: OpenPGP keyrings and signed messages (what `gpg --sign` and
//! `skopeo standalone-sign` produce), verified with rpgp.
//!
//! A keyring is one or more transferable public keys, binary or ASCII-armored. A key counts only
//! if it is self-certified and neither revoked nor expired; signing subkeys count if their
//! binding (with the embedded back-signature) verifies. A signature blob must be an OpenPGP
//! message, optionally compressed, carrying literal data and exactly one signature (as
//! containers/image requires), made by a usable key, not expired.

use std::io::Read as _;
use std::time::SystemTime;

use pgp::composed::{Deserializable as _, Message, SignedPublicKey};
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails as _, KeyId, Tag, Timestamp, VerifyingKey};

use crate::payload::MAX_PAYLOAD_SIZE;

/// Largest signature blob accepted (containers/image's limit for signature bodies).
pub const MAX_SIGNATURE_SIZE: usize = 4 << 20;

/// Most transferable keys read from one keyring blob.
const MAX_KEYS: usize = 1024;

/// Most compression layers unwrapped in a message.
const MAX_COMPRESSION_DEPTH: usize = 2;

#[derive(Debug, Clone)]
enum KeyPacket {
    Primary(PublicKey),
    Sub(PublicSubkey),
}

impl KeyPacket {
    fn verifying(&self) -> &dyn VerifyingKey {
        match self {
            Self::Primary(k) => k,
            Self::Sub(k) => k,
        }
    }
}

#[derive(Debug, Clone)]
struct UsableKey {
    fingerprint: Fingerprint,
    key_id: KeyId,
    primary: Fingerprint,
    created: Timestamp,
    packet: KeyPacket,
}

#[derive(Debug, Clone)]
struct UnusableKey {
    fingerprint: Fingerprint,
    key_id: KeyId,
    reason: String,
}

/// Trusted OpenPGP signing keys.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<UsableKey>,
    unusable: Vec<UnusableKey>,
}

/// A message whose signature verified with a keyring key; the payload is still untrusted JSON
/// until its claims are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMessage {
    /// The literal data (the signature payload).
    pub payload: Vec<u8>,
    /// Fingerprint (uppercase hex) of the key that made the signature (a subkey or the primary).
    pub signer: String,
    /// Fingerprint (uppercase hex) of the primary key it belongs to.
    pub primary: String,
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn fpr(f: &Fingerprint) -> String {
    hex_upper(f.as_bytes())
}

fn is_armored(data: &[u8]) -> bool {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    data[start..].starts_with(b"-----BEGIN PGP ")
}

fn secs(t: Timestamp) -> u64 {
    u64::from(t.as_secs())
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `Some(expiry seconds since the epoch)` if `sig` sets a non-zero key expiration for a key
/// created at `created`.
fn key_expiry(sig: &Signature, created: Timestamp) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|d| *d != 0)
        .map(|d| secs(created).saturating_add(d))
}

fn newest<'a>(best: Option<&'a Signature>, s: &'a Signature) -> Option<&'a Signature> {
    match best {
        Some(b) if b.created() >= s.created() => Some(b),
        _ => Some(s),
    }
}

impl Keyring {
    /// Parses one keyring blob (binary, or one or more ASCII-armored public key blocks). Keys that
    /// cannot be used are remembered (to explain rejections) but never verify anything. Errors if
    /// nothing parses at all.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        Self::parse_at(data, SystemTime::now())
    }

    /// [`Keyring::parse`] with an explicit clock for expiry checks.
    pub fn parse_at(data: &[u8], now: SystemTime) -> Result<Self, String> {
        let mut parsed: Vec<SignedPublicKey> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut take = |items: pgp::errors::Result<Vec<pgp::errors::Result<SignedPublicKey>>>| match items {
            Ok(items) => {
                for item in items {
                    match item {
                        Ok(k) => parsed.push(k),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        };
        if is_armored(data) {
            let text = std::str::from_utf8(data).map_err(|_| "armored keyring is not UTF-8".to_string())?;
            let marker = "-----BEGIN PGP ";
            let starts: Vec<usize> = text.match_indices(marker).map(|(i, _)| i).collect();
            for (n, &s) in starts.iter().enumerate() {
                let end = starts.get(n + 1).copied().unwrap_or(text.len());
                take(
                    SignedPublicKey::from_armor_many(&text.as_bytes()[s..end])
                        .map(|(it, _)| it.take(MAX_KEYS).collect()),
                );
            }
        } else {
            take(SignedPublicKey::from_bytes_many(data).map(|it| it.take(MAX_KEYS).collect()));
        }
        if parsed.is_empty() {
            let why = if errors.is_empty() { "no public keys found".to_string() } else { errors.join("; ") };
            return Err(format!("no OpenPGP public key could be read: {why}"));
        }
        for e in &errors {
            tracing::warn!(error = %e, "skipping an unreadable OpenPGP key in the keyring");
        }
        let mut ring = Self::default();
        for k in &parsed {
            ring.add(k, now_secs(now));
        }
        Ok(ring)
    }

    /// Adds all keys of `other`.
    pub fn extend(&mut self, other: Self) {
        self.keys.extend(other.keys);
        self.unusable.extend(other.unusable);
    }

    /// True if no key can verify a signature.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Fingerprints (uppercase hex) of the keys that can verify signatures.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| fpr(&k.fingerprint)).collect()
    }

    /// Why keys were left out (`fingerprint: reason`).
    pub fn unusable_reasons(&self) -> Vec<String> {
        self.unusable.iter().map(|u| format!("{}: {}", fpr(&u.fingerprint), u.reason)).collect()
    }

    fn refuse(&mut self, fingerprint: Fingerprint, key_id: KeyId, reason: String) {
        tracing::debug!(key = %fpr(&fingerprint), %reason, "OpenPGP key not usable for verification");
        self.unusable.push(UnusableKey { fingerprint, key_id, reason });
    }

    fn add(&mut self, k: &SignedPublicKey, now: u64) {
        let primary = &k.primary_key;
        let pfp = primary.fingerprint();
        let pid = primary.legacy_key_id();
        if k.details.revocation_signatures.iter().any(|s| s.verify_key(primary).is_ok()) {
            self.refuse(pfp, pid, "the key is revoked".into());
            return;
        }
        // The newest valid self-signature: a user ID self-certification or a direct-key signature.
        let mut best: Option<&Signature> = None;
        for u in &k.details.users {
            for s in &u.signatures {
                let is_cert = matches!(
                    s.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                );
                if is_cert && s.verify_certification(primary, Tag::UserId, &u.id).is_ok() {
                    best = newest(best, s);
                }
            }
        }
        for s in &k.details.direct_signatures {
            if s.verify_key(primary).is_ok() {
                best = newest(best, s);
            }
        }
        let Some(selfsig) = best else {
            self.refuse(pfp, pid, "no valid self-signature".into());
            return;
        };
        if let Some(exp) = key_expiry(selfsig, primary.created_at())
            && now >= exp
        {
            self.refuse(pfp, pid, format!("the key expired at {exp} (seconds since the epoch)"));
            return;
        }
        let flags = selfsig.key_flags();
        let has_flags = flags.sign()
            || flags.certify()
            || flags.encrypt_comms()
            || flags.encrypt_storage()
            || flags.authentication();
        if has_flags && !flags.sign() {
            self.refuse(pfp.clone(), pid, "the primary key is not signing-capable".into());
        } else {
            self.keys.push(UsableKey {
                fingerprint: pfp.clone(),
                key_id: pid,
                primary: pfp.clone(),
                created: primary.created_at(),
                packet: KeyPacket::Primary(primary.clone()),
            });
        }
        for sub in &k.public_subkeys {
            let sfp = sub.key.fingerprint();
            let sid = sub.key.legacy_key_id();
            let revoked = sub.signatures.iter().any(|s| {
                s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(primary, &sub.key).is_ok()
            });
            if revoked {
                self.refuse(sfp, sid, "the subkey is revoked".into());
                continue;
            }
            let mut binding: Option<&Signature> = None;
            for s in &sub.signatures {
                if s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok() {
                    binding = newest(binding, s);
                }
            }
            let Some(b) = binding else {
                self.refuse(sfp, sid, "no valid subkey binding".into());
                continue;
            };
            if !b.key_flags().sign() {
                // Encryption or authentication subkeys: not a signer, nothing to report.
                continue;
            }
            let backsig_ok =
                b.embedded_signature().is_some_and(|e| e.verify_primary_key_binding(&sub.key, primary).is_ok());
            if !backsig_ok {
                self.refuse(sfp, sid, "signing subkey without a valid back-signature".into());
                continue;
            }
            if let Some(exp) = key_expiry(b, sub.key.created_at())
                && now >= exp
            {
                self.refuse(sfp, sid, format!("the subkey expired at {exp} (seconds since the epoch)"));
                continue;
            }
            self.keys.push(UsableKey {
                fingerprint: sfp,
                key_id: sid,
                primary: pfp.clone(),
                created: sub.key.created_at(),
                packet: KeyPacket::Sub(sub.key.clone()),
            });
        }
    }
}

/// Parses an OpenPGP signed message and verifies its single signature against `keyring`.
/// Errors are human-readable reasons.
pub fn verify_message(keyring: &Keyring, blob: &[u8]) -> Result<VerifiedMessage, String> {
    verify_message_at(keyring, blob, SystemTime::now())
}

/// [`verify_message`] with an explicit clock for the signature-expiry check.
pub fn verify_message_at(keyring: &Keyring, blob: &[u8], now: SystemTime) -> Result<VerifiedMessage, String> {
    if blob.len() > MAX_SIGNATURE_SIZE {
        return Err(format!("signature is {} bytes, more than {MAX_SIGNATURE_SIZE}", blob.len()));
    }
    let (mut msg, _) = Message::from_reader(blob).map_err(|e| format!("not an OpenPGP message: {e}"))?;
    for _ in 0..MAX_COMPRESSION_DEPTH {
        if !msg.is_compressed() {
            break;
        }
        msg = msg.decompress().map_err(|e| format!("OpenPGP decompression: {e}"))?;
    }
    if msg.is_compressed() {
        return Err("OpenPGP message nests compression too deeply".into());
    }
    if msg.is_encrypted() {
        return Err("OpenPGP message is encrypted, not signed".into());
    }
    if !msg.is_signed() {
        return Err("OpenPGP message is not signed".into());
    }
    let mut payload = Vec::new();
    (&mut msg)
        .take(MAX_PAYLOAD_SIZE as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(|e| format!("reading the OpenPGP message: {e}"))?;
    if payload.len() > MAX_PAYLOAD_SIZE {
        return Err(format!("signed payload is larger than {MAX_PAYLOAD_SIZE} bytes"));
    }
    let Message::Signed { reader, .. } = &msg else {
        return Err("OpenPGP message is not signed".into());
    };
    let count = reader.num_signatures();
    if count != 1 {
        return Err(format!("expected exactly one OpenPGP signature, found {count}"));
    }
    let sig = reader.signature(0).ok_or("the OpenPGP signature packet is missing")?;
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(format!("OpenPGP signature has type {:?}, not a document signature", sig.typ()));
    }
    let issuer_fps = sig.issuer_fingerprint();
    let issuer_ids = sig.issuer_key_id();
    let named = |fp: &Fingerprint, id: &KeyId| {
        (issuer_fps.is_empty() && issuer_ids.is_empty()) || issuer_fps.contains(&fp) || issuer_ids.contains(&id)
    };
    let issuer = issuer_fps
        .first()
        .map(|f| fpr(f))
        .or_else(|| issuer_ids.first().map(|i| hex_upper(i.as_ref())))
        .unwrap_or_else(|| "an unnamed key".into());

    let mut tried = false;
    for k in keyring.keys.iter().filter(|k| named(&k.fingerprint, &k.key_id)) {
        tried = true;
        if msg.verify(k.packet.verifying()).is_err() {
            continue;
        }
        let created = sig.created().ok_or("the OpenPGP signature has no creation time")?;
        if created < k.created {
            return Err(format!("the OpenPGP signature predates its key {}", fpr(&k.fingerprint)));
        }
        if let Some(d) = sig.signature_expiration_time().map(|d| u64::from(d.as_secs())).filter(|d| *d != 0)
            && now_secs(now) >= secs(created).saturating_add(d)
        {
            return Err(format!(
                "the OpenPGP signature by {} expired at {} (seconds since the epoch)",
                fpr(&k.fingerprint),
                secs(created).saturating_add(d)
            ));
        }
        return Ok(VerifiedMessage { payload, signer: fpr(&k.fingerprint), primary: fpr(&k.primary) });
    }
    if let Some(u) = keyring.unusable.iter().find(|u| named(&u.fingerprint, &u.key_id)) {
        return Err(format!("signed by key {}, which is not usable: {}", fpr(&u.fingerprint), u.reason));
    }
    if tried {
        Err(format!("the OpenPGP signature by {issuer} does not verify (invalid signature)"))
    } else {
        Err(format!("signed by {issuer}, which is not a trusted key"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $name)).as_slice()
        };
    }

    fn fingerprints() -> std::collections::HashMap<String, String> {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fingerprints.txt"));
        text.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn payload() -> &'static [u8] {
        fixture!("payload.json")
    }

    #[test]
    fn ed25519_and_rsa_skopeo_signatures_verify() {
        let f = fingerprints();
        let ring = Keyring::parse(fixture!("ring.gpg")).unwrap();
        assert_eq!(ring.fingerprints(), [f["ed25519"].clone(), f["rsa2048"].clone()]);
        let v = verify_message(&ring, fixture!("sig-ed25519")).unwrap();
        assert_eq!(v.signer, f["ed25519"]);
        assert!(String::from_utf8(v.payload).unwrap().contains("atomic container signature"));
        let v = verify_message(&ring, fixture!("sig-rsa2048")).unwrap();
        assert_eq!(v.signer, f["rsa2048"]);
        assert_eq!(v.primary, f["rsa2048"]);
    }

    #[test]
    fn armored_and_uncompressed_messages_and_armored_keys() {
        let ring = Keyring::parse(fixture!("ed25519.asc")).unwrap();
        assert_eq!(verify_message(&ring, fixture!("sig-ed25519.asc")).unwrap().payload, payload());
        assert_eq!(verify_message(&ring, fixture!("sig-ed25519-uncompressed")).unwrap().payload, payload());
        assert!(verify_message(&ring, fixture!("sig-ed25519")).is_ok());
        // Two armored blocks in one file (the same key twice is enough to exercise the splitting).
        let mut two = fixture!("ed25519.asc").to_vec();
        two.extend_from_slice(fixture!("ed25519.asc"));
        let ring = Keyring::parse(&two).unwrap();
        assert_eq!(ring.fingerprints().len(), 2);
    }

    #[test]
    fn signing_subkey() {
        let f = fingerprints();
        let ring = Keyring::parse(fixture!("subkey.gpg")).unwrap();
        // The certify-only primary is not a signer; the signing subkey is.
        assert_eq!(ring.fingerprints().len(), 1);
        assert_ne!(ring.fingerprints()[0], f["subkey-primary"]);
        let v = verify_message(&ring, fixture!("sig-subkey")).unwrap();
        assert_eq!(v.primary, f["subkey-primary"]);
        assert_ne!(v.signer, v.primary);
        assert!(ring.unusable_reasons()[0].contains("not signing-capable"));
    }

    #[test]
    fn untrusted_key_is_refused() {
        let f = fingerprints();
        let ring = Keyring::parse(fixture!("ring.gpg")).unwrap();
        let e = verify_message(&ring, fixture!("sig-other")).unwrap_err();
        assert!(e.contains(&f["other"]) && e.contains("not a trusted key"), "{e}");
    }

    #[test]
    fn flipped_bytes_never_verify() {
        let ring = Keyring::parse(fixture!("ring.gpg")).unwrap();
        for name in ["sig-ed25519", "sig-rsa2048", "sig-ed25519-uncompressed"] {
            let blob = match name {
                "sig-ed25519" => fixture!("sig-ed25519"),
                "sig-rsa2048" => fixture!("sig-rsa2048"),
                _ => fixture!("sig-ed25519-uncompressed"),
            };
            let original = verify_message(&ring, blob).unwrap().payload;
            for i in 0..blob.len() {
                let mut b = blob.to_vec();
                b[i] ^= 0x01;
                if let Ok(v) = verify_message(&ring, &b) {
                    // Only bytes the signature does not cover may change: the literal packet's
                    // metadata (format / file name / date), unhashed subpackets, the zlib
                    // trailer. The payload must still be the signed one.
                    assert_eq!(v.payload, original, "{name}: flipping byte {i} changed the payload");
                }
            }
        }
    }

    #[test]
    fn payload_tamper_in_uncompressed_message_fails() {
        let ring = Keyring::parse(fixture!("ed25519.gpg")).unwrap();
        let blob = fixture!("sig-ed25519-uncompressed");
        let at = blob.windows(8).position(|w| w == b"critical").unwrap();
        let mut b = blob.to_vec();
        b[at] = b'C';
        let e = verify_message(&ring, &b).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn expired_key_and_signature() {
        let f = fingerprints();
        let ring = Keyring::parse(fixture!("expired.gpg")).unwrap();
        assert!(ring.is_empty());
        let e = verify_message(&ring, fixture!("sig-expired-key")).unwrap_err();
        assert!(e.contains(&f["expired"]) && e.contains("expired"), "{e}");
        // At a time before the expiry the same key works.
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_590_969_600); // 2020-06-01
        let ring = Keyring::parse_at(fixture!("expired.gpg"), then).unwrap();
        assert!(verify_message_at(&ring, fixture!("sig-expired-key"), then).is_ok());

        let ring = Keyring::parse(fixture!("ed25519.gpg")).unwrap();
        let e = verify_message(&ring, fixture!("sig-expired-signature")).unwrap_err();
        assert!(e.contains("signature") && e.contains("expired"), "{e}");
        assert!(verify_message_at(&ring, fixture!("sig-expired-signature"), then).is_ok());
    }

    #[test]
    fn malformed_inputs() {
        let ring = Keyring::parse(fixture!("ring.gpg")).unwrap();
        let e = verify_message(&ring, fixture!("sig-two-signers")).unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        assert!(verify_message(&ring, fixture!("sig-detached")).is_err());
        assert!(verify_message(&ring, b"").is_err());
        assert!(verify_message(&ring, b"garbage").is_err());
        assert!(verify_message(&ring, payload()).is_err());
        assert!(verify_message(&ring, b"-----BEGIN PGP MESSAGE-----\n\nxx\n-----END PGP MESSAGE-----\n").is_err());
        assert!(verify_message(&ring, &vec![0u8; MAX_SIGNATURE_SIZE + 1]).unwrap_err().contains("more than"));
        for n in [1, 10, 50, 100] {
            let blob = fixture!("sig-ed25519");
            assert!(verify_message(&ring, &blob[..blob.len() - n]).is_err());
        }
        assert!(Keyring::parse(b"").is_err());
        assert!(Keyring::parse(b"not a key").is_err());
        assert!(Keyring::parse(fixture!("sig-ed25519")).is_err());
        assert!(
            Keyring::parse(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n").is_err()
        );
    }

    #[test]
    fn extend_merges() {
        let mut a = Keyring::parse(fixture!("ed25519.gpg")).unwrap();
        a.extend(Keyring::parse(fixture!("rsa2048.gpg")).unwrap());
        assert_eq!(a.fingerprints().len(), 2);
        assert!(verify_message(&a, fixture!("sig-rsa2048")).is_ok());
    }
}
