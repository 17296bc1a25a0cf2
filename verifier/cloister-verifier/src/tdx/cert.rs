//! X.509 certificates and CRLs of Intel's DCAP PKI, reduced to what the verifier checks, and
//! ECDSA P-256 signature verification with ring.
//!
//! Every certificate and CRL in the DCAP PKI is signed with ECDSA P-256 / SHA-256 and every key is
//! a P-256 key; anything else is rejected rather than handled generically. Signatures are verified
//! over the exact `tbsCertificate` / `tbsCertList` bytes as encoded.
//!
//! **What it trusts:** nothing. Certificates and CRLs are untrusted input parsed with x509-parser;
//! the Intel SGX extension is decoded with the strict reader in [`super::der`].

use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::nom::Parser;
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::AlgorithmIdentifier;

use super::der::{
    DerReader, TAG_BOOLEAN, TAG_ENUMERATED, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, Tlv,
    basic_constraints_is_ca, parse_der_time, unsigned,
};

/// DER content of OID 1.2.840.10045.4.3.2 (ecdsa-with-SHA256).
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// DER content of OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER content of OID 1.2.840.10045.3.1.7 (prime256v1).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER content of OID 2.5.29.19 (basicConstraints).
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
/// DER content of OID 2.5.29.15 (keyUsage).
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
/// DER content of OID 1.2.840.113741.1.13.1 (Intel SGX extension).
const OID_SGX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

/// Verifies an ECDSA P-256 / SHA-256 signature in DER form.
pub(crate) fn verify_der_sig(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key).verify(message, signature).is_ok()
}

/// Verifies an ECDSA P-256 / SHA-256 signature given as raw `r ‖ s`.
pub(crate) fn verify_raw_sig(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key).verify(message, signature).is_ok()
}

/// The uncompressed SEC1 point (`04 ‖ x ‖ y`) of a raw `x ‖ y` key.
pub(crate) fn sec1_point(raw: &[u8; 64]) -> [u8; 65] {
    let mut p = [4u8; 65];
    p[1..].copy_from_slice(raw);
    p
}

/// DER content of the AlgorithmIdentifier SEQUENCE for ecdsa-with-SHA256 (no parameters).
const ALG_ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// Checks the unsigned envelope of a certificate or CRL byte for byte: `SEQUENCE { SEQUENCE tbs,
/// SEQUENCE { ecdsa-with-SHA256 }, BIT STRING (no unused bits) }` with nothing after it. The
/// signature covers only `tbs`, so everything else must be exactly as expected.
fn check_envelope(der: &[u8]) -> Result<(), String> {
    let mut outer = DerReader::new(der);
    let body = outer.expect(TAG_SEQUENCE, "not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err("trailing bytes after the outer SEQUENCE".into());
    }
    let mut r = DerReader::new(body);
    r.expect(TAG_SEQUENCE, "to-be-signed part is not a SEQUENCE")?;
    if r.expect(TAG_SEQUENCE, "signatureAlgorithm is not a SEQUENCE")? != ALG_ECDSA_SHA256 {
        return Err("signature algorithm is not ecdsa-with-SHA256".into());
    }
    if r.expect(0x03, "signature is not a BIT STRING")?.first() != Some(&0) {
        return Err("signature BIT STRING has unused bits".into());
    }
    if !r.is_empty() {
        return Err("extra fields after the signature".into());
    }
    Ok(())
}

fn is_ecdsa_sha256(alg: &AlgorithmIdentifier<'_>) -> bool {
    // RFC 5758: the parameters field is absent for ecdsa-with-SHA256.
    alg.algorithm.as_bytes() == OID_ECDSA_SHA256 && alg.parameters.is_none()
}

/// The facts about a certificate the verifier uses, owned.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub tbs: Vec<u8>,
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    /// keyUsage bits (bit 0 = digitalSignature … bit 5 = keyCertSign, bit 6 = cRLSign), if present.
    pub key_usage: Option<u16>,
    /// The raw value of the Intel SGX extension, if present.
    pub sgx_extension: Option<Vec<u8>>,
}

impl CertInfo {
    /// Parses a DER certificate; requires ECDSA P-256 / SHA-256 and a P-256 key, and rejects
    /// unknown critical extensions.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        check_envelope(der)?;
        let mut parser = X509CertificateParser::new().with_deep_parse_extensions(false);
        let (rest, cert): (_, X509Certificate<'_>) =
            parser.parse(der).map_err(|e| format!("not a certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        if !is_ecdsa_sha256(&cert.signature_algorithm) || !is_ecdsa_sha256(&cert.tbs_certificate.signature) {
            return Err("signature algorithm is not ecdsa-with-SHA256".into());
        }
        let spki = cert.public_key();
        let p256 = spki
            .algorithm
            .parameters
            .as_ref()
            .is_some_and(|p| p.tag() == x509_parser::asn1_rs::Tag::Oid && p.data == OID_P256);
        if spki.algorithm.algorithm.as_bytes() != OID_EC_PUBLIC_KEY || !p256 {
            return Err("public key is not an ECDSA P-256 key".into());
        }
        let point = spki.subject_public_key.data.as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err("public key is not an uncompressed P-256 point".into());
        }
        let mut is_ca = false;
        let mut key_usage = None;
        let mut sgx_extension = None;
        for ext in cert.extensions() {
            let oid = ext.oid.as_bytes();
            if oid == OID_BASIC_CONSTRAINTS {
                is_ca = basic_constraints_is_ca(ext.value).map_err(|e| format!("basicConstraints: {e}"))?;
            } else if oid == OID_KEY_USAGE {
                key_usage = Some(parse_key_usage(ext.value)?);
            } else if oid == OID_SGX {
                if sgx_extension.is_some() {
                    return Err("duplicate Intel SGX extension".into());
                }
                sgx_extension = Some(ext.value.to_vec());
            } else if ext.critical {
                return Err(format!("unsupported critical extension {}", ext.oid));
            }
        }
        Ok(Self {
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            public_key: point.to_vec(),
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            serial: strip_leading_zeros(cert.raw_serial()).to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca,
            key_usage,
            sgx_extension,
        })
    }

    /// Whether `issuer` signed this certificate (name chaining is checked separately).
    pub fn signed_by(&self, issuer_key: &[u8]) -> bool {
        verify_der_sig(issuer_key, &self.tbs, &self.signature)
    }

    /// Whether the key may sign certificates (basicConstraints cA and, if present, keyCertSign).
    pub fn can_sign_certs(&self) -> bool {
        self.is_ca && self.key_usage.is_none_or(|ku| ku & (1 << 5) != 0)
    }

    /// Whether the key may sign CRLs (keyUsage cRLSign if keyUsage is present).
    pub fn can_sign_crls(&self) -> bool {
        self.key_usage.is_none_or(|ku| ku & (1 << 6) != 0)
    }

    /// Validity window in UNIX seconds (clamped at 0).
    pub fn validity(&self) -> (u64, u64) {
        (u64::try_from(self.not_before).unwrap_or(0), u64::try_from(self.not_after).unwrap_or(0))
    }
}

/// Rejects a list of extensions with a critical one (none are defined for Intel's CRLs, and a
/// critical extension we do not understand, e.g. delta-CRL or issuing-distribution-point
/// scoping, means the CRL cannot be interpreted).
fn check_extensions(list: &[u8]) -> Result<(), String> {
    let mut r = DerReader::new(list);
    while !r.is_empty() {
        let mut ext = DerReader::new(r.expect(TAG_SEQUENCE, "extension is not a SEQUENCE")?);
        ext.expect(TAG_OID, "extension has no OID")?;
        let next = ext.next_tlv()?;
        if next.tag == TAG_BOOLEAN && next.value.first().is_some_and(|b| *b != 0) {
            return Err("unsupported critical CRL extension".into());
        }
    }
    Ok(())
}

/// keyUsage is a BIT STRING; returns bits 0..=8 with bit 0 = digitalSignature.
fn parse_key_usage(value: &[u8]) -> Result<u16, String> {
    let mut r = DerReader::new(value);
    let bits = r.expect(0x03, "keyUsage is not a BIT STRING").map_err(String::from)?;
    let (_, data) = bits.split_first().ok_or("keyUsage: empty BIT STRING")?;
    let mut out = 0u16;
    for (i, byte) in data.iter().take(2).enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                out |= 1 << (i * 8 + bit);
            }
        }
    }
    Ok(out)
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count().min(b.len().saturating_sub(1));
    &b[n..]
}

/// A parsed CRL: dates, revoked serials, and what its signature covers.
#[derive(Debug, Clone)]
pub(crate) struct CrlInfo {
    pub tbs: Vec<u8>,
    pub signature: Vec<u8>,
    pub issuer: Vec<u8>,
    pub this_update: u64,
    pub next_update: u64,
    pub revoked: Vec<Vec<u8>>,
}

impl CrlInfo {
    /// Parses a DER CRL (v2, ECDSA P-256 / SHA-256) with the strict DER reader: only the issuer,
    /// the dates and the revoked serial numbers are kept; a critical extension (CRL or entry)
    /// makes the CRL uninterpretable and is rejected.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        check_envelope(der)?;
        let mut outer = DerReader::new(der);
        let mut r = DerReader::new(outer.expect(TAG_SEQUENCE, "not a SEQUENCE")?);
        let (tbs, tbs_raw) = r.next_raw()?;
        r.expect(TAG_SEQUENCE, "no signatureAlgorithm")?;
        let bits = r.expect(0x03, "no signature")?;
        let signature = bits.get(1..).ok_or("empty signature")?.to_vec();

        let mut t = DerReader::new(tbs.value);
        let mut item = t.next_tlv()?;
        if item.tag == TAG_INTEGER {
            if unsigned(item.value)? != 1 {
                return Err("not a v2 CRL".into());
            }
            item = t.next_tlv()?;
        }
        if item.tag != TAG_SEQUENCE || item.value != ALG_ECDSA_SHA256 {
            return Err("signature algorithm is not ecdsa-with-SHA256".into());
        }
        let (issuer, issuer_raw) = t.next_raw()?;
        if issuer.tag != TAG_SEQUENCE {
            return Err("issuer is not a Name".into());
        }
        let time = |tlv: Tlv<'_>, what: &str| {
            parse_der_time(tlv.tag, tlv.value).ok_or_else(|| format!("{what} is not a valid time"))
        };
        let this_update = time(t.next_tlv()?, "thisUpdate")?;
        let mut next = if t.is_empty() { None } else { Some(t.next_tlv()?) };
        let next_update = match next.take() {
            Some(tlv) if matches!(tlv.tag, 0x17 | 0x18) => time(tlv, "nextUpdate")?,
            _ => return Err("no nextUpdate".into()),
        };
        let mut revoked = Vec::new();
        while !t.is_empty() {
            let tlv = t.next_tlv()?;
            match tlv.tag {
                TAG_SEQUENCE if revoked.is_empty() => {
                    let mut entries = DerReader::new(tlv.value);
                    while !entries.is_empty() {
                        let mut e = DerReader::new(entries.expect(TAG_SEQUENCE, "revoked entry is not a SEQUENCE")?);
                        let serial = e.expect(TAG_INTEGER, "revoked entry has no serial number")?;
                        if !matches!(e.next_tlv()?.tag, 0x17 | 0x18) {
                            return Err("revocationDate is not a time".into());
                        }
                        if !e.is_empty() {
                            check_extensions(e.expect(TAG_SEQUENCE, "entry extensions are not a SEQUENCE")?)?;
                        }
                        if !e.is_empty() {
                            return Err("revoked entry has extra fields".into());
                        }
                        revoked.push(strip_leading_zeros(serial).to_vec());
                    }
                }
                0xa0 => {
                    let mut ext = DerReader::new(tlv.value);
                    check_extensions(ext.expect(TAG_SEQUENCE, "crlExtensions are not a SEQUENCE")?)?;
                    if !ext.is_empty() || !t.is_empty() {
                        return Err("data after crlExtensions".into());
                    }
                }
                _ => return Err("unexpected field in the CRL".into()),
            }
        }
        revoked.sort_unstable();
        Ok(Self { tbs: tbs_raw.to_vec(), signature, issuer: issuer_raw.to_vec(), this_update, next_update, revoked })
    }

    pub fn signed_by(&self, issuer_key: &[u8]) -> bool {
        verify_der_sig(issuer_key, &self.tbs, &self.signature)
    }

    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.revoked.binary_search_by(|s| s.as_slice().cmp(serial)).is_ok()
    }
}

/// What the verifier reads from the Intel SGX extension of a PCK leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PckExtension {
    pub fmspc: [u8; 6],
    pub pce_id: [u8; 2],
    /// SGX TCB components 1..=16 (`…13.1.2.1`–`.2.16`).
    pub tcb_components: [u8; 16],
    pub pce_svn: u16,
    pub cpu_svn: [u8; 16],
}

/// The OID `1.2.840.113741.1.13.1.<suffix>` as DER content bytes matches `oid`.
fn sgx_oid_is(oid: &[u8], suffix: &[u8]) -> bool {
    oid.len() == OID_SGX.len() + suffix.len() && oid.starts_with(OID_SGX) && &oid[OID_SGX.len()..] == suffix
}

impl PckExtension {
    /// Decodes the extension value: a SEQUENCE of `SEQUENCE { OID, value }`.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        let mut outer = DerReader::new(value);
        let items = outer.expect(TAG_SEQUENCE, "SGX extension is not a SEQUENCE")?;
        if !outer.is_empty() {
            return Err("SGX extension has trailing data".into());
        }
        let (mut fmspc, mut pce_id, mut tcb, mut sgx_type) = (None, None, None, None);
        let mut r = DerReader::new(items);
        while !r.is_empty() {
            let mut item = DerReader::new(r.expect(TAG_SEQUENCE, "SGX extension item is not a SEQUENCE")?);
            let oid = item.expect(TAG_OID, "SGX extension item has no OID")?;
            let v = item.next_tlv()?;
            let slot = if sgx_oid_is(oid, &[4]) {
                &mut fmspc
            } else if sgx_oid_is(oid, &[3]) {
                &mut pce_id
            } else if sgx_oid_is(oid, &[2]) {
                &mut tcb
            } else if sgx_oid_is(oid, &[5]) {
                &mut sgx_type
            } else {
                continue;
            };
            if slot.replace((v.tag, v.value)).is_some() {
                return Err("SGX extension repeats an item".into());
            }
        }
        let octets = |v: Option<(u8, &[u8])>, what: &str| -> Result<Vec<u8>, String> {
            match v {
                Some((TAG_OCTET_STRING, b)) => Ok(b.to_vec()),
                Some(_) => Err(format!("SGX extension {what} is not an OCTET STRING")),
                None => Err(format!("SGX extension has no {what}")),
            }
        };
        let fmspc: [u8; 6] = octets(fmspc, "FMSPC")?.try_into().map_err(|_| "FMSPC is not 6 bytes")?;
        let pce_id: [u8; 2] = octets(pce_id, "PCE-ID")?.try_into().map_err(|_| "PCE-ID is not 2 bytes")?;
        if let Some((tag, _)) = sgx_type
            && tag != TAG_ENUMERATED
        {
            return Err("SGX extension SGX type is not ENUMERATED".into());
        }
        let tcb = match tcb {
            Some((TAG_SEQUENCE, b)) => b,
            _ => return Err("SGX extension has no TCB SEQUENCE".into()),
        };
        let mut components: [Option<u8>; 16] = [None; 16];
        let (mut pce_svn, mut cpu_svn) = (None, None);
        let mut r = DerReader::new(tcb);
        while !r.is_empty() {
            let mut item = DerReader::new(r.expect(TAG_SEQUENCE, "TCB item is not a SEQUENCE")?);
            let oid = item.expect(TAG_OID, "TCB item has no OID")?;
            let v = item.next_tlv()?;
            let Some(&n) =
                oid.last().filter(|_| oid.len() == OID_SGX.len() + 2 && sgx_oid_is(&oid[..oid.len() - 1], &[2]))
            else {
                continue;
            };
            match (n, v.tag) {
                (1..=16, TAG_INTEGER) => {
                    let svn = u8::try_from(unsigned(v.value)?).map_err(|_| "TCB component above 255")?;
                    if components[usize::from(n - 1)].replace(svn).is_some() {
                        return Err("TCB component repeated".into());
                    }
                }
                (17, TAG_INTEGER) => {
                    let svn = u16::try_from(unsigned(v.value)?).map_err(|_| "PCESVN above 65535")?;
                    if pce_svn.replace(svn).is_some() {
                        return Err("PCESVN repeated".into());
                    }
                }
                (18, TAG_OCTET_STRING) => {
                    let svn: [u8; 16] = v.value.try_into().map_err(|_| "CPUSVN is not 16 bytes")?;
                    if cpu_svn.replace(svn).is_some() {
                        return Err("CPUSVN repeated".into());
                    }
                }
                _ => return Err(format!("TCB item {n} has an unexpected type")),
            }
        }
        let mut tcb_components = [0u8; 16];
        for (out, c) in tcb_components.iter_mut().zip(components) {
            *out = c.ok_or("SGX extension lacks a TCB component")?;
        }
        Ok(Self {
            fmspc,
            pce_id,
            tcb_components,
            pce_svn: pce_svn.ok_or("SGX extension has no PCESVN")?,
            cpu_svn: cpu_svn.ok_or("SGX extension has no CPUSVN")?,
        })
    }
}
