//! Intel TDX: the TDVF metadata of a firmware image and the MRTD it produces.
//!
//! A TDVF image (edk2 `IntelTdx` / unified `OVMF.fd`, td-shim) describes, in a `TDVF` descriptor,
//! which parts of the file the VMM copies into the initial TD memory and which of them the TDX module
//! measures. [`parse_tdvf`] finds and validates that descriptor; [`mrtd`] replays the build-time
//! measurement (`TDH.MEM.PAGE.ADD` / `TDH.MR.EXTEND` records in one running SHA-384) and returns the
//! MRTD the TD report will carry for a QEMU launch.
//!
//! **Locating the descriptor.** Through the OVMF footer-table entry `e47a6535-…` (its u32 is the
//! offset of the descriptor from the end of the file). Only when that entry is absent, the td-shim
//! legacy pointer (a u32 file offset of the descriptor stored at `len − 0x20`) is tried; it is used only
//! if it lands inside the file on the TDX metadata GUID followed by `"TDVF"`, otherwise the image is
//! reported as having no TDX metadata (reset-vector code occupies those bytes in edk2 images).
//! The 16-byte GUID `e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae` must precede the descriptor in both cases.
//!
//! **What it trusts:** nothing. The image is untrusted bytes; every offset, size and count is checked
//! against the file before use, and a malformed or unsupported descriptor is rejected with a typed
//! [`TdxError`] instead of producing a value the hardware would never report. In particular:
//! * unknown section types and unknown attribute bits are errors (their effect on MRTD is unknown);
//! * split `OVMF_CODE*.fd` builds are rejected because their sections point past the end of the file
//!   ([`TdxError::RawDataOutsideFile`]); only the unified image is a valid TDVF input;
//! * sections whose memory ranges overlap, exceed the 52-bit guest-physical space, or together
//!   exceed [`MAX_TOTAL_MEMORY`] are rejected, which also bounds the work [`mrtd`] can be made to do.
//!
//! With QEMU, MRTD depends only on the firmware image; VMMs that add further pages (GCE's RAM layout,
//! td-shim payloads loaded by Cloud Hypervisor) are not modelled here.

use std::fmt;

use crate::digest::{Sha384, Sha384Digest};
use crate::guid::{Guid, known};
use crate::ovmf::{FirmwareImage, read_u32, read_u64};

/// Size of a TDX page.
pub const PAGE_SIZE: u64 = 4096;
/// Granularity of `TDH.MR.EXTEND`.
const CHUNK: usize = 256;
/// Chunks per page.
const CHUNKS_PER_PAGE: u64 = PAGE_SIZE / CHUNK as u64;
/// Length of one measurement record fed to the hash before the data.
const RECORD: usize = 128;
/// `"TDVF"` signature + length + version + section count.
const DESCRIPTOR_HEADER: usize = 16;
/// One section entry.
const SECTION_LEN: usize = 32;
/// Length of the GUID in front of the descriptor.
const GUID_LEN: usize = 16;
/// td-shim's legacy pointer: a u32 at `len - 0x20`.
const LEGACY_POINTER_FROM_END: usize = 0x20;
/// Guest-physical addresses are at most 52 bits wide.
const MAX_GPA: u64 = 1 << 52;

/// Upper bound on the sum of all sections' memory sizes (4 GiB). Real TDVF images use a few MiB;
/// the bound keeps a hostile descriptor from making [`mrtd`] hash for hours.
pub const MAX_TOTAL_MEMORY: u64 = 1 << 32;

/// Why a TDVF image was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdxError {
    /// The OVMF footer table itself could not be read.
    #[error("cannot read the firmware's OVMF footer table: {0}")]
    Firmware(#[from] crate::Error),
    /// Neither a footer-table entry nor a valid legacy pointer locates TDX metadata.
    #[error(
        "firmware has no TDX metadata (no footer-table entry {guid} and no td-shim legacy pointer): not a TDVF image",
        guid = known::TDX_METADATA_OFFSET
    )]
    NoTdxMetadata,
    /// The footer-table entry is shorter than its u32 offset.
    #[error("TDX metadata footer-table entry has {len} data bytes, need 4")]
    OffsetEntryTooShort {
        /// Data length of the entry.
        len: usize,
    },
    /// The descriptor (with its GUID and header) does not fit in the file at the stated place.
    #[error("TDVF descriptor at file offset {descriptor_offset:#x} lies outside the {file_len}-byte image")]
    DescriptorOutOfBounds {
        /// File offset of the descriptor (may be negative when the offset from the end is too large).
        descriptor_offset: i64,
        /// Image length.
        file_len: usize,
    },
    /// The 16 bytes before the descriptor are not the TDX metadata GUID.
    #[error("TDVF descriptor is preceded by GUID {found}, expected {expected}", expected = known::TDX_METADATA)]
    MetadataGuidMismatch {
        /// GUID found.
        found: Guid,
    },
    /// Wrong magic.
    #[error("TDVF descriptor signature is {found:02x?}, expected \"TDVF\"")]
    BadSignature {
        /// Bytes found.
        found: [u8; 4],
    },
    /// Only version 1 exists.
    #[error("TDVF descriptor version {0} is not supported (expected 1)")]
    BadVersion(u32),
    /// The section table does not fit in the descriptor's length or in the file.
    #[error("TDVF descriptor declares {count} sections, which do not fit in its {length} bytes or in the file")]
    SectionCountOverrun {
        /// Declared section count.
        count: u32,
        /// Declared descriptor length.
        length: u32,
    },
    /// A descriptor without sections measures nothing.
    #[error("TDVF descriptor has no sections")]
    NoSections,
    /// A section type outside 0..=8.
    #[error("TDVF section {index} has unknown type {section_type}")]
    UnknownSectionType {
        /// Section index.
        index: usize,
        /// The type value.
        section_type: u32,
    },
    /// Attribute bits other than MR.EXTEND and PAGE.AUG.
    #[error("TDVF section {index} has unknown attribute bits {attributes:#x}")]
    UnknownAttributes {
        /// Section index.
        index: usize,
        /// The attribute value.
        attributes: u32,
    },
    /// PAGE.AUG pages are added at run time and cannot be extended into MRTD.
    #[error("TDVF section {index} sets both MR.EXTEND and PAGE.AUG")]
    ConflictingAttributes {
        /// Section index.
        index: usize,
    },
    /// Memory address or memory size not a multiple of 4 KiB.
    #[error(
        "TDVF section {index} is not 4 KiB aligned (memory address {memory_address:#x}, memory size {memory_data_size:#x})"
    )]
    Unaligned {
        /// Section index.
        index: usize,
        /// Its guest-physical address.
        memory_address: u64,
        /// Its memory size.
        memory_data_size: u64,
    },
    /// The memory image is smaller than the file data copied into it.
    #[error(
        "TDVF section {index} has memory size {memory_data_size:#x} smaller than its raw data size {raw_data_size:#x}"
    )]
    MemorySmallerThanRaw {
        /// Section index.
        index: usize,
        /// Raw data size.
        raw_data_size: u32,
        /// Memory size.
        memory_data_size: u64,
    },
    /// The section's file data lies (partly) past the end of the image; this is what a split
    /// `OVMF_CODE*.fd` looks like, whose offsets refer to the unified image.
    #[error(
        "TDVF section {index} data {data_offset:#x}+{raw_data_size:#x} lies outside the {file_len:#x}-byte image (a split OVMF_CODE file? use the unified OVMF.fd)"
    )]
    RawDataOutsideFile {
        /// Section index.
        index: usize,
        /// File offset of its data.
        data_offset: u32,
        /// Raw data size.
        raw_data_size: u32,
        /// Image length.
        file_len: usize,
    },
    /// The section's memory range runs past the 52-bit guest-physical address space.
    #[error(
        "TDVF section {index} memory {memory_address:#x}+{memory_data_size:#x} exceeds the guest-physical address space"
    )]
    AddressOutOfRange {
        /// Section index.
        index: usize,
        /// Its guest-physical address.
        memory_address: u64,
        /// Its memory size.
        memory_data_size: u64,
    },
    /// Two sections claim the same guest pages.
    #[error("TDVF sections {first} and {second} overlap in guest-physical memory")]
    OverlappingSections {
        /// One section index.
        first: usize,
        /// The other section index.
        second: usize,
    },
    /// The sections together describe more memory than [`MAX_TOTAL_MEMORY`].
    #[error("TDVF sections describe {total:#x} bytes of memory, more than the supported {max:#x}", max = MAX_TOTAL_MEMORY)]
    TooMuchMemory {
        /// Sum of the memory sizes (saturating).
        total: u64,
    },
}

/// What a TDVF section holds (the descriptor's `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TdvfSectionType {
    /// 0: boot firmware volume (code).
    Bfv,
    /// 1: configuration firmware volume (variable store).
    Cfv,
    /// 2: TD HOB, filled in by the VMM.
    TdHob,
    /// 3: temporary memory.
    TempMem,
    /// 4: permanent memory.
    PermMem,
    /// 5: payload (td-shim).
    Payload,
    /// 6: payload parameters (td-shim).
    PayloadParam,
    /// 7: TD_INFO structure.
    TdInfo,
    /// 8: TD_PARAMS structure.
    TdParams,
}

impl TdvfSectionType {
    /// Maps the raw type value; `None` for values this crate does not know.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Bfv,
            1 => Self::Cfv,
            2 => Self::TdHob,
            3 => Self::TempMem,
            4 => Self::PermMem,
            5 => Self::Payload,
            6 => Self::PayloadParam,
            7 => Self::TdInfo,
            8 => Self::TdParams,
            _ => return None,
        })
    }

    /// The raw type value.
    pub fn raw(self) -> u32 {
        match self {
            Self::Bfv => 0,
            Self::Cfv => 1,
            Self::TdHob => 2,
            Self::TempMem => 3,
            Self::PermMem => 4,
            Self::Payload => 5,
            Self::PayloadParam => 6,
            Self::TdInfo => 7,
            Self::TdParams => 8,
        }
    }

    /// Name as in the TDVF specification.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfv => "BFV",
            Self::Cfv => "CFV",
            Self::TdHob => "TD_HOB",
            Self::TempMem => "TempMem",
            Self::PermMem => "PermMem",
            Self::Payload => "Payload",
            Self::PayloadParam => "PayloadParam",
            Self::TdInfo => "TD_INFO",
            Self::TdParams => "TD_PARAMS",
        }
    }
}

impl fmt::Display for TdvfSectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A section's attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TdvfAttributes(pub u32);

impl TdvfAttributes {
    /// Bit 0: the section's contents are extended into MRTD.
    pub const MR_EXTEND: u32 = 1 << 0;
    /// Bit 1: the pages are added at run time (`TDH.MEM.PAGE.AUG`), so they are not in MRTD.
    pub const PAGE_AUG: u32 = 1 << 1;
    /// All bits this crate knows.
    pub const KNOWN: u32 = Self::MR_EXTEND | Self::PAGE_AUG;

    /// Whether MR.EXTEND is set.
    pub fn mr_extend(self) -> bool {
        self.0 & Self::MR_EXTEND != 0
    }

    /// Whether PAGE.AUG is set.
    pub fn page_aug(self) -> bool {
        self.0 & Self::PAGE_AUG != 0
    }
}

impl fmt::Display for TdvfAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.mr_extend(), self.page_aug()) {
            (false, false) => f.write_str("-"),
            (true, false) => f.write_str("MR.EXTEND"),
            (false, true) => f.write_str("PAGE.AUG"),
            (true, true) => f.write_str("MR.EXTEND|PAGE.AUG"),
        }
    }
}

/// One validated TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// File offset of the section's data (meaningless when `raw_data_size` is 0).
    pub data_offset: u32,
    /// Bytes of file data copied to the start of the memory range.
    pub raw_data_size: u32,
    /// Guest-physical address (4 KiB aligned).
    pub memory_address: u64,
    /// Size in guest memory (4 KiB aligned, at least `raw_data_size`; the rest is zero).
    pub memory_data_size: u64,
    /// What the section holds.
    pub section_type: TdvfSectionType,
    /// MR.EXTEND / PAGE.AUG.
    pub attributes: TdvfAttributes,
}

impl TdvfSection {
    /// Number of 4 KiB pages in guest memory.
    pub fn pages(&self) -> u64 {
        self.memory_data_size / PAGE_SIZE
    }
}

/// How the descriptor was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataLocation {
    /// Through the OVMF footer-table entry `e47a6535-…`.
    FooterTable,
    /// Through td-shim's legacy pointer at `len − 0x20`.
    LegacyPointer,
}

/// The validated TDVF descriptor of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdvfMetadata {
    /// Sections in descriptor order (which is the order they are measured in).
    pub sections: Vec<TdvfSection>,
    /// File offset of the `"TDVF"` signature.
    pub descriptor_offset: usize,
    /// How it was found.
    pub location: MetadataLocation,
}

/// The order in which the VMM issues `PAGE.ADD` and `MR.EXTEND` within a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PageOrder {
    /// Per page: ADD, then its 16 EXTENDs (upstream KVM `KVM_TDX_INIT_MEM_REGION`, QEMU ≥ 9,
    /// td-shim-tools, tdx-measure). CLI name `interleaved`.
    #[default]
    SinglePass,
    /// All ADDs of a section, then all its EXTENDs (older QEMU 8.x TDX trees). CLI name
    /// `add-then-extend`.
    TwoPass,
}

impl PageOrder {
    /// Both orders, the default first.
    pub const ALL: [PageOrder; 2] = [PageOrder::SinglePass, PageOrder::TwoPass];

    /// Parses a command-line name: `interleaved` (alias `single-pass`) or `add-then-extend`
    /// (alias `two-pass`), case-insensitively.
    pub fn from_cli_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "interleaved" | "single-pass" => Some(Self::SinglePass),
            "add-then-extend" | "two-pass" => Some(Self::TwoPass),
            _ => None,
        }
    }

    /// The canonical command-line name.
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::SinglePass => "interleaved",
            Self::TwoPass => "add-then-extend",
        }
    }
}

impl fmt::Display for PageOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// Finds, parses and validates the TDVF descriptor of `image` (which ends at 4 GiB).
pub fn parse_tdvf(image: &[u8]) -> Result<TdvfMetadata, TdxError> {
    let fw = FirmwareImage::parse(image)?;
    let len = image.len();
    let (descriptor_offset, location) = match fw.table_entry(&known::TDX_METADATA_OFFSET) {
        Some(entry) => {
            let from_end = read_u32(entry, 0).ok_or(TdxError::OffsetEntryTooShort { len: entry.len() })?;
            let Some(off) = len.checked_sub(from_end as usize) else {
                return Err(TdxError::DescriptorOutOfBounds {
                    descriptor_offset: len as i64 - i64::from(from_end),
                    file_len: len,
                });
            };
            (off, MetadataLocation::FooterTable)
        }
        None => (legacy_descriptor_offset(image).ok_or(TdxError::NoTdxMetadata)?, MetadataLocation::LegacyPointer),
    };
    let sections = parse_descriptor(image, descriptor_offset)?;
    Ok(TdvfMetadata { sections, descriptor_offset, location })
}

/// The td-shim legacy pointer, if it points at the TDX metadata GUID followed by `"TDVF"`.
fn legacy_descriptor_offset(image: &[u8]) -> Option<usize> {
    let at = image.len().checked_sub(LEGACY_POINTER_FROM_END)?;
    let off = read_u32(image, at)? as usize;
    let guid = image.get(off.checked_sub(GUID_LEN)?..off)?;
    let sig = image.get(off..off.checked_add(4)?)?;
    (guid == known::TDX_METADATA.as_bytes_le() && sig == b"TDVF").then_some(off)
}

fn parse_descriptor(image: &[u8], off: usize) -> Result<Vec<TdvfSection>, TdxError> {
    let len = image.len();
    let oob = TdxError::DescriptorOutOfBounds { descriptor_offset: off as i64, file_len: len };
    let guid_start = off.checked_sub(GUID_LEN).ok_or(oob.clone())?;
    let header_end = off.checked_add(DESCRIPTOR_HEADER).ok_or(oob.clone())?;
    let guid_bytes = image.get(guid_start..off).ok_or(oob.clone())?;
    let header = image.get(off..header_end).ok_or(oob)?;
    let mut g = [0u8; 16];
    g.copy_from_slice(guid_bytes);
    let found = Guid::from_bytes_le(g);
    if found != known::TDX_METADATA {
        return Err(TdxError::MetadataGuidMismatch { found });
    }
    let sig = [header[0], header[1], header[2], header[3]];
    if &sig != b"TDVF" {
        return Err(TdxError::BadSignature { found: sig });
    }
    let length = read_u32(header, 4).unwrap_or(0);
    let version = read_u32(header, 8).unwrap_or(0);
    let count = read_u32(header, 12).unwrap_or(0);
    if version != 1 {
        return Err(TdxError::BadVersion(version));
    }
    if count == 0 {
        return Err(TdxError::NoSections);
    }
    let overrun = TdxError::SectionCountOverrun { count, length };
    let table_len = (count as usize).checked_mul(SECTION_LEN).ok_or(overrun.clone())?;
    if DESCRIPTOR_HEADER.saturating_add(table_len) > length as usize {
        return Err(overrun);
    }
    let table_end = header_end.checked_add(table_len).ok_or(overrun.clone())?;
    let table = image.get(header_end..table_end).ok_or(overrun)?;

    let mut sections = Vec::with_capacity(count as usize);
    let mut total: u64 = 0;
    for (index, raw) in table.chunks_exact(SECTION_LEN).enumerate() {
        let s = check_section(index, raw, len)?;
        total = total.saturating_add(s.memory_data_size);
        if total > MAX_TOTAL_MEMORY {
            return Err(TdxError::TooMuchMemory { total });
        }
        sections.push(s);
    }
    check_overlaps(&sections)?;
    Ok(sections)
}

fn check_section(index: usize, raw: &[u8], file_len: usize) -> Result<TdvfSection, TdxError> {
    let data_offset = read_u32(raw, 0).unwrap_or(0);
    let raw_data_size = read_u32(raw, 4).unwrap_or(0);
    let memory_address = read_u64(raw, 8).unwrap_or(0);
    let memory_data_size = read_u64(raw, 16).unwrap_or(0);
    let section_type = read_u32(raw, 24).unwrap_or(0);
    let attributes = read_u32(raw, 28).unwrap_or(0);
    let s = TdvfSection {
        data_offset,
        raw_data_size,
        memory_address,
        memory_data_size,
        section_type: TdvfSectionType::from_raw(section_type)
            .ok_or(TdxError::UnknownSectionType { index, section_type })?,
        attributes: TdvfAttributes(attributes),
    };
    validate_section(index, &s, file_len)?;
    Ok(s)
}

/// The per-section rules; also applied by [`mrtd_with_metadata`] to caller-built metadata.
fn validate_section(index: usize, s: &TdvfSection, file_len: usize) -> Result<(), TdxError> {
    let attributes = s.attributes.0;
    if attributes & !TdvfAttributes::KNOWN != 0 {
        return Err(TdxError::UnknownAttributes { index, attributes });
    }
    if s.attributes.mr_extend() && s.attributes.page_aug() {
        return Err(TdxError::ConflictingAttributes { index });
    }
    if !s.memory_address.is_multiple_of(PAGE_SIZE) || !s.memory_data_size.is_multiple_of(PAGE_SIZE) {
        return Err(TdxError::Unaligned {
            index,
            memory_address: s.memory_address,
            memory_data_size: s.memory_data_size,
        });
    }
    if s.memory_data_size < u64::from(s.raw_data_size) {
        return Err(TdxError::MemorySmallerThanRaw {
            index,
            raw_data_size: s.raw_data_size,
            memory_data_size: s.memory_data_size,
        });
    }
    if s.raw_data_size != 0 && raw_range(s, file_len).is_none() {
        return Err(TdxError::RawDataOutsideFile {
            index,
            data_offset: s.data_offset,
            raw_data_size: s.raw_data_size,
            file_len,
        });
    }
    match s.memory_address.checked_add(s.memory_data_size) {
        Some(end) if end <= MAX_GPA => Ok(()),
        _ => Err(TdxError::AddressOutOfRange {
            index,
            memory_address: s.memory_address,
            memory_data_size: s.memory_data_size,
        }),
    }
}

/// The file range of a section's raw data, if it lies inside the file.
fn raw_range(s: &TdvfSection, file_len: usize) -> Option<std::ops::Range<usize>> {
    let start = s.data_offset as usize;
    let end = start.checked_add(s.raw_data_size as usize)?;
    (end <= file_len).then_some(start..end)
}

fn check_overlaps(sections: &[TdvfSection]) -> Result<(), TdxError> {
    let mut ranges: Vec<(u64, u64, usize)> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.memory_data_size != 0)
        .map(|(i, s)| (s.memory_address, s.memory_address.saturating_add(s.memory_data_size), i))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if let [(_, a_end, a), (b_start, _, b)] = w
            && b_start < a_end
        {
            return Err(TdxError::OverlappingSections { first: *a.min(b), second: *a.max(b) });
        }
    }
    Ok(())
}

/// MRTD of a TDVF image launched by QEMU, for the given page order.
pub fn mrtd(image: &[u8], order: PageOrder) -> Result<Sha384Digest, TdxError> {
    let meta = parse_tdvf(image)?;
    mrtd_with_metadata(image, &meta, order)
}

/// MRTD from metadata already obtained with [`parse_tdvf`] (e.g. to compute both page orders while
/// parsing once). The sections are re-validated against `image`, so metadata built by hand cannot
/// make this read outside the image.
pub fn mrtd_with_metadata(image: &[u8], meta: &TdvfMetadata, order: PageOrder) -> Result<Sha384Digest, TdxError> {
    if meta.sections.is_empty() {
        return Err(TdxError::NoSections);
    }
    let mut total: u64 = 0;
    for (index, s) in meta.sections.iter().enumerate() {
        validate_section(index, s, image.len())?;
        total = total.saturating_add(s.memory_data_size);
        if total > MAX_TOTAL_MEMORY {
            return Err(TdxError::TooMuchMemory { total });
        }
    }
    check_overlaps(&meta.sections)?;

    let mut m = Measurer::new();
    for s in &meta.sections {
        // Validated above: in range whenever raw_data_size != 0.
        let raw = raw_range(s, image.len()).and_then(|r| image.get(r)).unwrap_or(&[]);
        let pages = s.pages();
        let add = !s.attributes.page_aug();
        let extend = s.attributes.mr_extend();
        match order {
            PageOrder::SinglePass => {
                for p in 0..pages {
                    if add {
                        m.page_add(s.memory_address + p * PAGE_SIZE);
                    }
                    if extend {
                        m.extend_page(s.memory_address, raw, p);
                    }
                }
            }
            PageOrder::TwoPass => {
                if add {
                    for p in 0..pages {
                        m.page_add(s.memory_address + p * PAGE_SIZE);
                    }
                }
                if extend {
                    for p in 0..pages {
                        m.extend_page(s.memory_address, raw, p);
                    }
                }
            }
        }
    }
    Ok(m.finish())
}

/// One running SHA-384 plus the two 128-byte records, whose text never changes and whose gpa field
/// is rewritten in place: no allocation per page or chunk.
struct Measurer {
    hash: Sha384,
    add: [u8; RECORD],
    extend: [u8; RECORD],
    zero_tail: [u8; CHUNK],
}

impl Measurer {
    fn new() -> Self {
        let mut add = [0u8; RECORD];
        add[..12].copy_from_slice(b"MEM.PAGE.ADD");
        let mut extend = [0u8; RECORD];
        extend[..9].copy_from_slice(b"MR.EXTEND");
        Measurer { hash: Sha384::new(), add, extend, zero_tail: [0u8; CHUNK] }
    }

    fn page_add(&mut self, gpa: u64) {
        self.add[16..24].copy_from_slice(&gpa.to_le_bytes());
        self.hash.update(&self.add);
    }

    /// The 16 EXTEND records of page `page` of a section at `base` whose file data is `raw`
    /// (zero-padded to the memory size).
    fn extend_page(&mut self, base: u64, raw: &[u8], page: u64) {
        let page_off = page * PAGE_SIZE;
        for c in 0..CHUNKS_PER_PAGE {
            let off = page_off + c * CHUNK as u64;
            self.extend[16..24].copy_from_slice(&(base + off).to_le_bytes());
            self.hash.update(&self.extend);
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            match raw.get(start..start.saturating_add(CHUNK)) {
                Some(chunk) => self.hash.update(chunk),
                None => {
                    // Past (or straddling) the end of the file data: zero padding.
                    let mut buf = [0u8; CHUNK];
                    let tail = raw.get(start..).unwrap_or(&[]);
                    buf[..tail.len()].copy_from_slice(tail);
                    let data = if tail.is_empty() { &self.zero_tail } else { &buf };
                    self.hash.update(data);
                }
            }
        }
    }

    fn finish(self) -> Sha384Digest {
        self.hash.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::digest::sha384;

    const IMG_LEN: usize = 0x10000;
    /// Offset of the descriptor from the end in synthetic images.
    const DESC_FROM_END: usize = 0x800;

    fn section(data_offset: u32, raw: u32, gpa: u64, mem: u64, ty: u32, attr: u32) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[0..4].copy_from_slice(&data_offset.to_le_bytes());
        s[4..8].copy_from_slice(&raw.to_le_bytes());
        s[8..16].copy_from_slice(&gpa.to_le_bytes());
        s[16..24].copy_from_slice(&mem.to_le_bytes());
        s[24..28].copy_from_slice(&ty.to_le_bytes());
        s[28..32].copy_from_slice(&attr.to_le_bytes());
        s
    }

    /// A 64 KiB image with an OVMF footer table holding only the TDX metadata offset entry, a
    /// descriptor `DESC_FROM_END` bytes from the end, and patterned bytes elsewhere.
    fn synth(sections: &[[u8; 32]]) -> Vec<u8> {
        let mut img: Vec<u8> = (0..IMG_LEN).map(|i| (i * 31 % 253) as u8).collect();
        let mut table = Vec::new();
        table.extend_from_slice(&(DESC_FROM_END as u32).to_le_bytes());
        table.extend_from_slice(&22u16.to_le_bytes());
        table.extend_from_slice(known::TDX_METADATA_OFFSET.as_bytes_le());
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(known::OVMF_TABLE_FOOTER.as_bytes_le());
        let end = IMG_LEN - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        let d = IMG_LEN - DESC_FROM_END;
        img[d - 16..d].copy_from_slice(known::TDX_METADATA.as_bytes_le());
        img[d..d + 4].copy_from_slice(b"TDVF");
        img[d + 4..d + 8].copy_from_slice(&((16 + 32 * sections.len()) as u32).to_le_bytes());
        img[d + 8..d + 12].copy_from_slice(&1u32.to_le_bytes());
        img[d + 12..d + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
        for (i, s) in sections.iter().enumerate() {
            img[d + 16 + 32 * i..d + 48 + 32 * i].copy_from_slice(s);
        }
        img
    }

    fn typical() -> Vec<u8> {
        synth(&[
            // BFV: 2 pages of file data, 3 pages of memory (last page zero-padded), extended.
            section(0x4000, 0x2000 - 0x80, 0xfff0_0000, 0x3000, 0, 1),
            // CFV: added only.
            section(0, 0x1000, 0xffef_0000, 0x1000, 1, 0),
            // TempMem and TD_HOB without file data.
            section(0, 0, 0x80_0000, 0x2000, 3, 0),
            section(0, 0, 0x80_9000, 0x1000, 2, 0),
            // PermMem added at run time: not measured.
            section(0, 0, 0x100_0000, 0x4000, 4, 2),
        ])
    }

    /// Straightforward (allocating) model of the algorithm, independent of `Measurer`.
    fn reference_mrtd(image: &[u8], meta: &TdvfMetadata, order: PageOrder) -> Sha384Digest {
        let record = |tag: &[u8], gpa: u64| {
            let mut r = vec![0u8; 128];
            r[..tag.len()].copy_from_slice(tag);
            r[16..24].copy_from_slice(&gpa.to_le_bytes());
            r
        };
        let mut stream = Vec::new();
        for s in &meta.sections {
            let mut mem = vec![0u8; s.memory_data_size as usize];
            let raw: &[u8] =
                if s.raw_data_size == 0 { &[] } else { &image[s.data_offset as usize..][..s.raw_data_size as usize] };
            mem[..raw.len()].copy_from_slice(raw);
            let adds: Vec<Vec<u8>> = (0..s.pages())
                .map(|p| {
                    if s.attributes.page_aug() { vec![] } else { record(b"MEM.PAGE.ADD", s.memory_address + p * 4096) }
                })
                .collect();
            let exts: Vec<Vec<u8>> = (0..s.pages())
                .map(|p| {
                    let mut v = Vec::new();
                    if s.attributes.mr_extend() {
                        for c in 0..16u64 {
                            let off = (p * 4096 + c * 256) as usize;
                            v.extend(record(b"MR.EXTEND", s.memory_address + off as u64));
                            v.extend_from_slice(&mem[off..off + 256]);
                        }
                    }
                    v
                })
                .collect();
            match order {
                PageOrder::SinglePass => {
                    for (a, e) in adds.iter().zip(&exts) {
                        stream.extend_from_slice(a);
                        stream.extend_from_slice(e);
                    }
                }
                PageOrder::TwoPass => {
                    adds.iter().for_each(|a| stream.extend_from_slice(a));
                    exts.iter().for_each(|e| stream.extend_from_slice(e));
                }
            }
        }
        sha384(&stream)
    }

    #[test]
    fn parses_sections_in_descriptor_order() {
        let img = typical();
        let meta = parse_tdvf(&img).expect("parse");
        assert_eq!(meta.location, MetadataLocation::FooterTable);
        assert_eq!(meta.descriptor_offset, IMG_LEN - DESC_FROM_END);
        assert_eq!(meta.sections.len(), 5);
        let s0 = meta.sections[0];
        assert_eq!(s0.section_type, TdvfSectionType::Bfv);
        assert!(s0.attributes.mr_extend() && !s0.attributes.page_aug());
        assert_eq!((s0.data_offset, s0.raw_data_size, s0.memory_address, s0.pages()), (0x4000, 0x1f80, 0xfff0_0000, 3));
        assert_eq!(meta.sections[3].section_type, TdvfSectionType::TdHob);
        assert!(meta.sections[4].attributes.page_aug());
    }

    #[test]
    fn matches_reference_model_for_both_orders() {
        let img = typical();
        let meta = parse_tdvf(&img).expect("parse");
        for order in PageOrder::ALL {
            assert_eq!(mrtd(&img, order), Ok(reference_mrtd(&img, &meta, order)), "{order}");
        }
        assert_ne!(mrtd(&img, PageOrder::SinglePass), mrtd(&img, PageOrder::TwoPass));
    }

    #[test]
    fn page_aug_sections_do_not_change_mrtd() {
        let with = typical();
        let meta = parse_tdvf(&with).expect("parse");
        let mut without = meta.clone();
        without.sections.pop();
        assert_eq!(mrtd(&with, PageOrder::SinglePass), mrtd_with_metadata(&with, &without, PageOrder::SinglePass));
    }

    #[test]
    fn content_and_address_are_measured() {
        let img = typical();
        let base = mrtd(&img, PageOrder::SinglePass).expect("mrtd");
        // A byte inside the extended BFV data changes MRTD ...
        let mut m = img.clone();
        m[0x4000 + 0x1234] ^= 1;
        assert_ne!(mrtd(&m, PageOrder::SinglePass).expect("mrtd"), base);
        // ... a byte of the CFV (added, not extended) does not.
        let mut m = img.clone();
        m[0x10] ^= 1;
        assert_eq!(mrtd(&m, PageOrder::SinglePass).expect("mrtd"), base);
    }

    #[test]
    fn page_order_names() {
        assert_eq!(PageOrder::from_cli_name("interleaved"), Some(PageOrder::SinglePass));
        assert_eq!(PageOrder::from_cli_name("Add-Then-Extend"), Some(PageOrder::TwoPass));
        assert_eq!(PageOrder::from_cli_name("two-pass"), Some(PageOrder::TwoPass));
        assert_eq!(PageOrder::from_cli_name("sideways"), None);
        for o in PageOrder::ALL {
            assert_eq!(PageOrder::from_cli_name(o.cli_name()), Some(o));
        }
        assert_eq!(PageOrder::default(), PageOrder::SinglePass);
    }

    #[test]
    fn section_type_round_trip() {
        for v in 0..=8 {
            let t = TdvfSectionType::from_raw(v).expect("known");
            assert_eq!(t.raw(), v);
        }
        assert_eq!(TdvfSectionType::from_raw(9), None);
    }

    fn err(sections: &[[u8; 32]]) -> TdxError {
        parse_tdvf(&synth(sections)).expect_err("must be rejected")
    }

    #[test]
    fn section_rules() {
        assert_eq!(
            err(&[section(0, 0, 0x1000, 0x1000, 9, 0)]),
            TdxError::UnknownSectionType { index: 0, section_type: 9 }
        );
        assert_eq!(
            err(&[section(0, 0, 0x1000, 0x1000, 3, 4)]),
            TdxError::UnknownAttributes { index: 0, attributes: 4 }
        );
        assert_eq!(err(&[section(0, 0, 0x1000, 0x1000, 4, 3)]), TdxError::ConflictingAttributes { index: 0 });
        assert!(matches!(err(&[section(0, 0, 0x1800, 0x1000, 3, 0)]), TdxError::Unaligned { index: 0, .. }));
        assert!(matches!(err(&[section(0, 0, 0x1000, 0x1001, 3, 0)]), TdxError::Unaligned { .. }));
        assert!(matches!(err(&[section(0, 0x2000, 0x1000, 0x1000, 0, 1)]), TdxError::MemorySmallerThanRaw { .. }));
        assert!(matches!(
            err(&[section(0, 0, 0x1000, 0x1000, 3, 0), section(0xf000, 0x2000, 0x4000, 0x2000, 0, 1)]),
            TdxError::RawDataOutsideFile { index: 1, .. }
        ));
        assert!(matches!(err(&[section(u32::MAX, 1, 0, 0x1000, 0, 1)]), TdxError::RawDataOutsideFile { .. }));
        assert!(matches!(err(&[section(0, 0, u64::MAX - 0xfff, 0x2000, 3, 0)]), TdxError::AddressOutOfRange { .. }));
        assert!(matches!(err(&[section(0, 0, 1 << 52, 0x1000, 3, 0)]), TdxError::AddressOutOfRange { .. }));
        assert_eq!(
            err(&[
                section(0, 0, 0x2000, 0x2000, 3, 0),
                section(0, 0, 0x8000, 0x1000, 3, 0),
                section(0, 0, 0x3000, 0x1000, 3, 0)
            ]),
            TdxError::OverlappingSections { first: 0, second: 2 }
        );
        assert!(matches!(err(&[section(0, 0, 0, 1 << 33, 3, 0)]), TdxError::TooMuchMemory { .. }));
        assert_eq!(err(&[]), TdxError::NoSections);
        // Without raw data, data_offset is ignored (TempMem sections carry 0 there).
        let img = synth(&[section(0x10001, 0, 0, 0x1000, 0, 1)]);
        let meta = parse_tdvf(&img).expect("parse");
        assert_eq!(mrtd(&img, PageOrder::SinglePass), Ok(reference_mrtd(&img, &meta, PageOrder::SinglePass)));
        // Zero-size sections are fine and measure nothing.
        let img = synth(&[section(0, 0, 0x1000, 0x1000, 3, 0), section(0, 0, 0x1000, 0, 3, 0)]);
        let meta = parse_tdvf(&img).expect("parse");
        assert_eq!(mrtd(&img, PageOrder::TwoPass), Ok(reference_mrtd(&img, &meta, PageOrder::TwoPass)));
    }

    #[test]
    fn descriptor_rules() {
        let d = IMG_LEN - DESC_FROM_END;
        let good = synth(&[section(0, 0, 0x1000, 0x1000, 3, 0)]);

        let mut img = good.clone();
        img[d] = b'X';
        assert!(matches!(parse_tdvf(&img), Err(TdxError::BadSignature { .. })));
        let mut img = good.clone();
        img[d + 8] = 2;
        assert_eq!(parse_tdvf(&img), Err(TdxError::BadVersion(2)));
        let mut img = good.clone();
        img[d - 1] ^= 0xff;
        assert!(matches!(parse_tdvf(&img), Err(TdxError::MetadataGuidMismatch { .. })));
        let mut img = good.clone();
        img[d + 12..d + 16].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(parse_tdvf(&img), Err(TdxError::SectionCountOverrun { count: 2, .. })));
        let mut img = good.clone();
        img[d + 4..d + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        img[d + 12..d + 16].copy_from_slice(&0x0800_0000u32.to_le_bytes());
        assert!(matches!(parse_tdvf(&img), Err(TdxError::SectionCountOverrun { .. })));

        // The footer entry pointing before the start of the file, or into the last bytes.
        let entry_at = IMG_LEN - 32 - 18 - 22;
        for bad in [IMG_LEN as u32 + 4, 8, 0] {
            let mut img = good.clone();
            img[entry_at..entry_at + 4].copy_from_slice(&bad.to_le_bytes());
            assert!(matches!(parse_tdvf(&img), Err(TdxError::DescriptorOutOfBounds { .. })), "{bad}");
        }
        let mut img = good.clone();
        img[entry_at..entry_at + 4].copy_from_slice(&(IMG_LEN as u32 - 8).to_le_bytes());
        assert!(matches!(parse_tdvf(&img), Err(TdxError::DescriptorOutOfBounds { .. })));
    }

    #[test]
    fn legacy_pointer_only_without_footer_entry() {
        let good = synth(&[section(0, 0, 0x1000, 0x1000, 3, 0)]);
        let d = IMG_LEN - DESC_FROM_END;
        // Same image with the footer table wiped and td-shim's pointer at len - 0x20.
        let mut img = good.clone();
        img[IMG_LEN - 32 - 40..IMG_LEN - 32].fill(0);
        img[IMG_LEN - 0x20..IMG_LEN - 0x1c].copy_from_slice(&(d as u32).to_le_bytes());
        let meta = parse_tdvf(&img).expect("legacy");
        assert_eq!(meta.location, MetadataLocation::LegacyPointer);
        assert_eq!(meta.sections, parse_tdvf(&good).expect("parse").sections);
        // A pointer that lands anywhere else means "no metadata".
        for p in [0u32, 8, d as u32 + 4, u32::MAX] {
            img[IMG_LEN - 0x20..IMG_LEN - 0x1c].copy_from_slice(&p.to_le_bytes());
            assert_eq!(parse_tdvf(&img), Err(TdxError::NoTdxMetadata), "{p:#x}");
        }
    }

    #[test]
    fn hand_built_metadata_is_revalidated() {
        let img = typical();
        let mut meta = parse_tdvf(&img).expect("parse");
        meta.sections[0].data_offset = u32::MAX - 4;
        assert!(matches!(
            mrtd_with_metadata(&img, &meta, PageOrder::SinglePass),
            Err(TdxError::RawDataOutsideFile { .. })
        ));
        meta.sections.clear();
        assert_eq!(mrtd_with_metadata(&img, &meta, PageOrder::SinglePass), Err(TdxError::NoSections));
    }

    #[test]
    fn errors_are_one_line() {
        let errs = [
            TdxError::NoTdxMetadata,
            TdxError::RawDataOutsideFile {
                index: 0,
                data_offset: 0x20000,
                raw_data_size: 0x1e0000,
                file_len: 0x1e0000,
            },
            TdxError::MetadataGuidMismatch { found: known::OVMF_TABLE_FOOTER },
            TdxError::TooMuchMemory { total: u64::MAX },
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s}");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = parse_tdvf(&data);
                let _ = mrtd(&data, PageOrder::SinglePass);
            }

            #[test]
            fn mutated_images_never_panic(
                edits in proptest::collection::vec((0usize..IMG_LEN, any::<u8>()), 1..8),
                in_descriptor in any::<bool>(),
                order in prop_oneof![Just(PageOrder::SinglePass), Just(PageOrder::TwoPass)],
            ) {
                let mut img = typical();
                let d = IMG_LEN - DESC_FROM_END - 16;
                for (at, v) in edits {
                    // Half the cases aim at the GUID, descriptor and section table.
                    let at = if in_descriptor { d + at % (16 + 16 + 5 * 32) } else { at };
                    img[at] = v;
                }
                let _ = parse_tdvf(&img);
                let _ = mrtd(&img, order);
            }

            #[test]
            fn random_sections_match_reference_or_are_rejected(
                raw in proptest::collection::vec(any::<[u8; 32]>(), 0..2),
                fields in proptest::collection::vec(
                    (0u32..0x12000, any::<u32>(), 0u64..0x100, 0u64..0x14, 0u32..10, 0u32..4), 1..5),
                order in prop_oneof![Just(PageOrder::SinglePass), Just(PageOrder::TwoPass)],
            ) {
                let mut sections: Vec<[u8; 32]> = raw;
                for (off, rs, page, pages, ty, attr) in fields {
                    // Mostly a raw size that fits the memory size, sometimes any value.
                    let mem = pages * 0x1000;
                    let rs = if rs % 8 == 0 { rs } else { rs % (mem as u32 + 1) };
                    sections.push(section(off, rs, page * 0x1000, mem, ty, attr));
                }
                let img = synth(&sections);
                if let Ok(meta) = parse_tdvf(&img) {
                    prop_assert_eq!(mrtd(&img, order), Ok(reference_mrtd(&img, &meta, order)));
                }
            }
        }
    }
}
