//! IBM Z host-key documents (HKDs): which machines an SE attestation request may be encrypted
//! to, and the P-521 ECDH that encrypts it.
//!
//! An HKD is an X.509 certificate holding a machine's P-521 host key, signed by IBM's *host key
//! signing key* (a certificate whose subject is `O=International Business Machines Corporation,
//! OU=IBM Z Host Key Signing Service`), which in turn chains to a root (DigiCert for IBM; the
//! emulated IBM root for `cloister emulate`). [`HostKeyAuthority::verify`] checks that chain:
//! every signature (ECDSA P-256/P-384/P-521, RSA PKCS#1 v1.5 and PSS with SHA-256/384/512, via
//! aws-lc-rs), every validity period, the CA flag of every certificate that signs certificates,
//! the signing key's subject, and the HKD's serial against the CRLs given (a CRL must be signed
//! by the HKD's issuer and current). Only then does [`HostKey`] exist, and only a [`HostKey`]
//! can receive a key slot ([`P521HostKeyWrap`]).
//!
//! The request's customer key is a fresh P-521 key per request; each key slot wraps the request
//! protection key under the ECDH shared secret of that key and one host key
//! ([`super::wrap_key_slot`]). The PHKH of a host is SHA-256 of its public key's X‖Y, each
//! zero-padded to 80 bytes (s390-tools `phkh_v1`).
//!
//! **What it trusts:** the roots it is given, aws-lc-rs, x509-parser's DER decoding. HKDs,
//! intermediate certificates and CRLs are untrusted input.

use aws_lc_rs::agreement;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use cloister_evidence::se::{CUSTOMER_KEY_LEN, PHKH_LEN, SeArcbKeySlot};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::{SeHostKeyWrap, SeProtectionKey, SeVerifyError, wrap_key_slot};

/// Length of a P-521 affine coordinate.
pub const P521_COORD_LEN: usize = 66;
/// Length of an uncompressed P-521 point (`04 ‖ X ‖ Y`).
pub const P521_POINT_LEN: usize = 1 + 2 * P521_COORD_LEN;
/// Coordinate width in the ARCB and in the PHKH input.
const COORD_SLOT: usize = CUSTOMER_KEY_LEN / 2;
/// Longest chain walked from a signing key to a root.
const MAX_CHAIN: usize = 6;
/// Organisation of IBM's host key signing key.
pub const IBM_ORGANISATION: &str = "International Business Machines Corporation";
/// Organisational unit of IBM's host key signing key.
pub const IBM_SIGNING_UNIT: &str = "IBM Z Host Key Signing Service";

/// Why a host-key document or its chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostKeyError {
    /// Not a DER or PEM certificate / CRL.
    #[error("{what} is not a valid X.509 {kind}: {detail}")]
    Parse {
        /// Which input.
        what: String,
        /// `certificate` or `CRL`.
        kind: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The HKD's key is not an EC P-521 key.
    #[error("host-key document {subject:?} does not hold an EC P-521 public key")]
    NotP521 {
        /// The HKD subject.
        subject: String,
    },
    /// A certificate is outside its validity period.
    #[error("{subject:?} is not valid at {now} (valid {not_before}..{not_after})")]
    Expired {
        /// Certificate subject.
        subject: String,
        /// Time checked.
        now: i64,
        /// Start.
        not_before: i64,
        /// End.
        not_after: i64,
    },
    /// No given certificate issued (and verifiably signed) this one.
    #[error("no trusted issuer signed {subject:?} (issuer {issuer:?})")]
    NoIssuer {
        /// Certificate subject.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// The HKD's issuer is not an IBM Z host key signing key.
    #[error("the issuer of host-key document {subject:?} is not an IBM Z Host Key Signing Service key ({issuer:?})")]
    NotHostKeySigningKey {
        /// HKD subject.
        subject: String,
        /// The signing certificate's subject.
        issuer: String,
    },
    /// A certificate that signs certificates is not a CA.
    #[error("{subject:?} signs certificates but is not a CA")]
    NotCa {
        /// Certificate subject.
        subject: String,
    },
    /// The outer and TBS signature algorithms differ, or the algorithm is unsupported.
    #[error("{subject:?}: {detail}")]
    SignatureAlgorithm {
        /// Certificate / CRL subject.
        subject: String,
        /// What is wrong.
        detail: String,
    },
    /// The HKD's serial is on a CRL of its issuer.
    #[error("host-key document {subject:?} is revoked")]
    Revoked {
        /// HKD subject.
        subject: String,
    },
    /// A CRL of the HKD's issuer is not current or not signed by it.
    #[error("CRL of {issuer:?}: {detail}")]
    Crl {
        /// The CRL issuer.
        issuer: String,
        /// What is wrong.
        detail: String,
    },
    /// The chain is longer than allowed.
    #[error("certificate chain of {subject:?} is longer than {MAX_CHAIN}")]
    ChainTooLong {
        /// HKD subject.
        subject: String,
    },
    /// No host-key document was given.
    #[error("no host-key documents configured: an SE request must be encrypted to at least one host")]
    NoHosts,
}

/// Decodes PEM (any number of blocks of `label`) or a single DER object.
pub fn pem_or_der_all(bytes: &[u8], label: &str) -> Vec<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(bytes) else { return vec![bytes.to_vec()] };
    if !text.contains("-----BEGIN") {
        return vec![bytes.to_vec()];
    }
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let b64: String = body[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64) {
            out.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    out
}

fn parse_cert<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, HostKeyError> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => {
            Err(HostKeyError::Parse { what: what.to_owned(), kind: "certificate", detail: "trailing bytes".into() })
        }
        Err(e) => Err(HostKeyError::Parse { what: what.to_owned(), kind: "certificate", detail: e.to_string() }),
    }
}

fn same_algorithm(a: &AlgorithmIdentifier<'_>, b: &AlgorithmIdentifier<'_>) -> bool {
    a.algorithm == b.algorithm
        && a.parameters.as_ref().map(|p| (p.tag(), p.data)) == b.parameters.as_ref().map(|p| (p.tag(), p.data))
}

fn curve_of(spki: &SubjectPublicKeyInfo<'_>) -> Option<Oid<'static>> {
    if spki.algorithm.algorithm != oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_owned())
}

/// The aws-lc-rs verification algorithm for a signature algorithm and signer key.
fn verification_algorithm(
    sig_alg: &AlgorithmIdentifier<'_>,
    signer: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn VerificationAlgorithm, String> {
    use oid_registry::*;
    let a = &sig_alg.algorithm;
    if let Some(curve) = curve_of(signer) {
        let (p256, p384, p521) = (curve == OID_EC_P256, curve == OID_NIST_EC_P384, curve == OID_NIST_EC_P521);
        let alg: &'static dyn VerificationAlgorithm = match () {
            _ if *a == OID_SIG_ECDSA_WITH_SHA256 && p256 => &signature::ECDSA_P256_SHA256_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA384 && p256 => &signature::ECDSA_P256_SHA384_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA256 && p384 => &signature::ECDSA_P384_SHA256_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA384 && p384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA512 && p384 => &signature::ECDSA_P384_SHA512_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA384 && p521 => &signature::ECDSA_P521_SHA384_ASN1,
            _ if *a == OID_SIG_ECDSA_WITH_SHA512 && p521 => &signature::ECDSA_P521_SHA512_ASN1,
            _ => return Err(format!("signature algorithm {a} with EC curve {curve} is not supported")),
        };
        return Ok(alg);
    }
    if signer.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
        return Err(format!("signer key type {} is not supported", signer.algorithm.algorithm));
    }
    let alg: &'static dyn VerificationAlgorithm = match () {
        _ if *a == OID_PKCS1_SHA256WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ if *a == OID_PKCS1_SHA384WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA384,
        _ if *a == OID_PKCS1_SHA512WITHRSA => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ if *a == OID_PKCS1_RSASSAPSS => rsa_pss_algorithm(sig_alg)?,
        _ => return Err(format!("signature algorithm {a} with an RSA key is not supported")),
    };
    Ok(alg)
}

/// The aws-lc-rs algorithm for RSASSA-PSS parameters (RFC 4055): the hash must be SHA-256,
/// SHA-384 or SHA-512, the mask generation MGF1 with the same hash, the salt as long as the hash
/// and the trailer field 1, the only profiles aws-lc-rs verifies. Absent fields take the RFC's
/// defaults (SHA-1, salt 20), which are refused.
fn rsa_pss_algorithm(sig_alg: &AlgorithmIdentifier<'_>) -> Result<&'static dyn VerificationAlgorithm, String> {
    use oid_registry::*;
    use x509_parser::signature_algorithm::SignatureAlgorithm;
    let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(sig_alg) else {
        return Err("RSASSA-PSS parameters do not parse".into());
    };
    let hash = params.hash_algorithm_oid();
    let (alg, len): (&'static dyn VerificationAlgorithm, u32) = match () {
        _ if *hash == OID_NIST_HASH_SHA256 => (&signature::RSA_PSS_2048_8192_SHA256, 32),
        _ if *hash == OID_NIST_HASH_SHA384 => (&signature::RSA_PSS_2048_8192_SHA384, 48),
        _ if *hash == OID_NIST_HASH_SHA512 => (&signature::RSA_PSS_2048_8192_SHA512, 64),
        _ => return Err(format!("RSASSA-PSS with hash {hash} (only SHA-256/384/512)")),
    };
    let mgf = params.mask_gen_algorithm().map_err(|e| format!("RSASSA-PSS mask generation: {e}"))?;
    // id-mgf1 (RFC 8017 appendix B.2.1); oid-registry has no name for it.
    if mgf.mgf.to_id_string() != "1.2.840.113549.1.1.8" || mgf.hash != *hash {
        return Err(format!(
            "RSASSA-PSS mask generation {} with {} (only MGF1 with the signature's hash)",
            mgf.mgf, mgf.hash
        ));
    }
    if params.salt_length() != len || params.trailer_field() != 1 {
        return Err(format!(
            "RSASSA-PSS salt length {} and trailer field {} (only {len} and 1)",
            params.salt_length(),
            params.trailer_field()
        ));
    }
    Ok(alg)
}

fn check_signature(
    subject: &str,
    tbs: &[u8],
    tbs_alg: &AlgorithmIdentifier<'_>,
    outer_alg: &AlgorithmIdentifier<'_>,
    signature_value: &[u8],
    signer: &SubjectPublicKeyInfo<'_>,
) -> Result<bool, HostKeyError> {
    if !same_algorithm(tbs_alg, outer_alg) {
        return Err(HostKeyError::SignatureAlgorithm {
            subject: subject.to_owned(),
            detail: "the outer signature algorithm differs from the signed one".into(),
        });
    }
    let alg = verification_algorithm(outer_alg, signer)
        .map_err(|detail| HostKeyError::SignatureAlgorithm { subject: subject.to_owned(), detail })?;
    let key = UnparsedPublicKey::new(alg, &signer.subject_public_key.data);
    Ok(key.verify(tbs, signature_value).is_ok())
}

fn verify_cert_signature(c: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<bool, HostKeyError> {
    if c.issuer().as_raw() != issuer.subject().as_raw() {
        return Ok(false);
    }
    check_signature(
        &c.subject().to_string(),
        c.tbs_certificate.as_ref(),
        &c.tbs_certificate.signature,
        &c.signature_algorithm,
        &c.signature_value.data,
        issuer.public_key(),
    )
}

fn check_validity(c: &X509Certificate<'_>, now: i64) -> Result<(), HostKeyError> {
    let (nb, na) = (c.validity().not_before.timestamp(), c.validity().not_after.timestamp());
    if now < nb || now > na {
        return Err(HostKeyError::Expired { subject: c.subject().to_string(), now, not_before: nb, not_after: na });
    }
    Ok(())
}

fn check_ca(c: &X509Certificate<'_>) -> Result<(), HostKeyError> {
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(()),
        _ => Err(HostKeyError::NotCa { subject: c.subject().to_string() }),
    }
}

fn name_has(c: &X509Certificate<'_>, o: &[&str], ou: &[&str]) -> bool {
    let s = c.subject();
    let org: Vec<&str> = s.iter_organization().filter_map(|a| a.as_str().ok()).collect();
    let unit: Vec<&str> = s.iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect();
    o.iter().all(|x| org.contains(x)) && ou.iter().all(|x| unit.contains(x))
}

/// Where a verified host key's chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyRoot {
    /// A root configured as a real IBM/DigiCert root.
    Ibm,
    /// A root configured as emulated (`cloister emulate`); evidence is labelled `emulated_se`.
    Emulated,
}

/// A verified host key: may receive key slots.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    point: [u8; P521_POINT_LEN],
    phkh: [u8; PHKH_LEN],
    subject: String,
    root: HostKeyRoot,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("subject", &self.subject)
            .field("phkh", &hex::encode(self.phkh))
            .field("root", &self.root)
            .finish()
    }
}

impl HostKey {
    /// The uncompressed P-521 point.
    pub fn point(&self) -> &[u8; P521_POINT_LEN] {
        &self.point
    }

    /// SHA-256 of X‖Y padded to 80 bytes each (`se.attestation_phkh` for this host).
    pub fn phkh(&self) -> [u8; PHKH_LEN] {
        self.phkh
    }

    /// The HKD's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Which kind of root its chain ends at.
    pub fn root(&self) -> HostKeyRoot {
        self.root
    }
}

/// X‖Y of an uncompressed P-521 point, each left-padded to 80 bytes (ARCB customer-key and PHKH
/// layout).
pub fn point_to_coords(point: &[u8; P521_POINT_LEN]) -> [u8; CUSTOMER_KEY_LEN] {
    let mut out = [0u8; CUSTOMER_KEY_LEN];
    let pad = COORD_SLOT - P521_COORD_LEN;
    out[pad..COORD_SLOT].copy_from_slice(&point[1..=P521_COORD_LEN]);
    out[COORD_SLOT + pad..].copy_from_slice(&point[1 + P521_COORD_LEN..]);
    out
}

/// The inverse of [`point_to_coords`]; `None` if the padding is not zero.
pub fn coords_to_point(coords: &[u8; CUSTOMER_KEY_LEN]) -> Option<[u8; P521_POINT_LEN]> {
    let pad = COORD_SLOT - P521_COORD_LEN;
    if coords[..pad].iter().chain(&coords[COORD_SLOT..COORD_SLOT + pad]).any(|b| *b != 0) {
        return None;
    }
    let mut p = [0u8; P521_POINT_LEN];
    p[0] = 4;
    p[1..=P521_COORD_LEN].copy_from_slice(&coords[pad..COORD_SLOT]);
    p[1 + P521_COORD_LEN..].copy_from_slice(&coords[COORD_SLOT + pad..]);
    Some(p)
}

/// SHA-256 of the padded coordinates of `point`.
pub fn phkh_of_point(point: &[u8; P521_POINT_LEN]) -> [u8; PHKH_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, &point_to_coords(point));
    let mut out = [0u8; PHKH_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// The roots, intermediates, signing keys and CRLs host-key documents are checked against.
#[derive(Debug, Default, Clone)]
pub struct HostKeyAuthority {
    roots: Vec<(Vec<u8>, HostKeyRoot)>,
    certs: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

impl HostKeyAuthority {
    /// Nothing trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts a root certificate (DER).
    pub fn with_root(mut self, der: &[u8], kind: HostKeyRoot) -> Result<Self, HostKeyError> {
        parse_cert("root", der)?;
        self.roots.push((der.to_vec(), kind));
        Ok(self)
    }

    /// Adds an intermediate or host key signing certificate (DER; untrusted until chained).
    pub fn with_cert(mut self, der: &[u8]) -> Result<Self, HostKeyError> {
        parse_cert("intermediate", der)?;
        self.certs.push(der.to_vec());
        Ok(self)
    }

    /// Adds a CRL (DER) of a host key signing key.
    pub fn with_crl(mut self, der: &[u8]) -> Result<Self, HostKeyError> {
        CertificateRevocationList::from_der(der).map_err(|e| HostKeyError::Parse {
            what: "crl".into(),
            kind: "CRL",
            detail: e.to_string(),
        })?;
        self.crls.push(der.to_vec());
        Ok(self)
    }

    /// Verifies one host-key document (DER) at `now` (UNIX seconds) and returns its key.
    pub fn verify(&self, hkd_der: &[u8], now: i64) -> Result<HostKey, HostKeyError> {
        let hkd = parse_cert("host-key document", hkd_der)?;
        let subject = hkd.subject().to_string();
        if curve_of(hkd.public_key()) != Some(oid_registry::OID_NIST_EC_P521.to_owned()) {
            return Err(HostKeyError::NotP521 { subject });
        }
        let point: [u8; P521_POINT_LEN] = hkd
            .public_key()
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .ok()
            .filter(|p: &[u8; P521_POINT_LEN]| p[0] == 4)
            .ok_or_else(|| HostKeyError::NotP521 { subject: subject.clone() })?;
        check_validity(&hkd, now)?;

        let certs: Vec<X509Certificate<'_>> =
            self.certs.iter().map(|d| parse_cert("intermediate", d)).collect::<Result<_, _>>()?;
        let roots: Vec<(X509Certificate<'_>, HostKeyRoot)> =
            self.roots.iter().map(|(d, k)| parse_cert("root", d).map(|c| (c, *k))).collect::<Result<_, _>>()?;

        // The HKD's issuer: a host key signing key (not necessarily a CA).
        let mut signer = None;
        for c in certs.iter().chain(roots.iter().map(|(c, _)| c)) {
            if verify_cert_signature(&hkd, c)? {
                signer = Some(c);
                break;
            }
        }
        let signer = signer
            .ok_or_else(|| HostKeyError::NoIssuer { subject: subject.clone(), issuer: hkd.issuer().to_string() })?;
        if !name_has(signer, &[IBM_ORGANISATION], &[IBM_SIGNING_UNIT]) {
            return Err(HostKeyError::NotHostKeySigningKey { subject, issuer: signer.subject().to_string() });
        }
        check_validity(signer, now)?;
        self.check_crls(&hkd, signer, now)?;

        // From the signing key up to a root.
        let mut current = signer;
        for _ in 0..MAX_CHAIN {
            if let Some((_, kind)) = roots.iter().find(|(r, _)| r.as_ref() == current.as_ref()) {
                tracing::debug!(hkd = %subject, root = ?kind, "host-key document verified");
                return Ok(HostKey { point, phkh: phkh_of_point(&point), subject, root: *kind });
            }
            let mut next = None;
            for (c, _) in roots.iter().map(|(c, k)| (c, Some(*k))).chain(certs.iter().map(|c| (c, None))) {
                if c.as_ref() != current.as_ref() && verify_cert_signature(current, c)? {
                    next = Some(c);
                    break;
                }
            }
            let issuer = next.ok_or_else(|| HostKeyError::NoIssuer {
                subject: current.subject().to_string(),
                issuer: current.issuer().to_string(),
            })?;
            check_ca(issuer)?;
            check_validity(issuer, now)?;
            current = issuer;
        }
        Err(HostKeyError::ChainTooLong { subject })
    }

    fn check_crls(
        &self,
        hkd: &X509Certificate<'_>,
        signer: &X509Certificate<'_>,
        now: i64,
    ) -> Result<(), HostKeyError> {
        let issuer = signer.subject().to_string();
        for der in &self.crls {
            let Ok((_, crl)) = CertificateRevocationList::from_der(der) else { continue };
            if crl.issuer().as_raw() != signer.subject().as_raw() {
                continue;
            }
            let signed = check_signature(
                &issuer,
                crl.tbs_cert_list.as_ref(),
                &crl.tbs_cert_list.signature,
                &crl.signature_algorithm,
                &crl.signature_value.data,
                signer.public_key(),
            )
            .map_err(|e| HostKeyError::Crl { issuer: issuer.clone(), detail: e.to_string() })?;
            if !signed {
                return Err(HostKeyError::Crl { issuer, detail: "signature does not verify".into() });
            }
            if crl.next_update().is_some_and(|t| t.timestamp() < now) || crl.last_update().timestamp() > now {
                return Err(HostKeyError::Crl { issuer, detail: format!("not current at {now}") });
            }
            if crl.iter_revoked_certificates().any(|r| r.raw_serial() == hkd.raw_serial()) {
                return Err(HostKeyError::Revoked { subject: hkd.subject().to_string() });
            }
        }
        Ok(())
    }
}

/// Wraps request protection keys for verified host keys with a fresh P-521 customer key.
#[derive(Debug, Clone)]
pub struct P521HostKeyWrap {
    hosts: Vec<HostKey>,
}

impl P521HostKeyWrap {
    /// For these hosts (at least one, at most 255).
    pub fn new(hosts: Vec<HostKey>) -> Result<Self, HostKeyError> {
        if hosts.is_empty() {
            return Err(HostKeyError::NoHosts);
        }
        Ok(Self { hosts })
    }

    /// The hosts.
    pub fn hosts(&self) -> &[HostKey] {
        &self.hosts
    }
}

impl SeHostKeyWrap for P521HostKeyWrap {
    fn wrap(&self, arpk: &SeProtectionKey) -> Result<([u8; CUSTOMER_KEY_LEN], Vec<SeArcbKeySlot>), SeVerifyError> {
        let crypto = |what: &'static str| move |_| SeVerifyError::Crypto(what);
        let customer = agreement::PrivateKey::generate(&agreement::ECDH_P521).map_err(crypto("P-521 key"))?;
        let public = customer.compute_public_key().map_err(crypto("P-521 public key"))?;
        let point: [u8; P521_POINT_LEN] =
            public.as_ref().try_into().map_err(|_| SeVerifyError::Crypto("P-521 public key"))?;
        let mut slots = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P521, &host.point[..]);
            let slot = agreement::agree(&customer, peer, SeVerifyError::Crypto("P-521 ECDH"), |z| {
                wrap_key_slot(z, host.phkh, arpk)
            })?;
            slots.push(slot);
        }
        // The customer key is dropped here: nobody but the hosts can recompute the slots' keys.
        Ok((point_to_coords(&point), slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body = parts.concat();
        let mut out = vec![tag, u8::try_from(body.len()).unwrap()];
        out.extend(body);
        out
    }

    const OID_PSS: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    const OID_MGF1: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
    const NULL: &[u8] = &[0x05, 0x00];

    fn sha2(last: u8) -> Vec<u8> {
        tlv(0x30, &[&[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last], NULL])
    }

    /// RSASSA-PSS-params (RFC 4055) built field by field; `None` leaves a field at its default.
    fn pss(hash: Option<u8>, mgf_hash: Option<u8>, salt: Option<u8>) -> Vec<u8> {
        let mut fields = Vec::new();
        if let Some(h) = hash {
            fields.push(tlv(0xa0, &[&sha2(h)]));
        }
        if let Some(h) = mgf_hash {
            fields.push(tlv(0xa1, &[&tlv(0x30, &[OID_MGF1, &sha2(h)])]));
        }
        if let Some(s) = salt {
            fields.push(tlv(0xa2, &[&[0x02, 0x01, s]]));
        }
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        tlv(0x30, &[OID_PSS, &tlv(0x30, &refs)])
    }

    fn check(der: &[u8]) -> Result<(), String> {
        let (_, alg) = AlgorithmIdentifier::from_der(der).unwrap();
        rsa_pss_algorithm(&alg).map(|_| ())
    }

    #[test]
    fn rsa_pss_parameters_are_parsed_not_searched() {
        // SHA-256/384/512 with MGF1 of the same hash and a salt of the hash's length.
        check(&pss(Some(1), Some(1), Some(32))).unwrap();
        check(&pss(Some(2), Some(2), Some(48))).unwrap();
        check(&pss(Some(3), Some(3), Some(64))).unwrap();
        // Defaults are SHA-1, MGF1-SHA-1 and a salt of 20: refused.
        assert!(check(&pss(None, None, None)).unwrap_err().contains("hash"));
        // A salt of another length, MGF1 over another hash, or a missing MGF (SHA-1 default).
        assert!(check(&pss(Some(1), Some(1), Some(20))).unwrap_err().contains("salt"));
        assert!(check(&pss(Some(2), Some(1), Some(48))).unwrap_err().contains("mask generation"));
        assert!(check(&pss(Some(1), None, Some(32))).unwrap_err().contains("mask generation"));
        // The hash's OID inside the MGF only (the old byte search would have taken it).
        assert!(check(&pss(None, Some(1), Some(32))).is_err());
    }
}
