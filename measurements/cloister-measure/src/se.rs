//! IBM Secure Execution (s390x) header parsing and the reference values it yields.
//!
//! `genprotimg` / `pvimg create` (s390-tools) encrypt the kernel, initrd and parameter line of a
//! guest and prepend a boot loader and an **SE header** (magic `IBMSecEx`). [`parse_se_header`]
//! accepts either the bare header (`hdr.bin`, as `pvextract-hdr` writes it) or a whole SE image, in
//! which the header is located through the image metadata (`SeImgLnx` at 0xC000, newer images) or
//! else by looking for the magic at the first 0x15 4 KiB page boundaries (older images; the header
//! sits at page 0x12–0x14 there).
//!
//! Header version 0x100, all integers big-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 8 | magic `IBMSecEx` |
//! | 0x008 | 4 | version (0x100) |
//! | 0x00C | 4 | header size (whole header, tag included; at most 8 KiB) |
//! | 0x010 | 12 | AES-GCM IV |
//! | 0x01C | 4 | reserved |
//! | 0x020 | 8 | number of key slots |
//! | 0x028 | 8 | size of the encrypted area |
//! | 0x030 | 8 | number of encrypted pages |
//! | 0x038 | 8 | plaintext control flags (PCF, bit 0 = most significant) |
//! | 0x040 | 160 | customer ECDH P-521 public key, X then Y, each big-endian in 80 bytes |
//! | 0x0E0 | 64 | PLD: SHA-512 over the encrypted component pages |
//! | 0x120 | 64 | ALD: SHA-512 over their addresses |
//! | 0x160 | 64 | TLD: SHA-512 over their XTS tweaks |
//! | 0x1A0 | 80 × n | key slots: PHKH (SHA-256 of the host key X‖Y, each padded to 80 bytes), wrapped key (32), slot tag (16) |
//! | … | encrypted-area size | encrypted: customer communication key, image XTS key, PSW, secret control flags (SCF), optional items |
//! | size − 16 | 16 | AES-GCM tag over the whole header (`se.tag`) |
//!
//! Every length is bounded before use: the header size must lie in [640, 8192] and within the
//! input, the key slots and the encrypted area must add up to exactly the header size, and nothing
//! past the input is ever read.
//!
//! ## What can and cannot be computed offline
//!
//! * **Nothing about a header is predictable from the kernel, initrd and parameter line.** The
//!   image encryption key, the customer key pair, the IV and the key-slot wrapping are random per
//!   build, so PLD/ALD/TLD (digests of encrypted pages and their tweaks) and the header tag change
//!   every time `genprotimg` runs, even on identical inputs. Reference values must be **read from the
//!   image that will actually be deployed** — this module does exactly that.
//! * Readable from the header: version, header size, IV, PCF flags, the customer public key,
//!   PLD/ALD/TLD, the number of encrypted pages, every key slot's PHKH and the tag. The
//!   `pld‖ald‖tld‖tag` block ([`SeHeader::boot_hdr_tags`]) is what the attestation HMAC covers.
//! * Not readable: everything in the encrypted area (secret control flags, PSW, the keys),
//!   because it is sealed to the host keys; the guest's actual kernel/initrd contents.
//! * `se.image_phkh`: the PHKH of the host key whose slot the Ultravisor used. The header lists
//!   one candidate per host key the image was built for ([`SeHeader::image_phkhs`]); which one a
//!   report carries depends on the machine the guest runs on.
//! * `se.attestation_phkh`: the hash of the host key the *attestation request* was encrypted to,
//!   chosen by the verifier (trustee encrypts to the host-key documents it is configured with). It
//!   is not in the image header; compute it from the host-key document's public key with
//!   [`phkh_from_host_key_coordinates`] (usually the same key as the image's, hence the same value).
//! * `se.cuid` (configuration unique ID) is assigned by the Ultravisor when the guest is created
//!   and arrives only in the attestation response; `se.user_data` comes from the guest (CoCo puts
//!   the report data / init-data digest there). Neither is derivable from the image.
//! * `se.version` in trustee's claims is the attestation-request version, the constant 256
//!   (0x0100); it happens to equal the header version but does not come from it.
//!
//! **What it trusts:** nothing. The input is untrusted bytes; the header's GCM tag cannot be
//! checked without the host's private key, so a parsed header is only as authentic as the file it
//! came from. Decide which image is the one you deploy before taking reference values from it.

use crate::digest::{Sha256Digest, Sha512Digest, sha256};

/// The header magic, ASCII `IBMSecEx`.
pub const SE_MAGIC: [u8; 8] = *b"IBMSecEx";
/// The only header version defined (0x100).
pub const SE_HDR_VERSION_1: u32 = 0x0000_0100;
/// Size of the cleartext head before the key slots.
pub const HEAD_LEN: usize = 0x1A0;
/// Size of one key slot.
pub const KEY_SLOT_LEN: usize = 80;
/// Size of the AES-GCM tag at the end of the header.
pub const TAG_LEN: usize = 16;
/// Smallest encrypted area (keys, PSW, flags, no optional items).
pub const MIN_ENCRYPTED_AREA_LEN: usize = 32 + 64 + 16 + 8 + 4 + 4;
/// Smallest header: head, one key slot, the minimal encrypted area and the tag (640 bytes).
pub const MIN_HEADER_LEN: usize = HEAD_LEN + KEY_SLOT_LEN + MIN_ENCRYPTED_AREA_LEN + TAG_LEN;
/// Largest version-1 header (two pages).
pub const MAX_HEADER_LEN: usize = 2 * PAGE_SIZE;
/// Page size the image layout uses.
pub const PAGE_SIZE: usize = 4096;
/// Number of page boundaries searched for the magic in an image without metadata.
pub const SEARCH_PAGES: usize = 0x15;
/// Offset of the SE image metadata in newer images.
pub const IMAGE_METADATA_OFFSET: usize = 0xC000;
/// Magic of the SE image metadata, ASCII `SeImgLnx`.
pub const IMAGE_METADATA_MAGIC: [u8; 8] = *b"SeImgLnx";
/// The `se.version` claim trustee reports (attestation request version 1 = 0x0100).
pub const TRUSTEE_SE_VERSION_CLAIM: u32 = 256;
/// Width of one coordinate of a host or customer public key (P-521 padded).
pub const EC_COORD_LEN: usize = 80;

/// Why an SE header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeHeaderError {
    /// Fewer bytes than the fixed head of a header.
    #[error("input is {len} bytes, too short for an SE header (need at least {need})")]
    TooShort {
        /// Bytes available (from the header start).
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A short input (no room for an image) that does not start with the magic.
    #[error("not an SE header: the first bytes are {found:02x?}, not \"IBMSecEx\"")]
    BadMagic {
        /// First 8 bytes of the input.
        found: [u8; 8],
    },
    /// An image in which no page boundary holds the magic.
    #[error("no SE header: \"IBMSecEx\" is not at offset 0 nor at any of the first {pages} 4 KiB page boundaries")]
    MagicNotFound {
        /// Page boundaries searched.
        pages: usize,
    },
    /// The image metadata names a header offset that does not hold a header.
    #[error("SE image metadata points to header offset {offset:#x}, which {reason}")]
    BadImageMetadata {
        /// Offset from the metadata.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A version other than 0x100.
    #[error("unsupported SE header version {found:#x} (only 0x100 is defined)")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// The header size field is below the smallest valid header.
    #[error("SE header size {size} is below the minimum of {min} bytes")]
    HeaderSizeTooSmall {
        /// Declared size.
        size: u32,
        /// Minimum.
        min: usize,
    },
    /// The header size field exceeds what version 1 allows.
    #[error("SE header size {size} exceeds the maximum of {max} bytes")]
    HeaderSizeTooLarge {
        /// Declared size.
        size: u32,
        /// Maximum.
        max: usize,
    },
    /// The header size field is larger than the data present.
    #[error("SE header at offset {offset:#x} declares {size} bytes but only {available} are present")]
    Truncated {
        /// Header offset in the input.
        offset: usize,
        /// Declared size.
        size: u32,
        /// Bytes available from the header start.
        available: usize,
    },
    /// A header without key slots (no host could ever unpack it).
    #[error("SE header has no key slots")]
    NoKeySlots,
    /// The key slots do not fit in the declared header size.
    #[error("SE header declares {count} key slots, which do not fit in its {size} bytes")]
    KeySlotOverrun {
        /// Declared key-slot count.
        count: u64,
        /// Declared header size.
        size: u32,
    },
    /// The encrypted-area size is inconsistent with the header size and key-slot count.
    #[error("SE header encrypted-area size is {sea}, but header size {size} with {count} key slots leaves {expected}")]
    EncryptedAreaMismatch {
        /// Declared encrypted-area size.
        sea: u64,
        /// Declared header size.
        size: u32,
        /// Declared key-slot count.
        count: u64,
        /// Size implied by the other fields.
        expected: u64,
    },
    /// The encrypted area is smaller than its fixed fields.
    #[error("SE header encrypted area is {sea} bytes, below the minimum of {min}")]
    EncryptedAreaTooSmall {
        /// Declared encrypted-area size.
        sea: u64,
        /// Minimum.
        min: usize,
    },
    /// A host public-key coordinate longer than 80 bytes.
    #[error("host public key coordinate is {len} bytes, more than {max}")]
    HostKeyCoordinateTooLong {
        /// Length given.
        len: usize,
        /// Maximum.
        max: usize,
    },
}

/// Where in the input the header was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeHeaderLocation {
    /// The input starts with the header (`hdr.bin`).
    Bare,
    /// Through the `SeImgLnx` image metadata at 0xC000.
    ImageMetadata,
    /// At a 4 KiB page boundary of an image without metadata.
    PageScan,
}

/// One key slot: which host key can unwrap the image key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeKeySlot {
    /// Public host key hash: SHA-256 of the host key's X‖Y, each big-endian padded to 80 bytes.
    pub phkh: Sha256Digest,
    /// The image key wrapped for this host (opaque without the host's private key).
    pub wrapped_key: [u8; 32],
    /// AES-GCM tag of the wrapped key.
    pub tag: [u8; 16],
}

/// The customer ECDH public key (P-521) stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeCustomerKey {
    /// X, big-endian, left-padded to 80 bytes.
    pub x: [u8; EC_COORD_LEN],
    /// Y, big-endian, left-padded to 80 bytes.
    pub y: [u8; EC_COORD_LEN],
}

/// A known plaintext control flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SePcfFlag {
    /// Bit 34: the guest may be dumped.
    AllowDumping,
    /// Bit 35: components are not encrypted (the Ultravisor does not decrypt at unpack).
    NoComponentEncryption,
    /// Bit 56: PCKMO DEA/TDEA key functions allowed.
    PckmoDeaTdea,
    /// Bit 57: PCKMO AES key functions allowed.
    PckmoAes,
    /// Bit 58: PCKMO ECC key functions allowed.
    PckmoEcc,
    /// Bit 59: PCKMO HMAC key functions allowed.
    PckmoHmac,
    /// Bit 62: backup target keys supported.
    BackupTargetKeys,
}

impl SePcfFlag {
    /// All known flags.
    pub const ALL: [SePcfFlag; 7] = [
        SePcfFlag::AllowDumping,
        SePcfFlag::NoComponentEncryption,
        SePcfFlag::PckmoDeaTdea,
        SePcfFlag::PckmoAes,
        SePcfFlag::PckmoEcc,
        SePcfFlag::PckmoHmac,
        SePcfFlag::BackupTargetKeys,
    ];

    /// Bit number, 0 being the most significant bit of the 64-bit field.
    pub const fn bit(self) -> u32 {
        match self {
            SePcfFlag::AllowDumping => 34,
            SePcfFlag::NoComponentEncryption => 35,
            SePcfFlag::PckmoDeaTdea => 56,
            SePcfFlag::PckmoAes => 57,
            SePcfFlag::PckmoEcc => 58,
            SePcfFlag::PckmoHmac => 59,
            SePcfFlag::BackupTargetKeys => 62,
        }
    }

    /// The flag as a mask on the `u64` field.
    pub const fn mask(self) -> u64 {
        1u64 << (63 - self.bit())
    }

    /// A short machine-friendly name.
    pub const fn name(self) -> &'static str {
        match self {
            SePcfFlag::AllowDumping => "allow-dumping",
            SePcfFlag::NoComponentEncryption => "no-component-encryption",
            SePcfFlag::PckmoDeaTdea => "pckmo-dea-tdea",
            SePcfFlag::PckmoAes => "pckmo-aes",
            SePcfFlag::PckmoEcc => "pckmo-ecc",
            SePcfFlag::PckmoHmac => "pckmo-hmac",
            SePcfFlag::BackupTargetKeys => "backup-target-keys",
        }
    }
}

/// A parsed SE header (cleartext part only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeHeader {
    /// Offset of the header in the input.
    pub offset: usize,
    /// How it was found.
    pub location: SeHeaderLocation,
    /// Header version (0x100).
    pub version: u32,
    /// Header size in bytes, tag included.
    pub header_size: u32,
    /// AES-GCM IV of the header.
    pub iv: [u8; 12],
    /// Size of the encrypted area.
    pub encrypted_area_size: u64,
    /// Number of encrypted component pages.
    pub encrypted_pages: u64,
    /// Plaintext control flags (raw).
    pub pcf: u64,
    /// Customer ECDH public key.
    pub customer_public_key: SeCustomerKey,
    /// Page-list digest.
    pub pld: Sha512Digest,
    /// Address-list digest.
    pub ald: Sha512Digest,
    /// Tweak-list digest.
    pub tld: Sha512Digest,
    /// Key slots, one per host key the image was built for.
    pub key_slots: Vec<SeKeySlot>,
    /// The last 16 bytes of the header (`se.tag`).
    pub tag: [u8; TAG_LEN],
}

/// Values a verifier compares for an SE guest built from this header, named as in trustee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeReferenceValues {
    /// `se.version` (attestation request version, 256).
    pub version: u32,
    /// `se.tag`.
    pub tag: [u8; TAG_LEN],
    /// Acceptable `se.image_phkh` values (one per key slot).
    pub image_phkh: Vec<Sha256Digest>,
}

impl SeReferenceValues {
    /// The tag as lowercase hex.
    pub fn tag_hex(&self) -> String {
        hex::encode(self.tag)
    }

    /// A JSON object in the shape of trustee's RVPS sample (`{"se.tag": ["…"], …}`), values as
    /// strings. `se.attestation_phkh`, `se.cuid` and `se.user_data` are deliberately absent (see the
    /// module documentation).
    pub fn to_json(&self) -> String {
        let phkhs: Vec<String> = self.image_phkh.iter().map(|d| format!("\"{}\"", d.to_hex())).collect();
        format!(
            "{{\"se.version\":[\"{}\"],\"se.tag\":[\"{}\"],\"se.image_phkh\":[{}]}}",
            self.version,
            self.tag_hex(),
            phkhs.join(",")
        )
    }
}

impl SeHeader {
    /// The PHKHs of all key slots: the acceptable `se.image_phkh` values.
    pub fn image_phkhs(&self) -> Vec<Sha256Digest> {
        self.key_slots.iter().map(|s| s.phkh).collect()
    }

    /// Whether the image can be unpacked by the host key with this PHKH.
    pub fn has_host_key(&self, phkh: &Sha256Digest) -> bool {
        self.key_slots.iter().any(|s| s.phkh == *phkh)
    }

    /// The known plaintext control flags that are set.
    pub fn pcf_flags(&self) -> Vec<SePcfFlag> {
        SePcfFlag::ALL.into_iter().filter(|f| self.pcf & f.mask() != 0).collect()
    }

    /// PCF bits set that this module does not know.
    pub fn unknown_pcf_bits(&self) -> u64 {
        SePcfFlag::ALL.into_iter().fold(self.pcf, |acc, f| acc & !f.mask())
    }

    /// `pld ‖ ald ‖ tld ‖ tag` (208 bytes): the "header tags" the attestation measurement covers
    /// and that trustee sends as `image_hdr_tags`.
    pub fn boot_hdr_tags(&self) -> [u8; 3 * 64 + TAG_LEN] {
        let mut out = [0u8; 3 * 64 + TAG_LEN];
        out[0..64].copy_from_slice(self.pld.as_bytes());
        out[64..128].copy_from_slice(self.ald.as_bytes());
        out[128..192].copy_from_slice(self.tld.as_bytes());
        out[192..].copy_from_slice(&self.tag);
        out
    }

    /// The reference values a verifier needs from this image.
    pub fn reference_values(&self) -> SeReferenceValues {
        SeReferenceValues { version: TRUSTEE_SE_VERSION_CLAIM, tag: self.tag, image_phkh: self.image_phkhs() }
    }
}

/// Parses the SE header of a bare `hdr.bin` or of a whole SE image.
pub fn parse_se_header(bytes: &[u8]) -> Result<SeHeader, SeHeaderError> {
    let (offset, location) = locate(bytes)?;
    let data = bytes.get(offset..).unwrap_or_default();
    parse_at(data, offset, location)
}

/// The header bytes (what `pvextract-hdr` writes), after full validation.
pub fn extract_se_header(bytes: &[u8]) -> Result<&[u8], SeHeaderError> {
    let hdr = parse_se_header(bytes)?;
    let end = hdr.offset.saturating_add(hdr.header_size as usize);
    bytes.get(hdr.offset..end).ok_or(SeHeaderError::Truncated {
        offset: hdr.offset,
        size: hdr.header_size,
        available: bytes.len().saturating_sub(hdr.offset),
    })
}

/// The PHKH of a host key given its affine coordinates (big-endian, at most 80 bytes each, as
/// taken from the host-key document's P-521 public key): SHA-256 of X‖Y, each left-padded with
/// zeros to 80 bytes. This is the value of `se.attestation_phkh` / `se.image_phkh` for that host.
pub fn phkh_from_host_key_coordinates(x: &[u8], y: &[u8]) -> Result<Sha256Digest, SeHeaderError> {
    let mut buf = [0u8; 2 * EC_COORD_LEN];
    for (coord, slot) in [(x, 0usize), (y, EC_COORD_LEN)] {
        if coord.len() > EC_COORD_LEN {
            return Err(SeHeaderError::HostKeyCoordinateTooLong { len: coord.len(), max: EC_COORD_LEN });
        }
        let start = slot + EC_COORD_LEN - coord.len();
        buf[start..slot + EC_COORD_LEN].copy_from_slice(coord);
    }
    Ok(sha256(&buf))
}

fn starts_with_magic(bytes: &[u8], at: usize, magic: &[u8; 8]) -> bool {
    at.checked_add(8).and_then(|end| bytes.get(at..end)).is_some_and(|b| b == magic)
}

fn locate(bytes: &[u8]) -> Result<(usize, SeHeaderLocation), SeHeaderError> {
    if bytes.len() < SE_MAGIC.len() {
        return Err(SeHeaderError::TooShort { len: bytes.len(), need: HEAD_LEN });
    }
    if starts_with_magic(bytes, 0, &SE_MAGIC) {
        return Ok((0, SeHeaderLocation::Bare));
    }
    if starts_with_magic(bytes, IMAGE_METADATA_OFFSET, &IMAGE_METADATA_MAGIC) {
        let off = read_u64(bytes, IMAGE_METADATA_OFFSET + 8)
            .ok_or(SeHeaderError::TooShort { len: bytes.len(), need: IMAGE_METADATA_OFFSET + 16 })?;
        let Ok(at) = usize::try_from(off) else {
            return Err(SeHeaderError::BadImageMetadata { offset: off, reason: "does not fit in memory" });
        };
        if at >= bytes.len() {
            return Err(SeHeaderError::BadImageMetadata { offset: off, reason: "lies beyond the end of the image" });
        }
        if !starts_with_magic(bytes, at, &SE_MAGIC) {
            return Err(SeHeaderError::BadImageMetadata {
                offset: off,
                reason: "does not hold the \"IBMSecEx\" magic",
            });
        }
        return Ok((at, SeHeaderLocation::ImageMetadata));
    }
    if bytes.len() < PAGE_SIZE {
        let mut found = [0u8; 8];
        found.copy_from_slice(&bytes[..8]);
        return Err(SeHeaderError::BadMagic { found });
    }
    (1..SEARCH_PAGES)
        .map(|page| page * PAGE_SIZE)
        .find(|&at| starts_with_magic(bytes, at, &SE_MAGIC))
        .map(|at| (at, SeHeaderLocation::PageScan))
        .ok_or(SeHeaderError::MagicNotFound { pages: SEARCH_PAGES })
}

fn read_array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    b.get(at..end)?.try_into().ok()
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    read_array::<4>(b, at).map(u32::from_be_bytes)
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    read_array::<8>(b, at).map(u64::from_be_bytes)
}

fn parse_at(data: &[u8], offset: usize, location: SeHeaderLocation) -> Result<SeHeader, SeHeaderError> {
    let short = SeHeaderError::TooShort { len: data.len(), need: HEAD_LEN };
    if data.len() < HEAD_LEN {
        return Err(short);
    }
    let version = read_u32(data, 0x08).ok_or_else(|| short.clone())?;
    if version != SE_HDR_VERSION_1 {
        return Err(SeHeaderError::UnsupportedVersion { found: version });
    }
    let size = read_u32(data, 0x0C).ok_or_else(|| short.clone())?;
    let size_usize = size as usize;
    if size_usize < MIN_HEADER_LEN {
        return Err(SeHeaderError::HeaderSizeTooSmall { size, min: MIN_HEADER_LEN });
    }
    if size_usize > MAX_HEADER_LEN {
        return Err(SeHeaderError::HeaderSizeTooLarge { size, max: MAX_HEADER_LEN });
    }
    let Some(hdr) = data.get(..size_usize) else {
        return Err(SeHeaderError::Truncated { offset, size, available: data.len() });
    };
    let truncated = || SeHeaderError::Truncated { offset, size, available: data.len() };

    let nks = read_u64(hdr, 0x20).ok_or_else(truncated)?;
    let sea = read_u64(hdr, 0x28).ok_or_else(truncated)?;
    if nks == 0 {
        return Err(SeHeaderError::NoKeySlots);
    }
    // All quantities below are bounded by MAX_HEADER_LEN once the first check passes.
    let slots_len = nks
        .checked_mul(KEY_SLOT_LEN as u64)
        .filter(|&l| l <= (size_usize - HEAD_LEN - TAG_LEN) as u64)
        .ok_or(SeHeaderError::KeySlotOverrun { count: nks, size })?;
    let expected_sea = (size_usize - HEAD_LEN - TAG_LEN) as u64 - slots_len;
    if sea != expected_sea {
        return Err(SeHeaderError::EncryptedAreaMismatch { sea, size, count: nks, expected: expected_sea });
    }
    if sea < MIN_ENCRYPTED_AREA_LEN as u64 {
        return Err(SeHeaderError::EncryptedAreaTooSmall { sea, min: MIN_ENCRYPTED_AREA_LEN });
    }

    let slot_count = (slots_len as usize) / KEY_SLOT_LEN;
    let mut key_slots = Vec::with_capacity(slot_count);
    for i in 0..slot_count {
        let at = HEAD_LEN + i * KEY_SLOT_LEN;
        key_slots.push(SeKeySlot {
            phkh: Sha256Digest(read_array(hdr, at).ok_or_else(truncated)?),
            wrapped_key: read_array(hdr, at + 32).ok_or_else(truncated)?,
            tag: read_array(hdr, at + 64).ok_or_else(truncated)?,
        });
    }

    Ok(SeHeader {
        offset,
        location,
        version,
        header_size: size,
        iv: read_array(hdr, 0x10).ok_or_else(truncated)?,
        encrypted_area_size: sea,
        encrypted_pages: read_u64(hdr, 0x30).ok_or_else(truncated)?,
        pcf: read_u64(hdr, 0x38).ok_or_else(truncated)?,
        customer_public_key: SeCustomerKey {
            x: read_array(hdr, 0x40).ok_or_else(truncated)?,
            y: read_array(hdr, 0x40 + EC_COORD_LEN).ok_or_else(truncated)?,
        },
        pld: Sha512Digest(read_array(hdr, 0xE0).ok_or_else(truncated)?),
        ald: Sha512Digest(read_array(hdr, 0x120).ok_or_else(truncated)?),
        tld: Sha512Digest(read_array(hdr, 0x160).ok_or_else(truncated)?),
        key_slots,
        tag: read_array(hdr, size_usize - TAG_LEN).ok_or_else(truncated)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    /// Builds a version-1 header byte by byte from the documented layout.
    fn synthetic_header(nks: usize, optional_items: usize, pcf: u64) -> Vec<u8> {
        let sea = MIN_ENCRYPTED_AREA_LEN + optional_items;
        let size = HEAD_LEN + nks * KEY_SLOT_LEN + sea + TAG_LEN;
        let mut h = Vec::with_capacity(size);
        h.extend_from_slice(b"IBMSecEx");
        h.extend_from_slice(&0x100u32.to_be_bytes());
        h.extend_from_slice(&(size as u32).to_be_bytes());
        h.extend_from_slice(&[0xA1; 12]); // IV
        h.extend_from_slice(&0u32.to_be_bytes()); // reserved
        h.extend_from_slice(&(nks as u64).to_be_bytes());
        h.extend_from_slice(&(sea as u64).to_be_bytes());
        h.extend_from_slice(&1234u64.to_be_bytes()); // encrypted pages
        h.extend_from_slice(&pcf.to_be_bytes());
        h.extend_from_slice(&[0xC1; 80]); // customer key X
        h.extend_from_slice(&[0xC2; 80]); // customer key Y
        h.extend_from_slice(&[0xD1; 64]); // PLD
        h.extend_from_slice(&[0xD2; 64]); // ALD
        h.extend_from_slice(&[0xD3; 64]); // TLD
        assert_eq!(h.len(), HEAD_LEN);
        for i in 0..nks {
            h.extend_from_slice(&[0x10 + i as u8; 32]); // PHKH
            h.extend_from_slice(&[0x20 + i as u8; 32]); // wrapped key
            h.extend_from_slice(&[0x30 + i as u8; 16]); // slot tag
        }
        h.extend(std::iter::repeat_n(0xEE, sea)); // encrypted area
        h.extend_from_slice(&[0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7]);
        h.extend_from_slice(&[0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF]);
        assert_eq!(h.len(), size);
        h
    }

    fn set_u32(h: &mut [u8], at: usize, v: u32) {
        h[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn set_u64(h: &mut [u8], at: usize, v: u64) {
        h[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    const TAG: [u8; 16] =
        [0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];

    #[test]
    fn parses_bare_header() {
        let pcf = SePcfFlag::AllowDumping.mask() | SePcfFlag::PckmoAes.mask() | 1;
        let h = synthetic_header(2, 0, pcf);
        assert_eq!(h.len(), 720);
        let hdr = parse_se_header(&h).unwrap();
        assert_eq!(hdr.offset, 0);
        assert_eq!(hdr.location, SeHeaderLocation::Bare);
        assert_eq!(hdr.version, 0x100);
        assert_eq!(hdr.header_size, 720);
        assert_eq!(hdr.iv, [0xA1; 12]);
        assert_eq!(hdr.encrypted_area_size, 128);
        assert_eq!(hdr.encrypted_pages, 1234);
        assert_eq!(hdr.pcf, pcf);
        assert_eq!(hdr.pcf_flags(), vec![SePcfFlag::AllowDumping, SePcfFlag::PckmoAes]);
        assert_eq!(hdr.unknown_pcf_bits(), 1);
        assert_eq!(SePcfFlag::AllowDumping.mask(), 0x2000_0000);
        assert_eq!(hdr.customer_public_key.x, [0xC1; 80]);
        assert_eq!(hdr.customer_public_key.y, [0xC2; 80]);
        assert_eq!(hdr.pld, Sha512Digest([0xD1; 64]));
        assert_eq!(hdr.ald, Sha512Digest([0xD2; 64]));
        assert_eq!(hdr.tld, Sha512Digest([0xD3; 64]));
        assert_eq!(hdr.key_slots.len(), 2);
        assert_eq!(hdr.key_slots[1].phkh, Sha256Digest([0x11; 32]));
        assert_eq!(hdr.key_slots[1].wrapped_key, [0x21; 32]);
        assert_eq!(hdr.key_slots[1].tag, [0x31; 16]);
        assert_eq!(hdr.tag, TAG);
        assert!(hdr.has_host_key(&Sha256Digest([0x10; 32])));
        assert!(!hdr.has_host_key(&Sha256Digest([0x12; 32])));

        let tags = hdr.boot_hdr_tags();
        assert_eq!(&tags[..64], &[0xD1; 64]);
        assert_eq!(&tags[192..], &TAG);

        let rv = hdr.reference_values();
        assert_eq!(rv.version, 256);
        assert_eq!(rv.tag_hex(), "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        assert_eq!(
            rv.to_json(),
            format!(
                "{{\"se.version\":[\"256\"],\"se.tag\":[\"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\"],\"se.image_phkh\":[\"{}\",\"{}\"]}}",
                "10".repeat(32),
                "11".repeat(32)
            )
        );
        assert_eq!(extract_se_header(&h).unwrap(), &h[..]);
    }

    #[test]
    fn header_with_optional_items_and_trailing_bytes() {
        let mut h = synthetic_header(1, 64, 0);
        let size = h.len();
        h.extend_from_slice(&[0x55; 100]); // whatever follows in a file
        let hdr = parse_se_header(&h).unwrap();
        assert_eq!(hdr.header_size as usize, size);
        assert_eq!(hdr.encrypted_area_size, 192);
        assert_eq!(hdr.tag, TAG);
        assert_eq!(extract_se_header(&h).unwrap().len(), size);
    }

    #[test]
    fn finds_header_in_image_by_page_scan() {
        let h = synthetic_header(1, 0, 0);
        let mut img = vec![0u8; 0x13000];
        img[0x12000..0x12000 + h.len()].copy_from_slice(&h);
        let hdr = parse_se_header(&img).unwrap();
        assert_eq!(hdr.offset, 0x12000);
        assert_eq!(hdr.location, SeHeaderLocation::PageScan);
        assert_eq!(hdr.tag, TAG);
        assert_eq!(extract_se_header(&img).unwrap(), &h[..]);

        // Not at a page boundary: not found.
        let mut img = vec![0u8; 0x13000];
        img[0x12008..0x12008 + h.len()].copy_from_slice(&h);
        assert_eq!(parse_se_header(&img), Err(SeHeaderError::MagicNotFound { pages: 0x15 }));
        // Beyond the searched pages: not found.
        let mut img = vec![0u8; 0x17000];
        img[0x16000..0x16000 + h.len()].copy_from_slice(&h);
        assert!(matches!(parse_se_header(&img), Err(SeHeaderError::MagicNotFound { .. })));
    }

    #[test]
    fn finds_header_in_image_by_metadata() {
        let h = synthetic_header(3, 0, 0);
        let mut img = vec![0u8; 0x15000];
        img[0xC000..0xC008].copy_from_slice(b"SeImgLnx");
        set_u64(&mut img, 0xC008, 0x14000); // header offset
        set_u32(&mut img, 0xC010, 1); // metadata version
        set_u64(&mut img, 0xC014, 0x16000); // IPIB offset
        img[0x14000..0x14000 + h.len()].copy_from_slice(&h);
        let hdr = parse_se_header(&img).unwrap();
        assert_eq!(hdr.offset, 0x14000);
        assert_eq!(hdr.location, SeHeaderLocation::ImageMetadata);
        assert_eq!(hdr.key_slots.len(), 3);

        set_u64(&mut img, 0xC008, 0x13000);
        assert!(matches!(parse_se_header(&img), Err(SeHeaderError::BadImageMetadata { offset: 0x13000, .. })));
        set_u64(&mut img, 0xC008, u64::MAX);
        assert!(matches!(parse_se_header(&img), Err(SeHeaderError::BadImageMetadata { .. })));
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = synthetic_header(2, 0, 0);

        assert_eq!(parse_se_header(&good[..100]), Err(SeHeaderError::TooShort { len: 100, need: 416 }));
        assert!(matches!(parse_se_header(&good[..3]), Err(SeHeaderError::TooShort { .. })));
        assert_eq!(
            parse_se_header(&good[..700]),
            Err(SeHeaderError::Truncated { offset: 0, size: 720, available: 700 })
        );

        let mut h = good.clone();
        h[0] = b'X';
        assert!(matches!(parse_se_header(&h), Err(SeHeaderError::BadMagic { .. })));

        let mut h = good.clone();
        set_u32(&mut h, 8, 0x200);
        assert_eq!(parse_se_header(&h), Err(SeHeaderError::UnsupportedVersion { found: 0x200 }));

        let mut h = good.clone();
        set_u32(&mut h, 0x0C, 0x10000);
        assert!(matches!(parse_se_header(&h), Err(SeHeaderError::HeaderSizeTooLarge { size: 0x10000, .. })));

        let mut h = good.clone();
        set_u32(&mut h, 0x0C, 600);
        assert!(matches!(parse_se_header(&h), Err(SeHeaderError::HeaderSizeTooSmall { size: 600, .. })));

        let mut h = good.clone();
        set_u64(&mut h, 0x20, 0);
        assert_eq!(parse_se_header(&h), Err(SeHeaderError::NoKeySlots));

        for nks in [7u64, 1 << 60, u64::MAX] {
            let mut h = good.clone();
            set_u64(&mut h, 0x20, nks);
            assert_eq!(parse_se_header(&h), Err(SeHeaderError::KeySlotOverrun { count: nks, size: 720 }));
        }

        let mut h = good.clone();
        set_u64(&mut h, 0x28, 129);
        assert_eq!(
            parse_se_header(&h),
            Err(SeHeaderError::EncryptedAreaMismatch { sea: 129, size: 720, count: 2, expected: 128 })
        );

        // Three slots in a two-slot-sized header leave only 48 bytes for the encrypted area.
        let mut h = good.clone();
        set_u64(&mut h, 0x20, 3);
        set_u64(&mut h, 0x28, 48);
        assert_eq!(parse_se_header(&h), Err(SeHeaderError::EncryptedAreaTooSmall { sea: 48, min: 128 }));

        let img = vec![0u8; 0x20000];
        assert_eq!(parse_se_header(&img), Err(SeHeaderError::MagicNotFound { pages: 0x15 }));
    }

    #[test]
    fn host_key_phkh() {
        let x = [0x01u8; 66];
        let y = [0x02u8; 66];
        let mut buf = vec![0u8; 14];
        buf.extend_from_slice(&x);
        buf.extend(std::iter::repeat_n(0u8, 14));
        buf.extend_from_slice(&y);
        assert_eq!(phkh_from_host_key_coordinates(&x, &y).unwrap(), sha256(&buf));
        assert_eq!(
            phkh_from_host_key_coordinates(&[0; 81], &y),
            Err(SeHeaderError::HostKeyCoordinateTooLong { len: 81, max: 80 })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            let _ = parse_se_header(&bytes);
            let _ = extract_se_header(&bytes);
        }

        #[test]
        fn random_header_fields_never_panic(
            size in any::<u32>(),
            nks in any::<u64>(),
            sea in any::<u64>(),
            len in 0usize..9000,
            fill in any::<u8>(),
        ) {
            let mut h = vec![fill; len.max(16)];
            h[..8].copy_from_slice(b"IBMSecEx");
            h[8..12].copy_from_slice(&0x100u32.to_be_bytes());
            h[12..16].copy_from_slice(&size.to_be_bytes());
            if h.len() >= 0x30 {
                h[0x20..0x28].copy_from_slice(&nks.to_be_bytes());
                h[0x28..0x30].copy_from_slice(&sea.to_be_bytes());
            }
            if let Ok(hdr) = parse_se_header(&h) {
                prop_assert!(hdr.header_size as usize <= h.len());
                prop_assert_eq!(hdr.key_slots.len() as u64, nks);
                prop_assert_eq!(&hdr.tag[..], &h[hdr.header_size as usize - 16..hdr.header_size as usize]);
            }
        }

        #[test]
        fn mutated_valid_header_never_panics(
            nks in 1usize..5,
            pos in 0usize..1200,
            byte in any::<u8>(),
            cut in 0usize..1200,
        ) {
            let mut h = synthetic_header(nks, 0, 0);
            let p = pos % h.len();
            h[p] = byte;
            let c = cut.min(h.len());
            let _ = parse_se_header(&h[..c]);
            let _ = parse_se_header(&h);
        }
    }
}
