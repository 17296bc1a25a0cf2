//! The layer cipher `AES_256_CTR_HMAC_SHA256`, streaming.
//!
//! Key = `symkey`; the 16-byte `nonce` is the whole initial counter block, incremented as a 128-bit
//! big-endian integer; ciphertext = plaintext XOR keystream (same length, no header, no tag).
//! Integrity: HMAC-SHA256 with the same key over the whole ciphertext, compared (in constant time)
//! with the public options' `hmac` at the end, then SHA-256 of the plaintext compared with the
//! private options' `digest`.
//!
//! Plaintext is handed out before the end is authenticated: whoever consumes it while streaming
//! (an unpacker) must discard or roll back everything on an error, including one at end of stream.

use std::io::{self, Read, Write};

use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::annotations::{AES_256_CTR_HMAC_SHA256, PrivateOptions, PublicOptions};
use crate::error::OcicryptError;
use crate::util::hex;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Passes are interleaved over blocks of this size so the data stays in cache between the MAC,
/// the keystream XOR and the digest.
const CHUNK: usize = 16 * 1024;

fn parse_digest(d: &str) -> Option<[u8; 32]> {
    let h = d.strip_prefix("sha256:")?;
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in h.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// What to do when the SHA-256 of the decrypted blob differs from the private options' `digest`
/// (after the HMAC has verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestCheck {
    /// Fail with [`OcicryptError::DigestMismatch`] (the default).
    #[default]
    Enforce,
    /// Log a warning and accept. The HMAC (keyed with the secret layer key) still authenticates
    /// the ciphertext, so this only tolerates encryptors that record the wrong digest — skopeo
    /// 1.9.3 with `--dest-compress-format` writes the digest of the *source* blob before
    /// re-compression. Use it only when the caller verifies the config's `diff_id` after
    /// decompression.
    WarnOnly,
}

/// Sans-I/O decryption: feed ciphertext with [`LayerDecryptor::update`] (decrypted in place), then
/// [`LayerDecryptor::finish`] to verify. For async streams; [`LayerDecryptReader`] wraps it for
/// `std::io::Read`.
pub struct LayerDecryptor {
    ctr: Aes256Ctr,
    mac: Hmac<Sha256>,
    sha: Sha256,
    expected_hmac: [u8; 32],
    expected_digest: String,
    digest_check: DigestCheck,
    processed: u64,
}

impl std::fmt::Debug for LayerDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerDecryptor").field("processed", &self.processed).finish_non_exhaustive()
    }
}

impl LayerDecryptor {
    /// A decryptor for a layer with these options.
    pub fn new(public: &PublicOptions, private: &PrivateOptions) -> Result<Self, OcicryptError> {
        if public.cipher != AES_256_CTR_HMAC_SHA256 {
            return Err(OcicryptError::UnsupportedCipher(public.cipher.clone()));
        }
        if parse_digest(&private.digest).is_none() {
            return Err(OcicryptError::Options(format!("digest {:?} is not sha256:<64 hex>", private.digest)));
        }
        let key: &[u8; 32] = &private.symkey;
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| OcicryptError::Crypto("HMAC key"))?;
        Ok(LayerDecryptor {
            ctr: Aes256Ctr::new(key.into(), (&private.nonce).into()),
            mac,
            sha: Sha256::new(),
            expected_hmac: public.hmac,
            expected_digest: private.digest.clone(),
            digest_check: DigestCheck::Enforce,
            processed: 0,
        })
    }

    /// Changes what a plaintext digest mismatch does (default: [`DigestCheck::Enforce`]).
    pub fn with_digest_check(mut self, check: DigestCheck) -> Self {
        self.digest_check = check;
        self
    }

    /// Authenticates and decrypts `buf` in place.
    pub fn update(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(CHUNK) {
            self.mac.update(chunk);
            self.ctr.apply_keystream(chunk);
            self.sha.update(&*chunk);
        }
        self.processed = self.processed.saturating_add(buf.len() as u64);
    }

    /// Ciphertext bytes processed so far.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Verifies the HMAC (constant time), then the plaintext digest.
    pub fn finish(self) -> Result<(), OcicryptError> {
        self.mac.verify_slice(&self.expected_hmac).map_err(|_| OcicryptError::HmacMismatch)?;
        let got = self.sha.finalize();
        if parse_digest(&self.expected_digest).is_some_and(|want| want[..] == got[..]) {
            return Ok(());
        }
        let actual = format!("sha256:{}", hex(&got));
        match self.digest_check {
            DigestCheck::Enforce => Err(OcicryptError::DigestMismatch { expected: self.expected_digest, actual }),
            DigestCheck::WarnOnly => {
                tracing::warn!(expected = %self.expected_digest, %actual, "decrypted layer digest differs from the private options (HMAC verified; accepted)");
                Ok(())
            }
        }
    }
}

enum ReaderState {
    Streaming(Box<LayerDecryptor>),
    Verified,
    Failed(OcicryptError),
}

/// A `Read` adapter that decrypts an encrypted layer blob as it is read, in the caller's buffer.
///
/// The end of the stream is reported (`Ok(0)`) only after the HMAC and the plaintext digest have
/// verified; otherwise the read returns an `io::Error` of kind `InvalidData` whose inner error is
/// the [`OcicryptError`] (`OcicryptError::from_io`), and every later read returns it again.
/// A consumer that stops before end of stream has not verified anything.
pub struct LayerDecryptReader<R> {
    inner: R,
    state: ReaderState,
    expected_size: Option<u64>,
}

impl<R> std::fmt::Debug for LayerDecryptReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            ReaderState::Streaming(d) => format!("streaming ({} bytes)", d.processed),
            ReaderState::Verified => "verified".into(),
            ReaderState::Failed(e) => format!("failed: {e}"),
        };
        f.debug_struct("LayerDecryptReader").field("state", &state).finish_non_exhaustive()
    }
}

impl<R: Read> LayerDecryptReader<R> {
    /// Decrypts `inner` (the ciphertext blob) with these options.
    pub fn new(inner: R, public: &PublicOptions, private: &PrivateOptions) -> Result<Self, OcicryptError> {
        Ok(LayerDecryptReader {
            inner,
            state: ReaderState::Streaming(Box::new(LayerDecryptor::new(public, private)?)),
            expected_size: None,
        })
    }

    /// Also requires the ciphertext to be exactly `size` bytes (the descriptor's size): a longer
    /// stream fails as soon as it exceeds it, a shorter one at its end.
    pub fn with_expected_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// Changes what a plaintext digest mismatch does (default: [`DigestCheck::Enforce`]).
    pub fn with_digest_check(mut self, check: DigestCheck) -> Self {
        if let ReaderState::Streaming(d) = &mut self.state {
            d.digest_check = check;
        }
        self
    }

    /// Whether the end of the stream was reached and verified.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, ReaderState::Verified)
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fail(&mut self, e: OcicryptError) -> io::Error {
        tracing::warn!(error = %e, "encrypted layer rejected");
        self.state = ReaderState::Failed(e.clone());
        e.into_io()
    }
}

impl<R: Read> Read for LayerDecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let dec = match &mut self.state {
            ReaderState::Streaming(d) => d,
            ReaderState::Verified => return Ok(0),
            ReaderState::Failed(e) => return Err(e.clone().into_io()),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?.min(buf.len());
        if n == 0 {
            let processed = dec.processed;
            if let Some(expected) = self.expected_size
                && processed != expected
            {
                return Err(self.fail(OcicryptError::SizeMismatch { expected, actual: processed }));
            }
            let state = std::mem::replace(&mut self.state, ReaderState::Verified);
            if let ReaderState::Streaming(d) = state
                && let Err(e) = d.finish()
            {
                return Err(self.fail(e));
            }
            tracing::debug!(bytes = processed, "encrypted layer verified");
            return Ok(0);
        }
        let total = dec.processed.saturating_add(n as u64);
        if let Some(expected) = self.expected_size
            && total > expected
        {
            return Err(self.fail(OcicryptError::SizeMismatch { expected, actual: total }));
        }
        dec.update(&mut buf[..n]);
        Ok(n)
    }
}

/// Sans-I/O encryption with a fresh random key and nonce: feed plaintext to
/// [`LayerEncryptor::update`] (encrypted in place), then [`LayerEncryptor::finish`] for the options.
pub struct LayerEncryptor {
    ctr: Aes256Ctr,
    mac: Hmac<Sha256>,
    sha: Sha256,
    symkey: Zeroizing<[u8; 32]>,
    nonce: [u8; 16],
    processed: u64,
}

impl std::fmt::Debug for LayerEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerEncryptor").field("processed", &self.processed).finish_non_exhaustive()
    }
}

impl LayerEncryptor {
    /// With a random key and nonce.
    pub fn new() -> Result<Self, OcicryptError> {
        let mut symkey = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 16];
        OsRng.try_fill_bytes(symkey.as_mut()).map_err(|_| OcicryptError::Crypto("no randomness"))?;
        OsRng.try_fill_bytes(&mut nonce).map_err(|_| OcicryptError::Crypto("no randomness"))?;
        Self::with_key(symkey, nonce)
    }

    /// With a given key and nonce (tests; never reuse a key–nonce pair).
    pub fn with_key(symkey: Zeroizing<[u8; 32]>, nonce: [u8; 16]) -> Result<Self, OcicryptError> {
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(symkey.as_ref()).map_err(|_| OcicryptError::Crypto("HMAC key"))?;
        Ok(LayerEncryptor {
            ctr: Aes256Ctr::new(symkey.as_ref().into(), (&nonce).into()),
            mac,
            sha: Sha256::new(),
            symkey,
            nonce,
            processed: 0,
        })
    }

    /// Encrypts `buf` in place.
    pub fn update(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(CHUNK) {
            self.sha.update(&*chunk);
            self.ctr.apply_keystream(chunk);
            self.mac.update(chunk);
        }
        self.processed = self.processed.saturating_add(buf.len() as u64);
    }

    /// The public options (with the HMAC) and private options (with the plaintext digest).
    pub fn finish(self) -> (PublicOptions, PrivateOptions) {
        let hmac: [u8; 32] = self.mac.finalize().into_bytes().into();
        let digest = format!("sha256:{}", hex(&self.sha.finalize()));
        (
            PublicOptions { cipher: AES_256_CTR_HMAC_SHA256.into(), hmac, cipher_options: Default::default() },
            PrivateOptions { symkey: self.symkey, nonce: self.nonce, digest },
        )
    }
}

/// What [`encrypt_stream`] produced besides the ciphertext.
#[derive(Debug)]
pub struct EncryptedStream {
    /// Public options (cipher, HMAC).
    pub public_options: PublicOptions,
    /// Private options (key, nonce, plaintext digest).
    pub private_options: PrivateOptions,
    /// Ciphertext length (= plaintext length).
    pub size: u64,
    /// `sha256:<hex>` of the ciphertext (the encrypted blob's descriptor digest).
    pub digest: String,
}

/// Encrypts everything `reader` yields into `writer` with a fresh key.
pub fn encrypt_stream<R: Read, W: Write>(mut reader: R, mut writer: W) -> Result<EncryptedStream, OcicryptError> {
    let mut enc = LayerEncryptor::new()?;
    let mut blob_sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n.min(buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        enc.update(&mut buf[..n]);
        blob_sha.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
    writer.flush()?;
    let size = enc.processed;
    let (public_options, private_options) = enc.finish();
    Ok(EncryptedStream {
        public_options,
        private_options,
        size,
        digest: format!("sha256:{}", hex(&blob_sha.finalize())),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encrypt(data: &[u8]) -> (Vec<u8>, PublicOptions, PrivateOptions) {
        let mut out = Vec::new();
        let s = encrypt_stream(data, &mut out).unwrap();
        assert_eq!(s.size, data.len() as u64);
        assert_eq!(s.digest, crate::util::sha256_digest(&out));
        (out, s.public_options, s.private_options)
    }

    fn decrypt_all(ct: &[u8], public: &PublicOptions, private: &PrivateOptions) -> io::Result<Vec<u8>> {
        let mut r = LayerDecryptReader::new(ct, public, private).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        assert!(r.is_verified());
        Ok(out)
    }

    fn inner(e: &io::Error) -> &OcicryptError {
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        OcicryptError::from_io(e).unwrap()
    }

    /// Known-answer test: key 0x00..0x1f, nonce ff…ff (the counter wraps to 0 after one block),
    /// plaintext 48 zero bytes → the keystream. Expected values computed with Python `cryptography`
    /// (OpenSSL) AES-256-CTR and HMAC-SHA256.
    #[test]
    fn known_answer() {
        let symkey = Zeroizing::new(std::array::from_fn::<u8, 32, _>(|i| i as u8));
        let nonce = [0xffu8; 16];
        let mut enc = LayerEncryptor::with_key(symkey, nonce).unwrap();
        let mut buf = vec![0u8; 48];
        enc.update(&mut buf);
        let (public, private) = enc.finish();
        assert_eq!(hex(&buf), KAT_CIPHERTEXT);
        assert_eq!(hex(&public.hmac), KAT_HMAC);
        assert_eq!(private.digest, crate::util::sha256_digest(&[0u8; 48]));
        assert_eq!(decrypt_all(&buf, &public, &private).unwrap(), vec![0u8; 48]);
    }

    const KAT_CIPHERTEXT: &str = "e999e41d4ca770da5387117b5d8f57eef29000b62a499fd0a9f39a6add2e7780\
                                  f05d76ae4ab99fe5a6f69b3148c2363d";
    const KAT_HMAC: &str = "a1668e72479d56ca011a493b56c71d9817242ee0f1457675479b38b827a219a3";

    #[test]
    fn round_trip_sizes() {
        for len in [0usize, 1, 15, 16, 17, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (ct, public, private) = encrypt(&data);
            assert_eq!(ct.len(), len);
            if len > 16 {
                assert_ne!(ct, data);
            }
            assert_eq!(decrypt_all(&ct, &public, &private).unwrap(), data);
        }
    }

    #[test]
    fn tampering() {
        let data = vec![42u8; 100_000];
        let (ct, public, private) = encrypt(&data);
        // Flipped ciphertext byte → HMAC.
        let mut bad = ct.clone();
        bad[50_000] ^= 1;
        let mut r = LayerDecryptReader::new(&bad[..], &public, &private).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(matches!(inner(&e), OcicryptError::HmacMismatch));
        // Sticky.
        let e2 = r.read(&mut [0u8; 10]).unwrap_err();
        assert!(matches!(inner(&e2), OcicryptError::HmacMismatch));
        assert!(!r.is_verified());
        // Truncated → HMAC, or SizeMismatch when the size is known.
        let e = decrypt_all(&ct[..ct.len() - 1], &public, &private).unwrap_err();
        assert!(matches!(inner(&e), OcicryptError::HmacMismatch));
        let mut r = LayerDecryptReader::new(&ct[..ct.len() - 1], &public, &private)
            .unwrap()
            .with_expected_size(ct.len() as u64);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(inner(&e), OcicryptError::SizeMismatch { expected: 100_000, actual: 99_999 }));
        let mut long = ct.clone();
        long.push(0);
        let mut r = LayerDecryptReader::new(&long[..], &public, &private).unwrap().with_expected_size(ct.len() as u64);
        assert!(matches!(inner(&r.read_to_end(&mut Vec::new()).unwrap_err()), OcicryptError::SizeMismatch { .. }));
        // Wrong key → HMAC.
        let mut other = private.clone();
        other.symkey[0] ^= 1;
        assert!(matches!(inner(&decrypt_all(&ct, &public, &other).unwrap_err()), OcicryptError::HmacMismatch));
        // Wrong digest (HMAC fine) → DigestMismatch.
        let mut other = private.clone();
        other.digest = format!("sha256:{}", "0".repeat(64));
        match inner(&decrypt_all(&ct, &public, &other).unwrap_err()) {
            OcicryptError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &other.digest);
                assert_eq!(actual, &private.digest);
            }
            e => panic!("{e}"),
        }
        // … unless told to only warn (the HMAC still verified).
        let mut r = LayerDecryptReader::new(&ct[..], &public, &other).unwrap().with_digest_check(DigestCheck::WarnOnly);
        r.read_to_end(&mut Vec::new()).unwrap();
        assert!(r.is_verified());
        let mut r =
            LayerDecryptReader::new(&bad[..], &public, &other).unwrap().with_digest_check(DigestCheck::WarnOnly);
        assert!(matches!(inner(&r.read_to_end(&mut Vec::new()).unwrap_err()), OcicryptError::HmacMismatch));
        // Unsupported cipher.
        let mut p = public.clone();
        p.cipher = "AES_128_CTR".into();
        assert!(matches!(LayerDecryptReader::new(&ct[..], &p, &private), Err(OcicryptError::UnsupportedCipher(_))));
        // Exact size passes.
        let mut r = LayerDecryptReader::new(&ct[..], &public, &private).unwrap().with_expected_size(ct.len() as u64);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    /// A reader that yields one byte at a time and is interrupted now and then.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            if self.1.is_multiple_of(3) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn odd_reads() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
        let (ct, public, private) = encrypt(&data);
        let mut r = LayerDecryptReader::new(Trickle(&ct, 0), &public, &private).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), flip in any::<Option<(usize, u8)>>()) {
            let (mut ct, public, private) = encrypt(&data);
            match flip {
                Some((i, b)) if !ct.is_empty() && b != 0 => {
                    let i = i % ct.len();
                    ct[i] ^= b;
                    prop_assert!(decrypt_all(&ct, &public, &private).is_err());
                }
                _ => prop_assert_eq!(decrypt_all(&ct, &public, &private).unwrap(), data),
            }
        }
    }
}
