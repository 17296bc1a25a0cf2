//! A minimal DER writer (definite lengths only) for the certificates and CRLs the emulator issues,
//! plus PEM encoding and decoding. Everything is built from byte vectors: no schema, no parsing of
//! untrusted input beyond PEM armour.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::EmulateError;

/// Encodes one TLV with a definite length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        let n = bytes.len() - first;
        out.push(0x80 | n as u8);
        out.extend_from_slice(&bytes[first..]);
    }
    out.extend_from_slice(content);
    out
}

/// SEQUENCE of already encoded elements.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// SET of already encoded elements (the caller gives them in DER order).
pub(crate) fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// Context-specific constructed tag `[n]` around encoded content (EXPLICIT tagging).
pub(crate) fn explicit(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, content)
}

/// OBJECT IDENTIFIER from its arcs.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        [a] => (a * 40, &[][..]),
        [] => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        groups.reverse();
        body.extend_from_slice(&groups);
    }
    tlv(0x06, &body)
}

/// INTEGER holding the unsigned big-endian value `be`.
pub(crate) fn uint_bytes(be: &[u8]) -> Vec<u8> {
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = &be[first..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    tlv(0x02, &content)
}

/// INTEGER holding `v`.
pub(crate) fn uint(v: u64) -> Vec<u8> {
    uint_bytes(&v.to_be_bytes())
}

/// BOOLEAN.
pub(crate) fn boolean(v: bool) -> Vec<u8> {
    tlv(0x01, &[if v { 0xff } else { 0x00 }])
}

/// NULL.
pub(crate) fn null() -> Vec<u8> {
    vec![0x05, 0x00]
}

/// OCTET STRING.
pub(crate) fn octet_string(v: &[u8]) -> Vec<u8> {
    tlv(0x04, v)
}

/// BIT STRING with no unused bits.
pub(crate) fn bit_string(v: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(v.len() + 1);
    content.push(0);
    content.extend_from_slice(v);
    tlv(0x03, &content)
}

/// UTF8String.
pub(crate) fn utf8(s: &str) -> Vec<u8> {
    tlv(0x0c, s.as_bytes())
}

/// PrintableString (the caller passes printable characters only).
pub(crate) fn printable(s: &str) -> Vec<u8> {
    tlv(0x13, s.as_bytes())
}

/// IA5String.
pub(crate) fn ia5(s: &str) -> Vec<u8> {
    tlv(0x16, s.as_bytes())
}

/// A Time as RFC 5280 wants it: UTCTime before 2050, GeneralizedTime from 2050 on.
pub(crate) fn time(unix: i64) -> Vec<u8> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if (1950..2050).contains(&y) {
        tlv(0x17, format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100).as_bytes())
    } else {
        tlv(0x18, format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z").as_bytes())
    }
}

/// RFC 3339 UTC time with seconds (`2026-01-31T12:00:00Z`), as Intel's collateral writes it.
pub(crate) fn rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An X.501 Name from `(attribute OID arcs, value already encoded as a string type)`, one
/// attribute per RDN, in the order given.
pub(crate) fn name(attrs: &[(&[u64], Vec<u8>)]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = attrs.iter().map(|(arcs, value)| set(&[&seq(&[&oid(arcs), value])])).collect();
    let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
    seq(&refs)
}

/// An Extension: `SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }`.
pub(crate) fn extension(arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        seq(&[&oid(arcs), &boolean(true), &octet_string(value)])
    } else {
        seq(&[&oid(arcs), &octet_string(value)])
    }
}

/// Well-known object identifiers.
pub(crate) mod oids {
    /// id-at-commonName.
    pub const CN: &[u64] = &[2, 5, 4, 3];
    /// id-at-countryName.
    pub const C: &[u64] = &[2, 5, 4, 6];
    /// id-at-localityName.
    pub const L: &[u64] = &[2, 5, 4, 7];
    /// id-at-stateOrProvinceName.
    pub const ST: &[u64] = &[2, 5, 4, 8];
    /// id-at-organizationName.
    pub const O: &[u64] = &[2, 5, 4, 10];
    /// id-at-organizationalUnitName.
    pub const OU: &[u64] = &[2, 5, 4, 11];
    /// id-ce-subjectKeyIdentifier.
    pub const SKI: &[u64] = &[2, 5, 29, 14];
    /// id-ce-keyUsage.
    pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
    /// id-ce-basicConstraints.
    pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
    /// id-ce-cRLNumber.
    pub const CRL_NUMBER: &[u64] = &[2, 5, 29, 20];
    /// id-ce-authorityKeyIdentifier.
    pub const AKI: &[u64] = &[2, 5, 29, 35];
    /// rsaEncryption.
    pub const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
    /// id-RSASSA-PSS.
    pub const RSASSA_PSS: &[u64] = &[1, 2, 840, 113_549, 1, 1, 10];
    /// id-mgf1.
    pub const MGF1: &[u64] = &[1, 2, 840, 113_549, 1, 1, 8];
    /// id-sha384.
    pub const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
    /// id-ecPublicKey.
    pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10_045, 2, 1];
    /// secp384r1.
    pub const SECP384R1: &[u64] = &[1, 3, 132, 0, 34];
    /// prime256v1.
    pub const PRIME256V1: &[u64] = &[1, 2, 840, 10_045, 3, 1, 7];
    /// ecdsa-with-SHA256.
    pub const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10_045, 4, 3, 2];
}

/// PEM armour around `der` with the given label, 64-character lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every PEM block labelled `label` in `text`, decoded.
pub(crate) fn pem_decode_all(text: &str, label: &str) -> Result<Vec<Vec<u8>>, EmulateError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after.find(&end).ok_or_else(|| EmulateError::Pem(format!("unterminated {label} block")))?;
        let body: String = after[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        out.push(STANDARD.decode(body).map_err(|e| EmulateError::Pem(format!("{label} block: {e}")))?);
        rest = &after[stop + end.len()..];
    }
    Ok(out)
}

/// Splits one DER TLV off `input` (reading back our own certificates): `(tag, content, rest)`.
pub(crate) fn split(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(oid(oids::SHA384), [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]);
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 3704, 1, 3, 1]),
            [0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x01]
        );
        assert_eq!(uint(0), [0x02, 0x01, 0x00]);
        assert_eq!(uint(0x80), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(48), [0x02, 0x01, 0x30]);
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(time(0), tlv(0x17, b"700101000000Z"));
        assert_eq!(time(1_603_387_385), tlv(0x17, b"201022172305Z"));
        assert_eq!(time(2_524_608_000), tlv(0x18, b"20500101000000Z"));
        assert_eq!(rfc3339(1_603_387_385), "2020-10-22T17:23:05Z");
    }

    #[test]
    fn pem_round_trip() {
        let der = (0u8..=255).collect::<Vec<_>>();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let two = format!("{pem}junk\n{pem}");
        assert_eq!(pem_decode_all(&two, "CERTIFICATE").unwrap(), vec![der.clone(), der]);
        assert!(pem_decode_all("-----BEGIN CERTIFICATE-----\nAAAA", "CERTIFICATE").is_err());
    }
}
