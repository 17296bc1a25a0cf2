//! Content digests (`sha256:<64 lowercase hex>`) and readers that check them while streaming.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

/// A SHA-256 content digest. Other algorithms are refused: the guest verifies every byte it uses
/// and SHA-256 is what registries and ocicrypt use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = || ImageError::BadDigest(s.chars().take(80).collect());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
        Ok(Self(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes what passes through it and checks it at EOF against the expected digest
/// (and size, if declared): the mismatch is the read error at EOF, so nothing downstream sees a
/// clean end of stream for wrong content. More bytes than declared fail as soon as they arrive.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Digest,
    size: Option<u64>,
    what: String,
    verified: bool,
    /// After a failure every read fails again (never a clean EOF).
    failed: Option<String>,
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against `expected` (and `size`); `what` names it in errors.
    pub fn new(inner: R, expected: Digest, size: Option<u64>, what: String) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0, expected, size, what, verified: false, failed: None }
    }

    /// Whether EOF was reached and the content matched.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn fail(&mut self, e: ImageError) -> io::Error {
        self.failed = Some(e.to_string());
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        if self.verified {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(size) = self.size
                && size != self.count
            {
                let e = ImageError::SizeMismatch {
                    what: self.what.clone(),
                    declared: size,
                    actual: self.count,
                    more: false,
                };
                return Err(self.fail(e));
            }
            let actual = Digest(self.hasher.clone().finalize().into());
            if actual != self.expected {
                let e = ImageError::DigestMismatch { what: self.what.clone(), expected: self.expected, actual };
                return Err(self.fail(e));
            }
            self.verified = true;
            return Ok(0);
        }
        self.count += n as u64;
        if let Some(size) = self.size
            && self.count > size
        {
            let e =
                ImageError::SizeMismatch { what: self.what.clone(), declared: size, actual: self.count, more: true };
            return Err(self.fail(e));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855").is_err());
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse("sha256:zz").is_err());
    }

    fn read_all(r: impl Read) -> Result<Vec<u8>, ImageError> {
        let mut r = r;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| *e.into_inner().unwrap().downcast::<ImageError>().unwrap())?;
        Ok(out)
    }

    #[test]
    fn verifies_at_eof() {
        let d = Digest::of(b"abcd");
        assert_eq!(read_all(VerifyingReader::new(&b"abcd"[..], d, Some(4), "t".into())).unwrap(), b"abcd");
        assert!(matches!(
            read_all(VerifyingReader::new(&b"abcdef"[..], d, Some(4), "t".into())),
            Err(ImageError::SizeMismatch { more: true, .. })
        ));
        assert!(matches!(
            read_all(VerifyingReader::new(&b"abc"[..], d, Some(4), "t".into())),
            Err(ImageError::SizeMismatch { more: false, actual: 3, .. })
        ));
        assert!(matches!(
            read_all(VerifyingReader::new(&b"abce"[..], d, None, "t".into())),
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}
