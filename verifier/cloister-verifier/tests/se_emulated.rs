//! IBM Secure Execution verification against an emulated Ultravisor.
//!
//! No real SE evidence exists publicly (it is only checkable with the verifier's own key), so this
//! file builds what a real deployment would have: a synthetic SE header with the documented
//! layout, emulated hosts (a host-key hash and a stand-in for the ECDH shared secret), and an
//! emulated Ultravisor that — independently of the library, from raw offsets and ring — unwraps
//! its key slot, decrypts the ARCB, builds the additional data the flags ask for and computes the
//! HMAC-SHA512 measurement. The HMAC layout itself is pinned by s390-tools' published test
//! vectors. Then every way the evidence can be wrong must be rejected with the right error.
//!
//! **What it trusts:** nothing; it is a test. The emulated host keys are not P-521 keys (this
//! workspace has no P-521), only the shared secret they would yield.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_evidence::se::{
    AttestationFlags, BootHdrTags, PvattestExchangeResponse, SeArcb, SeAttestationFlag, SeAttestationRequest,
    SeAttestationResponse, SeEvidenceError,
};
use cloister_measure::se::{SeHeader, parse_se_header};
use cloister_measure::{Sha256Digest, Sha512Digest};
use cloister_verifier::se::{
    SeHostKeyWrap, SeMeasurementKey, SeProtectionKey, SeReference, SeRequestSecrets, SeSecretSealer, SeVerifyError,
    build_arcb, compute_measurement, measured_input, open_arcb, parse_se_evidence, unwrap_key_slot, verify_se_evidence,
    verify_se_response, wrap_key_slot,
};
use proptest::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, digest, hmac};

// ---------------------------------------------------------------------------------------------
// Synthetic image header
// ---------------------------------------------------------------------------------------------

/// A version-1 SE header: head (0x1A0), one key slot per PHKH, a 128-byte encrypted area, tag.
fn synthetic_header(phkhs: &[[u8; 32]], digest_seed: u8, tag: [u8; 16]) -> Vec<u8> {
    let sea = 128usize;
    let size = 0x1A0 + phkhs.len() * 80 + sea + 16;
    let mut h = Vec::with_capacity(size);
    h.extend_from_slice(b"IBMSecEx");
    h.extend_from_slice(&0x100u32.to_be_bytes());
    h.extend_from_slice(&(size as u32).to_be_bytes());
    h.extend_from_slice(&[0xA1; 12]);
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&(phkhs.len() as u64).to_be_bytes());
    h.extend_from_slice(&(sea as u64).to_be_bytes());
    h.extend_from_slice(&77u64.to_be_bytes());
    h.extend_from_slice(&0u64.to_be_bytes());
    h.extend_from_slice(&[0xC1; 160]);
    for d in 0..3u8 {
        h.extend((0..64u8).map(|i| i ^ digest_seed ^ (d << 6)));
    }
    for p in phkhs {
        h.extend_from_slice(p);
        h.extend_from_slice(&[0x22; 32]);
        h.extend_from_slice(&[0x33; 16]);
    }
    h.extend(std::iter::repeat_n(0xEE, sea));
    h.extend_from_slice(&tag);
    assert_eq!(h.len(), size);
    h
}

// ---------------------------------------------------------------------------------------------
// Emulated hosts and Ultravisor
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct EmulatedHost {
    phkh: [u8; 32],
    /// Stands in for ECDH-P521(customer private key, host public key).
    shared_secret: [u8; 66],
}

impl EmulatedHost {
    fn new(seed: u8) -> Self {
        EmulatedHost { phkh: [seed; 32], shared_secret: [seed ^ 0x5A; 66] }
    }
}

/// The verifier's list of accepted hosts (what host-key documents would give).
struct HostSet(Vec<EmulatedHost>);

impl SeHostKeyWrap for HostSet {
    fn wrap(
        &self,
        arpk: &SeProtectionKey,
    ) -> Result<([u8; 160], Vec<cloister_evidence::se::SeArcbKeySlot>), SeVerifyError> {
        let slots = self.0.iter().map(|h| wrap_key_slot(&h.shared_secret, h.phkh, arpk)).collect::<Result<_, _>>()?;
        Ok(([0x99; 160], slots))
    }
}

struct UvOutput {
    measurement: Vec<u8>,
    additional: Vec<u8>,
    cuid: [u8; 16],
}

/// An Ultravisor running one image on one host. Written from raw offsets and ring, not from the
/// library, so that the library is checked against a second reading of the formats.
struct EmulatedUv {
    host: EmulatedHost,
    header: Vec<u8>,
    cuid: [u8; 16],
    /// The key slot of the image this host unpacked it with.
    image_phkh: [u8; 32],
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

impl EmulatedUv {
    fn hdr_tags(&self) -> Vec<u8> {
        let h = &self.header;
        let size = be32(h, 0x0C) as usize;
        let mut t = h[0xE0..0x1A0].to_vec();
        t.extend_from_slice(&h[size - 16..size]);
        t
    }

    fn perform(&self, arcb: &[u8], user_data: &[u8]) -> Result<UvOutput, &'static str> {
        self.perform_with(arcb, user_data, |_| {})
    }

    /// Runs the attestation UVC; `tamper` may change the additional data before measuring (a
    /// misbehaving Ultravisor, for tests).
    fn perform_with(
        &self,
        arcb: &[u8],
        user_data: &[u8],
        tamper: impl Fn(&mut Vec<u8>),
    ) -> Result<UvOutput, &'static str> {
        if arcb.len() < 0x30 || arcb[..8] != [0; 8] || be32(arcb, 8) != 0x100 || be32(arcb, 12) as usize != arcb.len() {
            return Err("invalid request");
        }
        let nks = arcb[0x27] as usize;
        let sea = be32(arcb, 0x2C) as usize;
        let aad_len = 0x30 + 0x10 + 160 + nks * 80;
        if aad_len + sea + 16 != arcb.len() || be32(arcb, 0x38) != 1 {
            return Err("invalid request layout");
        }
        let flags = u64::from_be_bytes(arcb[0x30..0x38].try_into().unwrap());
        // Find and unwrap this host's key slot.
        let slot = (0..nks)
            .map(|i| &arcb[0xE0 + i * 80..0xE0 + (i + 1) * 80])
            .find(|s| s[..32] == self.host.phkh)
            .ok_or("no key slot for this host")?;
        let mut kdf = self.host.shared_secret.to_vec();
        kdf.extend_from_slice(&[0, 0, 0, 1]);
        let kek = digest::digest(&digest::SHA256, &kdf);
        let kek = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, kek.as_ref()).unwrap());
        let mut wrapped = slot[32..80].to_vec();
        let arpk = kek
            .open_in_place(aead::Nonce::assume_unique_for_key([0; 12]), aead::Aad::empty(), &mut wrapped)
            .map_err(|_| "key slot does not unwrap")?
            .to_vec();
        // Decrypt the confidential part.
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &arpk).unwrap());
        let iv: [u8; 12] = arcb[0x10..0x1C].try_into().unwrap();
        let mut conf = arcb[aad_len..].to_vec();
        let conf = key
            .open_in_place(aead::Nonce::assume_unique_for_key(iv), aead::Aad::from(&arcb[..aad_len]), &mut conf)
            .map_err(|_| "request does not decrypt")?;
        let nonce_flag = flags & (1 << 62) != 0;
        if conf.len() != 64 + if nonce_flag { 16 } else { 0 } {
            return Err("encrypted area size");
        }
        let (meas_key, nonce) = conf.split_at(64);
        // Additional data, in flag order.
        let mut additional = Vec::new();
        if flags & (1 << 61) != 0 {
            additional.extend_from_slice(&self.image_phkh);
        }
        if flags & (1 << 60) != 0 {
            additional.extend_from_slice(&self.host.phkh);
        }
        if flags & (1 << 59) != 0 {
            additional.extend_from_slice(&[0x5E; 64]);
        }
        if flags & (1 << 58) != 0 {
            additional.extend_from_slice(&[0xF5; 320]);
        }
        tamper(&mut additional);
        // The measurement.
        let mut m = self.hdr_tags();
        m.extend_from_slice(&self.cuid);
        m.extend_from_slice(&(user_data.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(additional.len() as u32).to_be_bytes());
        m.extend_from_slice(user_data);
        m.extend_from_slice(nonce);
        m.extend_from_slice(&additional);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, meas_key), &m);
        Ok(UvOutput { measurement: tag.as_ref().to_vec(), additional, cuid: self.cuid })
    }

    /// What the guest-components SE attester does with a trustee challenge.
    fn attest(&self, req: &SeAttestationRequest) -> SeAttestationResponse {
        let mut user = req.runtime_data_digest.clone().unwrap();
        user.resize(64, 0);
        let out = self.perform(&req.request_blob, &user).unwrap();
        assert_eq!(out.measurement.len(), req.measurement_size as usize);
        assert_eq!(out.additional.len(), req.additional_size as usize);
        SeAttestationResponse {
            measurement: out.measurement,
            additional_data: out.additional,
            user_data: user,
            cuid: out.cuid,
            encr_measurement_key: req.encr_measurement_key.clone(),
            encr_request_nonce: req.encr_request_nonce.clone(),
            image_hdr_tags: req.image_hdr_tags,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verifier-side fixture
// ---------------------------------------------------------------------------------------------

const TAG_A: [u8; 16] =
    [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF];

struct Fixture {
    rng: SystemRandom,
    header: SeHeader,
    hosts: HostSet,
    uv: EmulatedUv,
    sealer: SeSecretSealer,
    reference: SeReference,
}

fn fixture() -> Fixture {
    let (h1, h2) = (EmulatedHost::new(0x10), EmulatedHost::new(0x20));
    let hdr_bytes = synthetic_header(&[h1.phkh, h2.phkh], 0x3C, TAG_A);
    let header = parse_se_header(&hdr_bytes).unwrap();
    let rng = SystemRandom::new();
    let uv = EmulatedUv { host: h2.clone(), header: hdr_bytes, cuid: [0xC7; 16], image_phkh: h2.phkh };
    Fixture {
        sealer: SeSecretSealer::generate(&rng).unwrap(),
        reference: SeReference::from_header(&header),
        header,
        hosts: HostSet(vec![h1, h2]),
        uv,
        rng,
    }
}

fn report_data() -> Vec<u8> {
    digest::digest(&digest::SHA512, b"{\"additional-evidence\":\"\",\"nonce\":\"n\",\"tee-pubkey\":{}}")
        .as_ref()
        .to_vec()
}

impl Fixture {
    /// Builds a trustee-style challenge; returns it and the secrets (as a session would keep).
    fn challenge(&self, flags: AttestationFlags) -> (SeAttestationRequest, SeRequestSecrets) {
        let secrets = SeRequestSecrets::generate(flags, &self.rng).unwrap();
        let arcb = build_arcb(&secrets, &self.hosts, &self.rng).unwrap();
        let (k, n) = self.sealer.seal(&secrets, &self.rng).unwrap();
        let req = SeAttestationRequest {
            request_blob: arcb,
            measurement_size: secrets.measurement_size(),
            additional_size: secrets.additional_size(),
            encr_measurement_key: k,
            encr_request_nonce: n,
            image_hdr_tags: BootHdrTags::from_array(&self.header.boot_hdr_tags()),
            runtime_data_digest: Some(report_data()),
        };
        (req, secrets)
    }

    fn round(&self, flags: AttestationFlags) -> (SeAttestationResponse, SeRequestSecrets) {
        let (req, secrets) = self.challenge(flags);
        // The challenge travels as JSON.
        let req: SeAttestationRequest = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        (self.uv.attest(&req), secrets)
    }

    fn verify(&self, resp: &SeAttestationResponse, secrets: &SeRequestSecrets) -> Result<(), SeVerifyError> {
        verify_se_response(resp, secrets, &self.reference, Some(&report_data())).map(|_| ())
    }
}

fn copy_secrets(s: &SeRequestSecrets) -> SeRequestSecrets {
    SeRequestSecrets::new(SeMeasurementKey::from_bytes(s.measurement_key().expose()), s.nonce().copied(), s.flags())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// User data, nonce, additional data and the expected HMAC (hex).
type Vector<'a> = (&'a [u8], Option<&'a [u8; 16]>, &'a [u8], &'a str);

/// s390-tools `rust/pv/src/uvattest/attest.rs` test vectors: key 0x41×64, PLD 1×64, ALD 2×64,
/// TLD 3×64, tag 4×16, CUID 5×16, user 7×256, nonce 8×16, additional 9×128.
#[test]
fn hmac_layout_matches_s390_tools_vectors() {
    let key = SeMeasurementKey::from_bytes(&[0x41; 64]);
    let tags = BootHdrTags { pld: [1; 64], ald: [2; 64], tld: [3; 64], tag: [4; 16] };
    let (cuid, user, nonce, add) = ([5u8; 16], [7u8; 256], [8u8; 16], [9u8; 128]);
    let cases: [Vector<'_>; 4] = [
        (
            &user,
            Some(&nonce),
            &add,
            "88794c62cce7bcf26216deb3f48f13fea6374b6d7e35bcc5c2ce68121db6f45dfc8c17185646354940\
             8bf8e7d1aca11efad0a878af97dc9e21a1fc2a32f3a675",
        ),
        (
            &user,
            None,
            &add,
            "fbd4f738a390edd947cd4f11af3a2f3bab2fdf8bf89bf81beb495117f4382cf42f0730c8c7d9e3ca27\
             fb25adfceb21224f57fdb398dcf41a83c146e6a23db760",
        ),
        (
            &[],
            None,
            &add,
            "63671fbf295036eb1023ea71f7182e7d6343dc7b2da584e824d0a7d198ab9cded756c93b39050ffb76\
             4555b01f88cb82017a6a15c7e0bafc6005f1e4f78aa124",
        ),
        (
            &[],
            None,
            &[],
            "c5c34c93835d1ec23f5c2d778dfa20129b11b305601742cb2f38e0ed9894dcdb73fc8695ab6a8dbad0\
             744073ddc81a5eaafa52e4a15af8deb8d761091922847f",
        ),
    ];
    for (user, nonce, add, expected) in cases {
        let m = compute_measurement(&key, &tags, &cuid, user, nonce, add).unwrap();
        assert_eq!(hex::encode(m), expected);
    }
    let input = measured_input(&tags, &cuid, &user, Some(&nonce), &add).unwrap();
    assert_eq!(input.len(), 208 + 16 + 2 + 2 + 4 + 256 + 16 + 128);
    assert_eq!(&input[224..232], &[1, 0, 0, 0, 0, 0, 0, 128]);
}

#[test]
fn valid_trustee_flow_verifies_with_sealed_secrets() {
    let fx = fixture();
    let (resp, _session) = fx.round(AttestationFlags::TRUSTEE);
    let json = serde_json::to_vec(&resp).unwrap();

    // Stateless: the secrets come back sealed inside the evidence.
    let parsed = parse_se_evidence(&json).unwrap();
    let secrets = fx.sealer.unseal(&parsed.encr_measurement_key, &parsed.encr_request_nonce).unwrap();
    assert_eq!(secrets.flags(), AttestationFlags::TRUSTEE);
    let v = verify_se_evidence(&json, &secrets, &fx.reference, Some(&report_data())).unwrap();
    assert!(v.report_data_checked);
    assert_eq!(v.cuid, [0xC7; 16]);

    let claims = v.claims();
    let obj = claims.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["se.attestation_phkh", "se.cuid", "se.image_phkh", "se.report_data", "se.tag", "se.user_data", "se.version"]
    );
    assert_eq!(claims["se.version"], 256);
    assert_eq!(claims["se.tag"], "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    assert_eq!(claims["se.cuid"], "c7".repeat(16));
    assert_eq!(claims["se.image_phkh"], "20".repeat(32));
    assert_eq!(claims["se.attestation_phkh"], "20".repeat(32));
    assert_eq!(claims["se.report_data"], hex::encode(report_data()));
    assert_eq!(claims["se.user_data"], hex::encode(report_data()));
    // The reference values of the image agree with the claims.
    let rv = fx.header.reference_values();
    assert_eq!(claims["se.tag"], rv.tag_hex());
    assert!(rv.image_phkh.iter().any(|p| claims["se.image_phkh"] == p.to_hex()));
}

#[test]
fn all_flags_and_session_secrets_verify() {
    let fx = fixture();
    let all = SeAttestationFlag::ALL.into_iter().fold(AttestationFlags::empty(), AttestationFlags::with);
    let (resp, secrets) = fx.round(all);
    assert_eq!(resp.additional_data.len(), 32 + 32 + 64 + 320);
    let v = verify_se_response(&resp, &secrets, &fx.reference, None).unwrap();
    assert!(!v.report_data_checked);
    let c = v.claims();
    assert_eq!(c["se.secret_store_hash"], "5e".repeat(64));
    assert_eq!(c["se.firmware_state"], "f5".repeat(320));

    // A reference from the reference values (tag + PHKHs, no digests) and a pinned attestation key.
    let reference = SeReference::from_reference_values(&fx.header.reference_values())
        .allow_attestation_phkh(Sha256Digest([0x20; 32]));
    verify_se_response(&resp, &secrets, &reference, Some(&report_data())).unwrap();
}

#[test]
fn flipping_any_measured_byte_is_an_hmac_mismatch() {
    let fx = fixture();
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    fx.verify(&resp, &secrets).unwrap();
    let expect_mismatch = |r: &SeAttestationResponse, what: &str| {
        assert_eq!(fx.verify(r, &secrets), Err(SeVerifyError::HmacMismatch), "{what}");
    };

    for i in 0..208 {
        let mut t = resp.image_hdr_tags.to_bytes();
        t[i] ^= 0x01;
        let r = SeAttestationResponse { image_hdr_tags: BootHdrTags::from_array(&t), ..resp.clone() };
        expect_mismatch(&r, &format!("image_hdr_tags[{i}]"));
    }
    for i in 0..16 {
        let mut r = resp.clone();
        r.cuid[i] ^= 0x80;
        expect_mismatch(&r, &format!("cuid[{i}]"));
    }
    for i in 0..resp.user_data.len() {
        let mut r = resp.clone();
        r.user_data[i] ^= 0x01;
        expect_mismatch(&r, &format!("user_data[{i}]"));
    }
    for i in 0..resp.additional_data.len() {
        let mut r = resp.clone();
        r.additional_data[i] ^= 0x01;
        expect_mismatch(&r, &format!("additional_data[{i}]"));
    }
    for i in 0..64 {
        let mut r = resp.clone();
        r.measurement[i] ^= 0x01;
        expect_mismatch(&r, &format!("measurement[{i}]"));
    }
    // Lengths are measured too: dropping or adding user/additional bytes.
    let mut r = resp.clone();
    r.user_data.pop();
    expect_mismatch(&r, "shorter user data");
    let mut r = resp.clone();
    r.additional_data.push(0);
    expect_mismatch(&r, "longer additional data");
    // The nonce the verifier holds, byte by byte.
    for i in 0..16 {
        let mut n = *secrets.nonce().unwrap();
        n[i] ^= 0x01;
        let s = SeRequestSecrets::new(
            SeMeasurementKey::from_bytes(secrets.measurement_key().expose()),
            Some(n),
            secrets.flags(),
        )
        .unwrap();
        assert_eq!(fx.verify(&resp, &s), Err(SeVerifyError::HmacMismatch), "nonce[{i}]");
    }
    // The sealed fields are not measured (they only carry the secrets back): changing them
    // does not matter once the secrets are known.
    let mut r = resp.clone();
    r.encr_request_nonce[0] ^= 1;
    fx.verify(&r, &secrets).unwrap();
}

#[test]
fn wrong_key_is_rejected() {
    let fx = fixture();
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    let mut k = *secrets.measurement_key().expose();
    k[63] ^= 1;
    let wrong =
        SeRequestSecrets::new(SeMeasurementKey::from_bytes(&k), secrets.nonce().copied(), secrets.flags()).unwrap();
    assert_eq!(fx.verify(&resp, &wrong), Err(SeVerifyError::HmacMismatch));
    let fresh =
        SeRequestSecrets::new(SeMeasurementKey::generate(&fx.rng).unwrap(), secrets.nonce().copied(), secrets.flags())
            .unwrap();
    assert_eq!(fx.verify(&resp, &fresh), Err(SeVerifyError::HmacMismatch));
}

#[test]
fn wrong_nonce_and_other_requests_are_rejected() {
    let fx = fixture();
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    let other_nonce = SeRequestSecrets::new(
        SeMeasurementKey::from_bytes(secrets.measurement_key().expose()),
        Some([0x42; 16]),
        secrets.flags(),
    )
    .unwrap();
    assert_eq!(fx.verify(&resp, &other_nonce), Err(SeVerifyError::HmacMismatch));
    // No nonce at all (flag cleared): the measured input differs.
    let no_nonce = SeRequestSecrets::new(
        SeMeasurementKey::from_bytes(secrets.measurement_key().expose()),
        None,
        secrets.flags().without(SeAttestationFlag::Nonce),
    )
    .unwrap();
    assert_eq!(fx.verify(&resp, &no_nonce), Err(SeVerifyError::HmacMismatch));
    // A replayed response checked against a newer request's secrets.
    let (_, newer) = fx.round(AttestationFlags::TRUSTEE);
    assert_eq!(fx.verify(&resp, &newer), Err(SeVerifyError::HmacMismatch));
    // Secrets whose nonce disagrees with the flags are refused outright.
    assert_eq!(
        SeRequestSecrets::new(SeMeasurementKey::from_bytes(&[0; 64]), None, AttestationFlags::TRUSTEE).unwrap_err(),
        SeVerifyError::NonceFlagMismatch { flagged: true, present: false }
    );
}

#[test]
fn image_not_in_reference_is_rejected() {
    let fx = fixture();
    // The host runs another image (other tag, other digests) for which the request was made.
    let other = synthetic_header(&[fx.uv.host.phkh], 0x77, [0xBB; 16]);
    let other_hdr = parse_se_header(&other).unwrap();
    let uv = EmulatedUv { header: other, ..EmulatedUv { host: fx.uv.host.clone(), header: vec![], ..fx.uv } };
    let (mut req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    req.image_hdr_tags = BootHdrTags::from_array(&other_hdr.boot_hdr_tags());
    let resp = uv.attest(&req);
    let err = fx.verify(&resp, &secrets).unwrap_err();
    assert_eq!(err, SeVerifyError::ImageTagNotAllowed { tag: "bb".repeat(16) });
    assert_eq!(err.check(), "image_tag");
    // The echoed tags claim the reference image, but the running image is measured: HMAC fails.
    let (req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    let resp = uv.attest(&req);
    assert_eq!(fx.verify(&resp, &secrets), Err(SeVerifyError::HmacMismatch));
    // Accepting both images makes it pass.
    let (mut req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    req.image_hdr_tags = BootHdrTags::from_array(&other_hdr.boot_hdr_tags());
    let resp = uv.attest(&req);
    let both = SeReference::from_header(&fx.header).allow_header(&other_hdr);
    verify_se_response(&resp, &secrets, &both, None).unwrap();
    // No reference at all.
    assert_eq!(verify_se_response(&resp, &secrets, &SeReference::new(), None), Err(SeVerifyError::NoImageReference));
}

#[test]
fn same_tag_with_other_digests_is_rejected_against_a_header() {
    let fx = fixture();
    let forged = synthetic_header(&[fx.uv.host.phkh], 0x01, TAG_A);
    let forged_hdr = parse_se_header(&forged).unwrap();
    let uv = EmulatedUv { host: fx.uv.host.clone(), header: forged, cuid: [1; 16], image_phkh: fx.uv.host.phkh };
    let (mut req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    req.image_hdr_tags = BootHdrTags::from_array(&forged_hdr.boot_hdr_tags());
    let resp = uv.attest(&req);
    assert_eq!(fx.verify(&resp, &secrets), Err(SeVerifyError::ImageHeaderTagsMismatch { tag: hex::encode(TAG_A) }));
    // Tag-only reference values (as trustee's RVPS holds) cannot tell.
    let tag_only = SeReference::from_reference_values(&fx.header.reference_values());
    verify_se_response(&resp, &secrets, &tag_only, None).unwrap();
}

#[test]
fn host_key_hashes_are_checked() {
    let fx = fixture();
    // A host that is in the request but not among the image's key slots.
    let h3 = EmulatedHost::new(0x30);
    let hosts = HostSet(vec![h3.clone()]);
    let uv = EmulatedUv { host: h3.clone(), header: fx.uv.header.clone(), cuid: [2; 16], image_phkh: h3.phkh };
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &fx.rng).unwrap();
    let arcb = build_arcb(&secrets, &hosts, &fx.rng).unwrap();
    let out = uv.perform(&arcb, &report_data()).unwrap();
    let resp = SeAttestationResponse {
        measurement: out.measurement,
        additional_data: out.additional,
        user_data: report_data(),
        cuid: out.cuid,
        encr_measurement_key: vec![],
        encr_request_nonce: vec![],
        image_hdr_tags: BootHdrTags::from_array(&fx.header.boot_hdr_tags()),
    };
    let err = fx.verify(&resp, &secrets).unwrap_err();
    assert_eq!(err, SeVerifyError::ImagePhkhNotAllowed { phkh: "30".repeat(32) });
    assert_eq!(err.check(), "image_phkh");

    // Attestation PHKH pinned to another host.
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    let pinned = SeReference::from_header(&fx.header).allow_attestation_phkh(Sha256Digest([0x10; 32]));
    assert_eq!(
        verify_se_response(&resp, &secrets, &pinned, None),
        Err(SeVerifyError::AttestationPhkhNotAllowed { phkh: "20".repeat(32) })
    );

    // Flags without the PHKHs: the reference needs them.
    let (resp, secrets) = fx.round(AttestationFlags::empty().with(SeAttestationFlag::AttestationPhkh));
    assert_eq!(fx.verify(&resp, &secrets), Err(SeVerifyError::ImagePhkhMissing));
    let (resp, secrets) = fx.round(AttestationFlags::empty().with(SeAttestationFlag::ImagePhkh));
    assert_eq!(verify_se_response(&resp, &secrets, &pinned, None), Err(SeVerifyError::AttestationPhkhMissing));
    verify_se_response(&resp, &secrets, &fx.reference, None).unwrap();
}

#[test]
fn report_data_is_checked() {
    let fx = fixture();
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    let mut other = report_data();
    other[0] ^= 1;
    let err = verify_se_response(&resp, &secrets, &fx.reference, Some(&other)).unwrap_err();
    assert_eq!(err, SeVerifyError::ReportDataMismatch);
    assert_eq!(err.check(), "report_data");
    assert_eq!(
        verify_se_response(&resp, &secrets, &fx.reference, Some(&[0; 65])),
        Err(SeVerifyError::ReportDataTooLong { len: 65 })
    );
    // A 48-byte digest is zero-padded, as the attester does.
    let (mut req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    req.runtime_data_digest = Some(vec![0xD4; 48]);
    let resp = fx.uv.attest(&req);
    verify_se_response(&resp, &secrets, &fx.reference, Some(&[0xD4; 48])).unwrap();
    assert_eq!(
        verify_se_response(&resp, &secrets, &fx.reference, Some(&[0xD4; 49])),
        Err(SeVerifyError::ReportDataMismatch)
    );
}

#[test]
fn additional_data_must_match_the_flags() {
    let fx = fixture();
    let (req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    // A (misbehaving) Ultravisor that returns and measures only 40 bytes of additional data.
    let out = fx.uv.perform_with(&req.request_blob, &report_data(), |a| a.truncate(40)).unwrap();
    let resp = SeAttestationResponse {
        measurement: out.measurement,
        additional_data: out.additional,
        user_data: report_data(),
        cuid: out.cuid,
        encr_measurement_key: vec![],
        encr_request_nonce: vec![],
        image_hdr_tags: req.image_hdr_tags,
    };
    let err = fx.verify(&resp, &secrets).unwrap_err();
    assert_eq!(
        err,
        SeVerifyError::AdditionalData(SeEvidenceError::AdditionalDataMissing {
            item: "attestation_phkh",
            needed: 32,
            available: 8
        })
    );
    assert_eq!(err.check(), "additional_data");
}

#[test]
fn measurement_length_is_checked() {
    let fx = fixture();
    let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
    let mut r = resp.clone();
    r.measurement.truncate(63);
    assert_eq!(fx.verify(&r, &secrets), Err(SeVerifyError::MeasurementLength { len: 63 }));
    r.measurement = vec![0; 128];
    assert_eq!(fx.verify(&r, &secrets), Err(SeVerifyError::MeasurementLength { len: 128 }));
    r.measurement.clear();
    assert_eq!(
        fx.verify(&r, &secrets),
        Err(SeVerifyError::Evidence(SeEvidenceError::FieldEmpty { field: "measurement" }))
    );
}

#[test]
fn malformed_evidence_gives_typed_parse_errors() {
    let fx = fixture();
    let (resp, _) = fx.round(AttestationFlags::TRUSTEE);
    let json = serde_json::to_vec(&resp).unwrap();
    let parse = |b: &[u8]| parse_se_evidence(b).unwrap_err();

    for cut in [0, 1, 10, json.len() / 2, json.len() - 1] {
        let e = parse(&json[..cut]);
        assert!(matches!(e, SeVerifyError::Json(_)), "cut at {cut}: {e}");
        assert_eq!(e.check(), "evidence");
    }
    assert!(matches!(parse(b"\x00\xff garbage"), SeVerifyError::Json(_)));
    assert!(matches!(parse(b"[1,2,3]"), SeVerifyError::Json(_)));
    assert!(matches!(parse(b"null"), SeVerifyError::Json(_)));
    let big = vec![b' '; 256 * 1024 + 1];
    assert_eq!(parse(&big), SeVerifyError::EvidenceTooLarge { len: 256 * 1024 + 1, max: 256 * 1024 });

    let with = |field: &str, v: serde_json::Value| {
        let mut j: serde_json::Value = serde_json::from_slice(&json).unwrap();
        j[field] = v;
        serde_json::to_vec(&j).unwrap()
    };
    let b64 = |n: usize| {
        let r = SeAttestationResponse { user_data: vec![0; n.min(256)], ..resp.clone() };
        let mut v = serde_json::to_value(&r).unwrap();
        if n > 256 {
            // Encode an oversized value by hand through a valid response of another field.
            let big = SeAttestationResponse { encr_measurement_key: vec![0; n], ..resp.clone() };
            v["user_data"] = serde_json::to_value(&big).unwrap()["encr_measurement_key"].clone();
        }
        v["user_data"].clone()
    };
    assert_eq!(
        parse(&with("user_data", b64(257))),
        SeVerifyError::Evidence(SeEvidenceError::FieldTooLong { field: "user_data", len: 257, max: 256 })
    );
    let cuid17 =
        serde_json::to_value(SeAttestationResponse { user_data: vec![0; 17], ..resp.clone() }).unwrap()["user_data"]
            .clone();
    assert_eq!(
        parse(&with("cuid", cuid17)),
        SeVerifyError::Evidence(SeEvidenceError::FieldLength { field: "cuid", len: 17, expected: 16 })
    );
    assert_eq!(
        parse(&with("image_hdr_tags", "AAAA".into())),
        SeVerifyError::Evidence(SeEvidenceError::FieldLength { field: "image_hdr_tags", len: 3, expected: 208 })
    );
    assert_eq!(
        parse(&with("measurement", "not base64!".into())),
        SeVerifyError::Evidence(SeEvidenceError::Base64 { field: "measurement" })
    );
    assert!(matches!(parse(&with("unexpected", "AA==".into())), SeVerifyError::Json(_)));
    assert!(matches!(parse(&with("cuid", serde_json::Value::Null)), SeVerifyError::Json(_)));
    // The verify entry point reports the same.
    let (_, secrets) = fx.round(AttestationFlags::TRUSTEE);
    assert!(matches!(
        verify_se_evidence(&json[..json.len() - 2], &secrets, &fx.reference, None),
        Err(SeVerifyError::Json(_))
    ));
}

#[test]
fn sealed_secrets_resist_tampering() {
    let fx = fixture();
    let (req, secrets) = fx.challenge(AttestationFlags::TRUSTEE);
    let back = fx.sealer.unseal(&req.encr_measurement_key, &req.encr_request_nonce).unwrap();
    assert_eq!(back.measurement_key().expose(), secrets.measurement_key().expose());
    assert_eq!(back.nonce(), secrets.nonce());
    assert_eq!(back.flags(), secrets.flags());

    for i in [0, 12, 40, req.encr_measurement_key.len() - 1] {
        let mut k = req.encr_measurement_key.clone();
        k[i] ^= 1;
        let e = fx.sealer.unseal(&k, &req.encr_request_nonce).unwrap_err();
        assert!(matches!(e, SeVerifyError::SealedSecrets(_)));
        assert_eq!(e.check(), "sealed_secrets");
    }
    let mut n = req.encr_request_nonce.clone();
    n[20] ^= 1;
    assert!(matches!(fx.sealer.unseal(&req.encr_measurement_key, &n), Err(SeVerifyError::SealedSecrets(_))));
    // A nonce blob from another request does not pair with this key blob.
    let (other, _) = fx.challenge(AttestationFlags::TRUSTEE);
    assert!(matches!(
        fx.sealer.unseal(&req.encr_measurement_key, &other.encr_request_nonce),
        Err(SeVerifyError::SealedSecrets(_))
    ));
    // Another verifier's sealer, and truncated blobs.
    let stranger = SeSecretSealer::new(&[7; 32]).unwrap();
    assert!(stranger.unseal(&req.encr_measurement_key, &req.encr_request_nonce).is_err());
    assert!(fx.sealer.unseal(&[], &req.encr_request_nonce).is_err());
    assert!(fx.sealer.unseal(&req.encr_measurement_key, &[1; 27]).is_err());
}

#[test]
fn arcb_round_trip_and_tampering() {
    let fx = fixture();
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &fx.rng).unwrap();
    let arcb = build_arcb(&secrets, &fx.hosts, &fx.rng).unwrap();
    let parsed = SeArcb::from_bytes(&arcb).unwrap();
    assert_eq!(parsed.flags, AttestationFlags::TRUSTEE);
    assert_eq!(parsed.key_slots.len(), 2);
    assert_eq!(parsed.key_slots[1].phkh, [0x20; 32]);
    assert_eq!(parsed.customer_public_key, [0x99; 160]);
    assert_eq!(arcb.len(), 0x30 + 0x10 + 160 + 2 * 80 + 64 + 16 + 16);

    let host = &fx.hosts.0[1];
    let arpk = unwrap_key_slot(&host.shared_secret, &parsed.key_slots[1]).unwrap();
    let opened = open_arcb(&arcb, &arpk).unwrap();
    assert_eq!(opened.measurement_key().expose(), secrets.measurement_key().expose());
    assert_eq!(opened.nonce(), secrets.nonce());
    assert_eq!(opened.flags(), secrets.flags());
    // A slot for another host does not open with this host's secret.
    assert_eq!(unwrap_key_slot(&host.shared_secret, &parsed.key_slots[0]).unwrap_err(), SeVerifyError::KeySlotUnwrap);

    assert_eq!(open_arcb(&arcb, &SeProtectionKey::from_bytes(&[0; 32])).unwrap_err(), SeVerifyError::ArcbDecrypt);
    for at in [0x10, 0x40, 0xE0, 0x150, arcb.len() - 40, arcb.len() - 1] {
        let mut t = arcb.clone();
        t[at] ^= 1;
        let e = open_arcb(&t, &arpk).unwrap_err();
        assert_eq!(e, SeVerifyError::ArcbDecrypt, "byte {at:#x}");
        assert_eq!(e.check(), "request");
    }
    let mut t = arcb.clone();
    t[0x33] = 1;
    assert_eq!(open_arcb(&t, &arpk).unwrap_err(), SeVerifyError::Arcb(SeEvidenceError::UnknownFlags(1 << 32)));
    assert!(matches!(open_arcb(&arcb[..50], &arpk), Err(SeVerifyError::Arcb(_))));
    // The emulated Ultravisor refuses a request not made for its host.
    let other = HostSet(vec![EmulatedHost::new(0x10)]);
    let arcb = build_arcb(&secrets, &other, &fx.rng).unwrap();
    assert_eq!(fx.uv.perform(&arcb, &[]).err(), Some("no key slot for this host"));
    // A wrapper that returns no slots.
    struct Nobody;
    impl SeHostKeyWrap for Nobody {
        fn wrap(
            &self,
            _: &SeProtectionKey,
        ) -> Result<([u8; 160], Vec<cloister_evidence::se::SeArcbKeySlot>), SeVerifyError> {
            Ok(([0; 160], vec![]))
        }
    }
    assert!(matches!(build_arcb(&secrets, &Nobody, &fx.rng), Err(SeVerifyError::KeyWrap(_))));
}

#[test]
fn pvattest_exchange_response_verifies() {
    let fx = fixture();
    let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &fx.rng).unwrap();
    let arcb = build_arcb(&secrets, &fx.hosts, &fx.rng).unwrap();
    let out = fx.uv.perform(&arcb, b"hello").unwrap();
    let exchange = PvattestExchangeResponse {
        arcb,
        measurement: out.measurement,
        additional: Some(out.additional),
        user_data: Some(b"hello".to_vec()),
        cuid: out.cuid,
    };
    let bytes = exchange.to_bytes();
    let parsed = PvattestExchangeResponse::from_bytes(&bytes).unwrap();
    let hdr_tags = BootHdrTags::from_array(&fx.header.boot_hdr_tags());
    let resp = SeAttestationResponse::from_exchange(&parsed, hdr_tags).unwrap();
    let v = verify_se_response(&resp, &copy_secrets(&secrets), &fx.reference, Some(b"hello")).unwrap_err();
    // "hello" is shorter than 64 bytes of report data: trustee's zero-padding rule applies.
    assert_eq!(v, SeVerifyError::ReportDataMismatch);
    let v = verify_se_response(&resp, &secrets, &fx.reference, None).unwrap();
    assert_eq!(v.claims()["se.user_data"], hex::encode(b"hello"));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let key = [0xAB; 64];
    let s =
        SeRequestSecrets::new(SeMeasurementKey::from_bytes(&key), Some([0xCD; 16]), AttestationFlags::TRUSTEE).unwrap();
    for text in [
        format!("{s:?}"),
        format!("{:?}", s.measurement_key()),
        format!("{:?}", SeProtectionKey::from_bytes(&[0xAB; 32])),
        format!("{:?}", SeSecretSealer::new(&[0xAB; 32]).unwrap()),
    ] {
        assert!(!text.to_lowercase().contains("abab"), "{text}");
        assert!(!text.contains("171"), "{text}");
        assert!(!text.to_lowercase().contains("cdcd") && !text.contains("205"), "{text}");
    }
}

#[test]
fn errors_are_one_line_with_check_names() {
    let errors = [
        SeVerifyError::Json("x".into()),
        SeVerifyError::HmacMismatch,
        SeVerifyError::MeasurementLength { len: 1 },
        SeVerifyError::NoImageReference,
        SeVerifyError::ImageTagNotAllowed { tag: "00".into() },
        SeVerifyError::ImagePhkhMissing,
        SeVerifyError::AttestationPhkhMissing,
        SeVerifyError::ReportDataMismatch,
        SeVerifyError::NonceFlagMismatch { flagged: false, present: true },
        SeVerifyError::ArcbDecrypt,
        SeVerifyError::SealedSecrets("x"),
        SeVerifyError::Random,
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.is_empty(), "{s}");
        assert!(!e.check().is_empty() && !e.check().contains(' '));
    }
    assert_eq!(SeVerifyError::HmacMismatch.check(), "measurement");
    assert_eq!(
        SeVerifyError::NonceFlagMismatch { flagged: false, present: true }.to_string(),
        "SE request secrets: nonce flag is false but a nonce is present"
    );
}

#[test]
fn sha512_report_data_fixture_is_64_bytes() {
    // The KBS protocol puts a SHA-512 digest in SE user data.
    assert_eq!(report_data().len(), Sha512Digest::LEN);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let secrets = SeRequestSecrets::new(SeMeasurementKey::from_bytes(&[1; 64]), Some([2; 16]), AttestationFlags::TRUSTEE).unwrap();
        let reference = SeReference::new();
        let _ = parse_se_evidence(&bytes);
        prop_assert!(verify_se_evidence(&bytes, &secrets, &reference, Some(&bytes[..bytes.len().min(64)])).is_err());
        let _ = open_arcb(&bytes, &SeProtectionKey::from_bytes(&[3; 32]));
        let _ = PvattestExchangeResponse::from_bytes(&bytes);
        let sealer = SeSecretSealer::new(&[4; 32]).unwrap();
        let (a, b) = bytes.split_at(bytes.len() / 2);
        prop_assert!(sealer.unseal(a, b).is_err());
    }

    #[test]
    fn random_responses_never_panic_nor_verify(
        measurement in proptest::collection::vec(any::<u8>(), 0..130),
        additional in proptest::collection::vec(any::<u8>(), 0..200),
        user in proptest::collection::vec(any::<u8>(), 0..300),
        cuid in any::<[u8; 16]>(),
        tag in any::<[u8; 16]>(),
        flag_bits in any::<u8>(),
    ) {
        let flags = AttestationFlags(u64::from(flag_bits & 0x1F) << 58).with(SeAttestationFlag::Nonce);
        let secrets = SeRequestSecrets::new(SeMeasurementKey::from_bytes(&[1; 64]), Some([2; 16]), flags).unwrap();
        let resp = SeAttestationResponse {
            measurement,
            additional_data: additional,
            user_data: user,
            cuid,
            encr_measurement_key: vec![],
            encr_request_nonce: vec![],
            image_hdr_tags: BootHdrTags { pld: [0; 64], ald: [0; 64], tld: [0; 64], tag },
        };
        let reference = SeReference::from_reference_values(&cloister_measure::se::SeReferenceValues {
            version: 256,
            tag,
            image_phkh: vec![],
        });
        prop_assert!(verify_se_response(&resp, &secrets, &reference, None).is_err());
    }

    #[test]
    fn mutated_valid_json_never_panics_and_never_changes_what_verifies(pos in any::<usize>(), byte in any::<u8>()) {
        let fx = fixture();
        let (resp, secrets) = fx.round(AttestationFlags::TRUSTEE);
        let json = serde_json::to_vec(&resp).unwrap();
        let mut m = json.clone();
        let p = pos % m.len();
        m[p] = byte;
        if let Ok(v) = verify_se_evidence(&m, &secrets, &fx.reference, Some(&report_data())) {
            let again = parse_se_evidence(&m).unwrap();
            prop_assert_eq!(again.measurement, resp.measurement);
            prop_assert_eq!(v.user_data, resp.user_data);
            prop_assert_eq!(v.cuid, resp.cuid);
            prop_assert_eq!(again.additional_data, resp.additional_data);
            prop_assert_eq!(again.image_hdr_tags, resp.image_hdr_tags);
        }
    }
}

#[test]
fn generated_secrets_are_fresh() {
    let rng = SystemRandom::new();
    let a = SeRequestSecrets::generate(AttestationFlags::empty(), &rng).unwrap();
    let b = SeRequestSecrets::generate(AttestationFlags::empty(), &rng).unwrap();
    assert!(a.flags().contains(SeAttestationFlag::Nonce), "a nonce is always used");
    assert_ne!(a.measurement_key().expose(), b.measurement_key().expose());
    assert_ne!(a.nonce(), b.nonce());
    assert_eq!(a.additional_size(), 0);
    assert_eq!(a.measurement_size(), 64);
    let mut x = [0u8; 8];
    rng.fill(&mut x).unwrap();
    assert_eq!(SeRequestSecrets::generate(AttestationFlags(1), &rng).unwrap_err(), SeVerifyError::UnknownFlags(1));
}
