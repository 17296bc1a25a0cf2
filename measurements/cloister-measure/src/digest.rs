//! Fixed-size digest newtypes and the hash backend used everywhere in this crate.
//!
//! All hashing goes through this module so that the fastest available implementation (ring's
//! assembly SHA-2, which uses SHA-NI / AVX2 where the CPU has them) is used on every path.

use std::fmt;

use ring::digest as rd;

macro_rules! digest_newtype {
    ($name:ident, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// All-zero value.
            pub const ZERO: Self = Self([0u8; $len]);

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly `2 * LEN` hex digits (either case, optional `0x`).
            pub fn from_hex(s: &str) -> Result<Self, crate::Error> {
                let t = s.trim();
                let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
                let mut out = [0u8; $len];
                hex::decode_to_slice(t, &mut out)
                    .map_err(|_| crate::Error::BadHexDigest { expected_len: $len, got_chars: t.len() })?;
                Ok(Self(out))
            }

            /// Wraps a slice of exactly `LEN` bytes.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(b).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
    };
}

digest_newtype!(Sha256Digest, 32, "A SHA-256 value (SEV/SEV-ES launch digests, kernel-hashes entries).");
digest_newtype!(Sha384Digest, 48, "A SHA-384 value (SNP launch digest, TDX MRTD/RTMR).");
digest_newtype!(Sha512Digest, 64, "A SHA-512 value (IBM SE PLD/ALD/TLD).");

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> Sha384Digest {
    let d = rd::digest(&rd::SHA384, data);
    let mut out = [0u8; 48];
    out.copy_from_slice(d.as_ref());
    Sha384Digest(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    let d = rd::digest(&rd::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Sha256Digest(out)
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> Sha512Digest {
    let d = rd::digest(&rd::SHA512, data);
    let mut out = [0u8; 64];
    out.copy_from_slice(d.as_ref());
    Sha512Digest(out)
}

/// Incremental SHA-256 (streamed kernel/initrd files, SEV/SEV-ES digests).
#[derive(Clone)]
pub struct Sha256(rd::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(rd::Context::new(&rd::SHA256))
    }
}

impl Sha256 {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data)
    }
    /// Final value.
    pub fn finish(self) -> Sha256Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        Sha256Digest(out)
    }
}

/// Incremental SHA-384 (TDX MRTD, RTMR replay).
#[derive(Clone)]
pub struct Sha384(rd::Context);

impl Default for Sha384 {
    fn default() -> Self {
        Sha384(rd::Context::new(&rd::SHA384))
    }
}

impl Sha384 {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data)
    }
    /// Final value.
    pub fn finish(self) -> Sha384Digest {
        let mut out = [0u8; 48];
        out.copy_from_slice(self.0.finish().as_ref());
        Sha384Digest(out)
    }
}

/// SHA-384 of every 4 KiB page of `data` (whose length must be a multiple of 4096), using up to
/// `threads` threads. Pages are independent, so this is where a multi-core machine wins; the
/// result is the same whatever the thread count.
pub fn sha384_pages(data: &[u8], threads: usize) -> Vec<Sha384Digest> {
    const PAGE: usize = 4096;
    let pages = data.len() / PAGE;
    let mut out = vec![Sha384Digest::ZERO; pages];
    // Below ~64 pages a thread costs more than it saves.
    let threads = threads.clamp(1, 8).min(pages.div_ceil(64).max(1));
    if threads <= 1 {
        hash_pages_into(&mut out, data);
        return out;
    }
    // Split on multiples of the SIMD batch so every thread can use it fully.
    let per = pages.div_ceil(threads).next_multiple_of(crate::simd::LANES);
    std::thread::scope(|s| {
        for (outs, ins) in out.chunks_mut(per).zip(data.chunks(per * PAGE)) {
            s.spawn(move || hash_pages_into(outs, ins));
        }
    });
    out
}

/// Hashes the pages of `data` into `out`: eight at a time with the multi-buffer SIMD path where
/// the CPU has it, the rest one by one.
fn hash_pages_into(out: &mut [Sha384Digest], data: &[u8]) {
    const PAGE: usize = 4096;
    const BATCH: usize = crate::simd::LANES;
    let mut done = 0;
    if crate::simd::available() {
        for (outs, ins) in out.chunks_exact_mut(BATCH).zip(data.chunks_exact(PAGE * BATCH)) {
            match crate::simd::sha384_8_pages(ins) {
                Some(d) => outs.copy_from_slice(&d),
                None => break,
            }
            done += BATCH;
        }
    }
    for (o, p) in out[done..].iter_mut().zip(data[done * PAGE..].chunks_exact(PAGE)) {
        *o = sha384(p);
    }
}

/// How many threads page hashing may use on this machine.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(sha256(b"abc").to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            sha384(b"abc").to_hex(),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
    }

    #[test]
    fn page_hashing_is_thread_count_independent() {
        let data: Vec<u8> = (0..4096 * 300).map(|i| (i * 7 % 251) as u8).collect();
        let one = sha384_pages(&data, 1);
        assert_eq!(one, sha384_pages(&data, 2));
        assert_eq!(one, sha384_pages(&data, 7));
        assert_eq!(one[5], sha384(&data[5 * 4096..6 * 4096]));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = sha384(b"x");
        assert_eq!(Sha384Digest::from_hex(&d.to_hex()).ok(), Some(d));
        assert!(Sha384Digest::from_hex("abc").is_err());
        assert_eq!(Sha384Digest::from_hex(&format!("0x{}", d.to_hex())).ok(), Some(d));
        assert!(Sha384Digest::from_hex(&"zz".repeat(48)).is_err());
    }
}
