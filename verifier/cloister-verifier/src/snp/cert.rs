//! X.509 pieces of the AMD chain: an owned summary of a certificate or CRL (names, validity,
//! serial, key, AMD extensions, the raw to-be-signed bytes and signature), the RSASSA-PSS and
//! ECDSA P-384 checks done with `ring`, and a minimal DER reader for extension values.
//!
//! **What it trusts:** nothing. Certificates are parsed with `x509-parser` (no trailing bytes
//! allowed) and summarised; signatures are verified over the TBS bytes exactly as received.
//! Whether a certificate is trusted is decided elsewhere ([`super::anchors`], [`super::chain`]).

use ring::signature::{RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, X509Name};

/// DER content bytes of the object identifiers used here.
pub(crate) mod oid {
    /// 1.2.840.113549.1.1.10 RSASSA-PSS.
    pub const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    /// 1.2.840.113549.1.1.1 rsaEncryption.
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.2.840.113549.1.1.8 MGF1.
    pub const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
    /// 2.16.840.1.101.3.4.2.2 SHA-384.
    pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    /// 1.2.840.10045.2.1 id-ecPublicKey.
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// 1.3.132.0.34 secp384r1.
    pub const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// 1.3.6.1.4.1.3704.1 — the AMD VEK extension arc.
    pub const AMD_ARC: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01];
}

/// Minimal DER reading for the AMD extension values.
pub(crate) mod der {
    /// Splits one TLV (short or long definite length) off `input`: `(tag, content, rest)`.
    pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&len0, rest) = rest.split_first()?;
        let (len, rest) = if len0 < 0x80 {
            (usize::from(len0), rest)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for b in &rest[..n] {
                len = (len << 8) | usize::from(*b);
            }
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// A whole DER INTEGER holding a non-negative value that fits in a u64.
    pub fn uint(value: &[u8]) -> Option<u64> {
        let (tag, content, rest) = tlv(value)?;
        if tag != 0x02 || !rest.is_empty() || content.is_empty() || content[0] & 0x80 != 0 {
            return None;
        }
        let digits = match content {
            [0, tail @ ..] if !tail.is_empty() => tail,
            c => c,
        };
        if digits.len() > 8 {
            return None;
        }
        Some(digits.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A whole DER string (IA5String, UTF8String or PrintableString) as text.
    pub fn string(value: &[u8]) -> Option<String> {
        let (tag, content, rest) = tlv(value)?;
        if !matches!(tag, 0x16 | 0x0c | 0x13) || !rest.is_empty() {
            return None;
        }
        std::str::from_utf8(content).ok().map(str::to_string)
    }

    /// The content of a whole DER OCTET STRING.
    pub fn octet_string(value: &[u8]) -> Option<&[u8]> {
        let (tag, content, rest) = tlv(value)?;
        (tag == 0x04 && rest.is_empty()).then_some(content)
    }
}

/// The subject public key of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA: the DER `RSAPublicKey` (what `ring` verifies with).
    Rsa(Vec<u8>),
    /// ECDSA P-384: the uncompressed point (0x04 ‖ X ‖ Y).
    EcP384(Vec<u8>),
    /// Anything else (described).
    Other(String),
}

/// The AMD-specific extensions of a VCEK/VLEK (arc 1.3.6.1.4.1.3704.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AmdExtensions {
    /// …1.1 structVersion.
    pub struct_version: Option<u64>,
    /// …1.2 productName.
    pub product_name: Option<String>,
    /// …1.3.1 blSPL (None: absent or not an integer).
    pub bl_spl: Option<u64>,
    /// …1.3.2 teeSPL.
    pub tee_spl: Option<u64>,
    /// …1.3.3 snpSPL.
    pub snp_spl: Option<u64>,
    /// …1.3.8 ucodeSPL.
    pub ucode_spl: Option<u64>,
    /// …1.3.9 fmcSPL.
    pub fmc_spl: Option<u64>,
    /// …1.4 hwID, the raw extension value (decoded per product later).
    pub hw_id: Option<Vec<u8>>,
    /// …1.5 cspID.
    pub csp_id: Option<String>,
}

/// Checks the signature algorithm is RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48, trailer 1.
fn check_pss(alg: &AlgorithmIdentifier<'_>) -> Result<(), String> {
    if alg.algorithm.as_bytes() != oid::RSASSA_PSS {
        return Err(format!("algorithm {}", alg.algorithm.to_id_string()));
    }
    let params = alg.parameters.as_ref().ok_or("RSASSA-PSS without parameters")?;
    let params = RsaSsaPssParams::try_from(params).map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
    if params.hash_algorithm_oid().as_bytes() != oid::SHA384 {
        return Err(format!("PSS hash {}", params.hash_algorithm_oid().to_id_string()));
    }
    let mgf = params.mask_gen_algorithm().map_err(|e| format!("PSS mask generation: {e}"))?;
    if mgf.mgf.as_bytes() != oid::MGF1 || mgf.hash.as_bytes() != oid::SHA384 {
        return Err(format!("PSS mask generation {} with {}", mgf.mgf.to_id_string(), mgf.hash.to_id_string()));
    }
    if params.salt_length() != 48 {
        return Err(format!("PSS salt length {}", params.salt_length()));
    }
    if params.trailer_field() != 1 {
        return Err(format!("PSS trailer field {}", params.trailer_field()));
    }
    Ok(())
}

/// The raw `AlgorithmIdentifier`s of a signed certificate or CRL: the one inside the signed part
/// (after the optional version and, for a certificate, the serial) and the outer one after it.
/// RFC 5280 requires them to be identical; comparing the raw bytes also catches an outer
/// identifier whose encoding a lenient parser would accept (the outer one is not signed).
fn raw_signature_algorithms(der: &[u8], certificate: bool) -> Option<(&[u8], &[u8])> {
    use crate::tdx::der::{DerReader, TAG_INTEGER, TAG_SEQUENCE};
    let body = DerReader::new(der).expect(TAG_SEQUENCE, "").ok()?;
    let mut r = DerReader::new(body);
    let tbs = r.expect(TAG_SEQUENCE, "").ok()?;
    let (_, outer) = r.next_raw().ok()?;
    let mut t = DerReader::new(tbs);
    let (first, mut inner) = t.next_raw().ok()?;
    if certificate {
        if first.tag == 0xA0 {
            t.next_raw().ok()?; // version, then serialNumber
        }
        inner = t.next_raw().ok()?.1;
    } else if first.tag == TAG_INTEGER {
        inner = t.next_raw().ok()?.1; // after the version
    }
    Some((inner, outer))
}

/// Whether a certificate's or CRL's two signature algorithm identifiers are byte-identical.
fn same_algorithm(der: &[u8], certificate: bool) -> bool {
    raw_signature_algorithms(der, certificate).is_some_and(|(a, b)| a.first() == Some(&0x30) && a == b)
}

fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_string()
}

/// Strips leading zero bytes of a DER INTEGER's content, for comparing serial numbers.
pub(crate) fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[first..].to_vec()
}

/// An owned summary of a parsed certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    /// SHA-256 of the DER.
    pub sha256: [u8; 32],
    /// Raw DER of the subject name.
    pub subject_raw: Vec<u8>,
    /// Raw DER of the issuer name.
    pub issuer_raw: Vec<u8>,
    /// Subject common name ("" if none).
    pub subject_cn: String,
    /// Issuer common name ("" if none).
    pub issuer_cn: String,
    /// notBefore, UNIX seconds.
    pub not_before: i64,
    /// notAfter, UNIX seconds.
    pub not_after: i64,
    /// Serial number, leading zeros stripped.
    pub serial: Vec<u8>,
    /// The to-be-signed bytes exactly as encoded.
    pub tbs: Vec<u8>,
    /// The signature bits.
    pub signature: Vec<u8>,
    /// Whether the signature algorithm is AMD's RSASSA-PSS profile (Err: what it is instead).
    pub pss: Result<(), String>,
    /// The subject public key.
    pub key: PublicKey,
    /// AMD VEK extensions.
    pub amd: AmdExtensions,
}

impl CertInfo {
    /// Parses one DER certificate (no trailing bytes).
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the certificate", rest.len()));
        }
        let tbs = &cert.tbs_certificate;
        let pss = if same_algorithm(der, true) {
            check_pss(&cert.signature_algorithm)
        } else {
            Err("inner and outer signature algorithms differ".to_string())
        };
        let spki = &tbs.subject_pki;
        let alg = spki.algorithm.algorithm.as_bytes();
        let key = if alg == oid::RSA_ENCRYPTION || alg == oid::RSASSA_PSS {
            PublicKey::Rsa(spki.subject_public_key.data.to_vec())
        } else if alg == oid::EC_PUBLIC_KEY {
            let curve_ok =
                spki.algorithm.parameters.as_ref().is_some_and(|p| p.header.tag().0 == 6 && p.data == oid::SECP384R1);
            let point = spki.subject_public_key.data.as_ref();
            if curve_ok && point.len() == 97 && point[0] == 4 {
                PublicKey::EcP384(point.to_vec())
            } else {
                PublicKey::Other("EC key not an uncompressed P-384 point".to_string())
            }
        } else {
            PublicKey::Other(format!("key algorithm {}", spki.algorithm.algorithm.to_id_string()))
        };
        let mut amd = AmdExtensions::default();
        let mut seen: Vec<&[u8]> = Vec::new();
        for ext in tbs.extensions() {
            let id = ext.oid.as_bytes();
            let Some(sub) = id.strip_prefix(oid::AMD_ARC) else { continue };
            if seen.contains(&id) {
                return Err(format!("duplicate extension {}", ext.oid.to_id_string()));
            }
            seen.push(id);
            let v = ext.value;
            match sub {
                [1] => amd.struct_version = der::uint(v),
                [2] => amd.product_name = der::string(v),
                [3, 1] => amd.bl_spl = der::uint(v),
                [3, 2] => amd.tee_spl = der::uint(v),
                [3, 3] => amd.snp_spl = der::uint(v),
                [3, 8] => amd.ucode_spl = der::uint(v),
                [3, 9] => amd.fmc_spl = der::uint(v),
                [4] => amd.hw_id = Some(v.to_vec()),
                [5] => amd.csp_id = der::string(v),
                _ => {}
            }
        }
        Ok(CertInfo {
            sha256: sha256(der),
            subject_raw: tbs.subject.as_raw().to_vec(),
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            subject_cn: common_name(&tbs.subject),
            issuer_cn: common_name(&tbs.issuer),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            serial: normalize_serial(tbs.raw_serial()),
            tbs: tbs.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            pss,
            key,
            amd,
        })
    }

    /// True when subject and issuer names are identical.
    pub fn self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// Whether `issuer`'s RSA key verifies this certificate's signature (RSASSA-PSS SHA-384).
    /// The algorithm parameters are checked separately ([`CertInfo::pss`]).
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        match &issuer.key {
            PublicKey::Rsa(k) => verify_pss(k, &self.tbs, &self.signature),
            _ => false,
        }
    }
}

/// An owned summary of a parsed CRL.
#[derive(Clone, Debug)]
pub(crate) struct CrlInfo {
    /// Raw DER of the issuer name.
    pub issuer_raw: Vec<u8>,
    /// Issuer common name.
    pub issuer_cn: String,
    /// thisUpdate, UNIX seconds.
    pub this_update: i64,
    /// nextUpdate, UNIX seconds.
    pub next_update: Option<i64>,
    /// Revoked serial numbers, leading zeros stripped.
    pub revoked: Vec<Vec<u8>>,
    /// The to-be-signed bytes.
    pub tbs: Vec<u8>,
    /// The signature bits.
    pub signature: Vec<u8>,
    /// Signature algorithm check.
    pub pss: Result<(), String>,
}

impl CrlInfo {
    /// Parses one DER CRL (no trailing bytes).
    pub fn parse(der: &[u8]) -> Result<CrlInfo, String> {
        let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|e| format!("not a CRL: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the CRL", rest.len()));
        }
        let tbs = &crl.tbs_cert_list;
        let pss = if same_algorithm(der, false) {
            check_pss(&crl.signature_algorithm)
        } else {
            Err("inner and outer signature algorithms differ".to_string())
        };
        Ok(CrlInfo {
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            issuer_cn: common_name(&tbs.issuer),
            this_update: tbs.this_update.timestamp(),
            next_update: tbs.next_update.map(|t| t.timestamp()),
            revoked: tbs.revoked_certificates.iter().map(|r| normalize_serial(r.raw_serial())).collect(),
            tbs: tbs.as_ref().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            pss,
        })
    }
}

/// RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48) verification of `msg` with a DER `RSAPublicKey`.
pub(crate) fn verify_pss(rsa_public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, rsa_public_key).verify(msg, sig).is_ok()
}

/// ECDSA P-384/SHA-384 verification of `msg` with an uncompressed point and a fixed `r ‖ s`
/// (aws-lc-rs: its P-384 is about 4.5x faster than ring's, and this runs once per attestation).
pub fn verify_p384(point: &[u8], msg: &[u8], fixed_sig: &[u8; 96]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey as AwsLcKey};
    AwsLcKey::new(&ECDSA_P384_SHA384_FIXED, point).verify(msg, fixed_sig).is_ok()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Certificates in `input`: one DER certificate, or any number of PEM `CERTIFICATE` blocks.
pub(crate) fn ders_from_pem_or_der(input: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if input.first() == Some(&0x30) {
        return Ok(vec![input.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(input) {
        let pem = pem.map_err(|e| format!("bad PEM: {e}"))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err("no certificate (neither DER nor PEM CERTIFICATE blocks)".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::der;

    #[test]
    fn der_integers() {
        assert_eq!(der::uint(&[0x02, 0x01, 0x73]), Some(0x73));
        assert_eq!(der::uint(&[0x02, 0x02, 0x00, 0xd9]), Some(0xd9));
        assert_eq!(der::uint(&[0x02, 0x01, 0x80]), None);
        assert_eq!(der::uint(&[0x02, 0x00]), None);
        assert_eq!(der::uint(&[0x02, 0x02, 0x01]), None);
        assert_eq!(der::uint(&[0x04, 0x01, 0x01]), None);
        assert_eq!(der::uint(&[0x02, 0x01, 0x01, 0x00]), None);
        assert_eq!(der::string(&[0x16, 0x05, b'M', b'i', b'l', b'a', b'n']).as_deref(), Some("Milan"));
        assert_eq!(der::octet_string(&[0x04, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der::tlv(&[0x04, 0x81, 0x02, 1, 2]), Some((0x04, &[1u8, 2][..], &[][..])));
        assert_eq!(der::tlv(&[0x04, 0x85, 0, 0, 0, 0, 1]), None);
    }
}
