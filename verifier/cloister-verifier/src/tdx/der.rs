//! Small, strict decoders the TDX verifier needs besides x509-parser: a DER TLV reader (for the
//! Intel SGX extension of PCK certificates and basicConstraints), PEM certificate blocks with a
//! base64 decoder, and RFC 3339 / UNIX time conversion.
//!
//! **What it trusts:** nothing; every input is untrusted. Lengths are checked before use, only
//! definite-length DER with single-byte tags is accepted, and nothing panics.

/// One DER TLV: tag byte and value.
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// A cursor over concatenated DER TLVs.
pub(crate) struct DerReader<'a> {
    rest: &'a [u8],
}

impl<'a> DerReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads the next TLV.
    pub fn next_tlv(&mut self) -> Result<Tlv<'a>, &'static str> {
        let (&tag, after_tag) = self.rest.split_first().ok_or("DER: missing tag")?;
        if tag & 0x1f == 0x1f {
            return Err("DER: multi-byte tags are not supported");
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or("DER: missing length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err("DER: indefinite or oversized length");
            }
            let bytes = after_len.get(..n).ok_or("DER: truncated length")?;
            after_len = &after_len[n..];
            let mut len = 0usize;
            for b in bytes {
                len = (len << 8) | usize::from(*b);
            }
            if len < 0x80 || bytes.first() == Some(&0) {
                return Err("DER: non-minimal length");
            }
            len
        };
        let value = after_len.get(..len).ok_or("DER: value runs past the end")?;
        self.rest = &after_len[len..];
        Ok(Tlv { tag, value })
    }

    /// Reads the next TLV, also returning its complete encoding (tag, length and value).
    pub fn next_raw(&mut self) -> Result<(Tlv<'a>, &'a [u8]), &'static str> {
        let before = self.rest;
        let tlv = self.next_tlv()?;
        let used = before.len() - self.rest.len();
        Ok((tlv, &before[..used]))
    }

    /// Reads the next TLV and requires its tag.
    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], &'static str> {
        let tlv = self.next_tlv()?;
        if tlv.tag != tag {
            return Err(what);
        }
        Ok(tlv.value)
    }
}

/// A non-negative DER INTEGER (or ENUMERATED) value that fits in a `u64`.
pub(crate) fn unsigned(value: &[u8]) -> Result<u64, &'static str> {
    match value {
        [] => Err("DER: empty integer"),
        [first, ..] if first & 0x80 != 0 => Err("DER: negative integer"),
        _ => {
            let digits = match value {
                [0, rest @ ..] if !rest.is_empty() => rest,
                _ => value,
            };
            if digits.len() > 8 {
                return Err("DER: integer too large");
            }
            Ok(digits.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
    }
}

/// Whether a basicConstraints extension value says `cA = TRUE`.
pub(crate) fn basic_constraints_is_ca(value: &[u8]) -> Result<bool, &'static str> {
    let mut outer = DerReader::new(value);
    let seq = outer.expect(TAG_SEQUENCE, "basicConstraints is not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err("basicConstraints has trailing data");
    }
    let mut inner = DerReader::new(seq);
    if inner.is_empty() {
        return Ok(false);
    }
    let first = inner.next_tlv()?;
    Ok(first.tag == TAG_BOOLEAN && first.value.first().is_some_and(|b| *b != 0))
}

/// Decodes every `CERTIFICATE` PEM block in `text`, in order. Outside the blocks only ASCII
/// whitespace and NUL bytes (quotes NUL-terminate the chain) are allowed.
pub(crate) fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let filler = |b: &[u8]| b.iter().all(|c| c.is_ascii_whitespace() || *c == 0);
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        if !filler(&rest[..start]) {
            return Err("PEM: unexpected text outside the certificate blocks");
        }
        let after = &rest[start + BEGIN.len()..];
        let end = find(after, END).ok_or("PEM: BEGIN CERTIFICATE without END")?;
        out.push(base64_decode(&after[..end])?);
        rest = &after[end + END.len()..];
        if out.len() > 8 {
            return Err("PEM: too many certificates");
        }
    }
    if !filler(rest) {
        return Err("PEM: unexpected text outside the certificate blocks");
    }
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(p) = haystack.get(from..)?.iter().position(|&c| c == first) {
        if haystack[from + p..].starts_with(needle) {
            return Some(from + p);
        }
        from += p + 1;
    }
    None
}

/// Base64 decoding table: 0..=63 for the alphabet, `PAD` for `=`, `SKIP` for whitespace,
/// `BAD` otherwise.
const B64: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut i = 0;
    while i < 64 {
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i];
        t[c as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = PAD;
    t[b' ' as usize] = SKIP;
    t[b'\t' as usize] = SKIP;
    t[b'\r' as usize] = SKIP;
    t[b'\n' as usize] = SKIP;
    t
};
const BAD: u8 = 0xff;
const PAD: u8 = 0xfe;
const SKIP: u8 = 0xfd;

/// Standard-alphabet base64 with optional padding (at most two `=`, only at the end); ASCII
/// whitespace is skipped; unused bits of the last character must be zero.
pub(crate) fn base64_decode(text: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut quad = [0u32; 4];
    let mut n = 0usize;
    let mut padding = 0usize;
    let mut i = 0;
    while i < text.len() {
        // Fast path: four alphabet characters at once (the bulk of every PEM line).
        if n == 0
            && padding == 0
            && let Some(&[a, b, c, d]) = text.get(i..i + 4)
        {
            let (a, b, c, d) = (B64[usize::from(a)], B64[usize::from(b)], B64[usize::from(c)], B64[usize::from(d)]);
            if (a | b | c | d) & 0xc0 == 0 {
                let w = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(c) << 6) | u32::from(d);
                out.extend_from_slice(&[(w >> 16) as u8, (w >> 8) as u8, w as u8]);
                i += 4;
                continue;
            }
        }
        let v = B64[usize::from(text[i])];
        i += 1;
        if v < 64 {
            if padding > 0 {
                return Err("PEM: base64 data after padding");
            }
            quad[n] = u32::from(v);
            n += 1;
            if n == 4 {
                let w = (quad[0] << 18) | (quad[1] << 12) | (quad[2] << 6) | quad[3];
                out.extend_from_slice(&[(w >> 16) as u8, (w >> 8) as u8, w as u8]);
                n = 0;
            }
        } else if v == PAD {
            padding += 1;
        } else if v != SKIP {
            return Err("PEM: invalid base64 character");
        }
    }
    let bad = Err("PEM: malformed base64 ending");
    match (n, padding) {
        (0, 0) => {}
        (2, 0 | 2) if quad[1] & 0x0f == 0 => out.push(((quad[0] << 2) | (quad[1] >> 4)) as u8),
        (3, 0 | 1) if quad[2] & 0x03 == 0 => {
            out.push(((quad[0] << 2) | (quad[1] >> 4)) as u8);
            out.push(((quad[1] << 4) | (quad[2] >> 2)) as u8);
        }
        _ => return bad,
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2025-06-19T10:16:03Z`, optional fraction, `Z` or `±hh:mm`)
/// into UNIX seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0u32, |acc, c| acc.checked_mul(10)?.checked_add(u32::from(c - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let max_day = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if day == 0 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh) * 3600 + i64::from(om) * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(59)) - offset;
    u64::try_from(secs).ok()
}

/// Parses a DER UTCTime (tag 0x17, `YYMMDDhhmmssZ`) or GeneralizedTime (tag 0x18,
/// `YYYYMMDDhhmmssZ`) into UNIX seconds.
pub(crate) fn parse_der_time(tag: u8, value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    if !text.bytes().take(text.len().saturating_sub(1)).all(|c| c.is_ascii_digit()) || !text.ends_with('Z') {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy: u32 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let iso = format!("{year:04}-{}-{}T{}:{}:{}Z", &rest[0..2], &rest[2..4], &rest[4..6], &rest[6..8], &rest[8..10]);
    parse_rfc3339(&iso)
}

/// Formats UNIX seconds as `YYYY-MM-DDThh:mm:ssZ` (for messages).
pub(crate) fn format_unix(t: u64) -> String {
    let secs = i64::try_from(t).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for (s, t) in [
            ("1970-01-01T00:00:00Z", 0u64),
            ("2025-07-19T10:00:35Z", 1_752_919_235),
            ("2026-11-28T00:00:00Z", 1_795_824_000),
            ("2000-02-29T12:34:56Z", 951_827_696),
        ] {
            assert_eq!(parse_rfc3339(s), Some(t), "{s}");
            assert_eq!(format_unix(t), s);
        }
        assert_eq!(parse_rfc3339("2025-07-19T10:00:35.123Z"), Some(1_752_919_235));
        assert_eq!(parse_rfc3339("2025-07-19T12:00:35+02:00"), Some(1_752_919_235));
        for bad in [
            "",
            "2025-07-19",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-07-19T10:00:35",
            "x025-07-19T10:00:35Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn der_times() {
        assert_eq!(parse_der_time(0x17, b"250719100035Z"), Some(1_752_919_235));
        assert_eq!(parse_der_time(0x18, b"20250719100035Z"), Some(1_752_919_235));
        assert_eq!(parse_der_time(0x17, b"491231235959Z"), parse_rfc3339("2049-12-31T23:59:59Z"));
        assert_eq!(parse_der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_der_time(0x17, b"500101000000Z"), None, "1950 is before the epoch");
        for (tag, bad) in [
            (0x17u8, &b"2507191000Z"[..]),
            (0x18, b"250719100035Z"),
            (0x17, b"25071910003xZ"),
            (0x04, b"250719100035Z"),
        ] {
            assert_eq!(parse_der_time(tag, bad), None);
        }
    }

    #[test]
    fn base64_and_pem() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVs\nbG8h").unwrap(), b"hello!");
        assert!(base64_decode(b"aGVsbG8=x").is_err());
        assert!(base64_decode(b"a").is_err());
        assert_eq!(base64_decode(b"QUJD\nREVG R0g=\n").unwrap(), b"ABCDEFGH");
        assert_eq!(base64_decode(b"Q U J D").unwrap(), b"ABC");
        assert!(base64_decode(b"QUJD=REVG").is_err());
        assert!(base64_decode(b"QUJDR===").is_err());
        assert!(base64_decode(b"QUJ-").is_err());
        assert!(pem_certificates(b"junk-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----").is_err());
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----x").is_err());
        let pem = b"\r\n-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAw==\n-----END CERTIFICATE-----\n\0";
        assert_eq!(pem_certificates(pem).unwrap(), vec![vec![0, 1, 2], vec![3]]);
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAEC").is_err());
    }

    #[test]
    fn der_integers_and_lengths() {
        assert_eq!(unsigned(&[0x00, 0xff]).unwrap(), 255);
        assert_eq!(unsigned(&[0x05]).unwrap(), 5);
        assert!(unsigned(&[0x80]).is_err());
        assert!(unsigned(&[]).is_err());
        let mut r = DerReader::new(&[0x04, 0x81, 0x05]);
        assert!(r.next_tlv().is_err(), "non-minimal long form");
        let mut r = DerReader::new(&[0x04, 0x02, 0x01]);
        assert!(r.next_tlv().is_err(), "value past end");
        assert!(basic_constraints_is_ca(&[0x30, 0x03, 0x01, 0x01, 0xff]).unwrap());
        assert!(!basic_constraints_is_ca(&[0x30, 0x00]).unwrap());
    }
}
