//! QEMU's SEV kernel-hashes table (measured direct boot, `sev_add_kernel_loader_hashes`).
//!
//! Only the SHA-256 values of kernel, initrd and command line enter a measurement, so a
//! [`KernelHashes`] can be built from file contents or from digests computed elsewhere.

use crate::digest::{Sha256Digest, sha256};
use crate::guid::known;

/// Length of the table without padding: header (16 + 2) and three entries of 16 + 2 + 32.
pub const TABLE_LEN: usize = 168;
/// Length of the table as QEMU places it: padded to a multiple of 16.
pub const PADDED_TABLE_LEN: usize = 176;

/// The three digests of a measured direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file.
    pub kernel: Sha256Digest,
    /// SHA-256 of the initrd file, or of the empty string when there is none.
    pub initrd: Sha256Digest,
    /// SHA-256 of the command line bytes followed by one NUL.
    pub cmdline: Sha256Digest,
}

impl KernelHashes {
    /// From file contents. An absent or empty `append` hashes as a single NUL byte; an absent
    /// initrd hashes as the empty string.
    pub fn from_contents(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Self {
        KernelHashes {
            kernel: sha256(kernel),
            initrd: sha256(initrd.unwrap_or_default()),
            cmdline: cmdline_digest(append),
        }
    }

    /// The 176-byte table exactly as QEMU writes it.
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        t[..16].copy_from_slice(known::SEV_HASH_TABLE_HEADER.as_bytes_le());
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (known::SEV_CMDLINE_ENTRY, &self.cmdline),
            (known::SEV_INITRD_ENTRY, &self.initrd),
            (known::SEV_KERNEL_ENTRY, &self.kernel),
        ];
        for (i, (guid, digest)) in entries.iter().enumerate() {
            let at = 18 + i * 50;
            t[at..at + 16].copy_from_slice(guid.as_bytes_le());
            t[at + 16..at + 18].copy_from_slice(&50u16.to_le_bytes());
            t[at + 18..at + 50].copy_from_slice(digest.as_bytes());
        }
        t
    }
}

/// SHA-256 of the command line as QEMU measures it: the UTF-8 bytes and one NUL; absent or empty
/// is just the NUL.
pub fn cmdline_digest(append: Option<&str>) -> Sha256Digest {
    let mut buf = Vec::with_capacity(append.map_or(0, str::len) + 1);
    buf.extend_from_slice(append.unwrap_or_default().as_bytes());
    buf.push(0);
    sha256(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The S05/V01 table printed in `fixtures/measure/README.md` (cmdline "console=ttyS0
    /// loglevel=7", initrd-synth.img, Debian vmlinuz-6.1.0-56-cloud-amd64), built from its three
    /// digests.
    #[test]
    fn matches_the_published_table() {
        let expected = concat!(
            "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a3200321c8eec6a77bad179511397f913a083",
            "067ad8cb737bb260aacbfe8df70fc50a31f7ba442f3ad74b9af141e29169781d3200f00cc1852688d2a956baf9ad5f4d4c45a7c5",
            "61128a20af1e3b6f13eae41ec0003794e74dd2ab7f42b835d5b172d2045b320051349501a3d1ff83836437d2b365fd2d57f2feb8",
            "642d315e5181dec23d4c32750000000000000000"
        );
        let d = |s: &str| Sha256Digest::from_hex(s).expect("hex");
        let h = KernelHashes {
            kernel: d("51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275"),
            initrd: d("f00cc1852688d2a956baf9ad5f4d4c45a7c561128a20af1e3b6f13eae41ec000"),
            cmdline: cmdline_digest(Some("console=ttyS0 loglevel=7")),
        };
        assert_eq!(h.cmdline.to_hex(), "321c8eec6a77bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a");
        assert_eq!(hex::encode(h.table()), expected);
    }

    #[test]
    fn empty_append_is_one_nul() {
        assert_eq!(cmdline_digest(None), cmdline_digest(Some("")));
        assert_eq!(cmdline_digest(None), sha256(&[0]));
    }
}
