//! Reading an OVMF/TDVF firmware image: the footer GUID table and the SEV metadata.
//!
//! The image is mapped so that it ends at a given address (4 GiB for firmware). Its last 32 bytes
//! are the reset-vector area; the 18 bytes before them are the footer entry of a GUID table that is
//! walked backwards. Semantics follow sev-snp-measure 0.0.13 (`ovmf.py`) exactly on well-formed
//! images; malformed ones, which it would slice past or crash on, are rejected with a typed error.

use crate::error::Error;
use crate::guid::{Guid, known};

/// Where firmware ends in guest-physical memory.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
const ENTRY_HEADER: usize = 18; // u16 size + GUID
const RESET_AREA: usize = 32;

/// One SEV metadata section type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevSectionType {
    /// Pre-validated zero memory.
    SnpSecMem,
    /// The secrets page.
    SnpSecrets,
    /// The CPUID page.
    Cpuid,
    /// SVSM calling-area page.
    SvsmCaa,
    /// QEMU's kernel-hashes page.
    SnpKernelHashes,
}

impl SevSectionType {
    /// Maps the raw type value.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::SnpSecMem,
            2 => Self::SnpSecrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::SnpKernelHashes,
            _ => return None,
        })
    }

    /// Name as in edk2.
    pub fn name(self) -> &'static str {
        match self {
            Self::SnpSecMem => "SNP_SEC_MEM",
            Self::SnpSecrets => "SNP_SECRETS",
            Self::Cpuid => "CPUID",
            Self::SvsmCaa => "SVSM_CAA",
            Self::SnpKernelHashes => "SNP_KERNEL_HASHES",
        }
    }
}

/// One SEV metadata item, as stored (the type is kept raw; the SNP flow rejects unknown ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Raw type value.
    pub raw_type: u32,
}

impl SevSection {
    /// The known type, if any.
    pub fn section_type(&self) -> Option<SevSectionType> {
        SevSectionType::from_raw(self.raw_type)
    }
}

/// A parsed firmware image, borrowing its bytes.
#[derive(Debug, Clone)]
pub struct FirmwareImage<'a> {
    data: &'a [u8],
    /// Footer-table entries in the order they are walked (from the footer backwards).
    entries: Vec<(Guid, &'a [u8])>,
    sev_metadata: Vec<SevSection>,
    end: u64,
}

impl<'a> FirmwareImage<'a> {
    /// Parses an image that ends at 4 GiB.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        Self::parse_ending_at(data, FOUR_GIB)
    }

    /// Parses an image that ends at `end` (an SVSM image sits below the firmware).
    pub fn parse_ending_at(data: &'a [u8], end: u64) -> Result<Self, Error> {
        let entries = parse_footer_table(data)?;
        let mut img = FirmwareImage { data, entries, sev_metadata: Vec::new(), end };
        img.sev_metadata = img.parse_sev_metadata()?;
        Ok(img)
    }

    /// The image bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Guest-physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.end.wrapping_sub(self.data.len() as u64)
    }

    /// Footer-table entries, in walk order (last entry in the file first).
    pub fn table_entries(&self) -> &[(Guid, &'a [u8])] {
        &self.entries
    }

    /// The data of the entry with this GUID. Should a GUID occur twice, the one nearest the start of
    /// the file wins, as in sev-snp-measure (later walk steps overwrite earlier ones).
    pub fn table_entry(&self, guid: &Guid) -> Option<&'a [u8]> {
        self.entries.iter().rev().find(|(g, _)| g == guid).map(|(_, d)| *d)
    }

    /// The little-endian u32 at the start of a table entry.
    pub fn table_u32(&self, guid: &Guid, what: &'static str) -> Result<u32, Error> {
        let d = self.table_entry(guid).ok_or(Error::MissingTableEntry { what, guid: *guid })?;
        read_u32(d, 0).ok_or(Error::FooterEntryTooShort { guid: *guid, len: d.len(), need: 4 })
    }

    /// SEV metadata items in file order (empty if the image has none).
    pub fn sev_metadata(&self) -> &[SevSection] {
        &self.sev_metadata
    }

    /// Whether the image carries a SEV metadata entry.
    pub fn has_sev_metadata(&self) -> bool {
        self.table_entry(&known::OVMF_SEV_METADATA).is_some()
    }

    /// The AP reset EIP from the SEV-ES reset block.
    pub fn sev_es_reset_eip(&self) -> Result<u32, Error> {
        self.table_u32(&known::SEV_ES_RESET_BLOCK, "SEV-ES reset block")
    }

    /// The kernel-hashes table gpa (0 means unsupported).
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, Error> {
        self.table_u32(&known::SEV_HASH_TABLE_RV, "SEV hashes table")
    }

    /// Whether QEMU can place a kernel-hashes table (SEV/SEV-ES rule).
    pub fn is_sev_hashes_table_supported(&self) -> bool {
        matches!(self.sev_hashes_table_gpa(), Ok(g) if g != 0)
    }

    fn parse_sev_metadata(&self) -> Result<Vec<SevSection>, Error> {
        let Some(entry) = self.table_entry(&known::OVMF_SEV_METADATA) else {
            return Ok(Vec::new());
        };
        let guid = known::OVMF_SEV_METADATA;
        let offset = read_u32(entry, 0).ok_or(Error::FooterEntryTooShort { guid, len: entry.len(), need: 4 })?;
        let len = self.data.len();
        let oob = Error::SevMetadataOutOfBounds { offset, len };
        let start = len.checked_sub(offset as usize).ok_or(oob.clone())?;
        let hdr = self.data.get(start..start + 16).ok_or(oob)?;
        let sig: [u8; 4] = [hdr[0], hdr[1], hdr[2], hdr[3]];
        if &sig != b"ASEV" {
            return Err(Error::SevMetadataSignature { found: sig });
        }
        let size = read_u32(hdr, 4).unwrap_or(0);
        let version = read_u32(hdr, 8).unwrap_or(0);
        let count = read_u32(hdr, 12).unwrap_or(0);
        if version != 1 {
            return Err(Error::SevMetadataVersion(version));
        }
        let overrun = Error::SevMetadataItemsOverrun { count, size };
        let items_len = (count as usize).checked_mul(12).ok_or(overrun.clone())?;
        if 16 + items_len > size as usize {
            return Err(overrun);
        }
        let items = self.data.get(start + 16..start + 16 + items_len).ok_or(overrun)?;
        Ok(items
            .chunks_exact(12)
            .map(|c| SevSection {
                gpa: read_u32(c, 0).unwrap_or(0),
                size: read_u32(c, 4).unwrap_or(0),
                raw_type: read_u32(c, 8).unwrap_or(0),
            })
            .collect())
    }
}

/// Little-endian u32 at `off`, if present.
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Little-endian u64 at `off`, if present.
pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn entry_at(b: &[u8], end: usize) -> (usize, Guid) {
    // Caller guarantees end >= ENTRY_HEADER and end <= b.len().
    let h = &b[end - ENTRY_HEADER..end];
    let size = u16::from_le_bytes([h[0], h[1]]) as usize;
    let mut g = [0u8; 16];
    g.copy_from_slice(&h[2..18]);
    (size, Guid::from_bytes_le(g))
}

fn parse_footer_table(data: &[u8]) -> Result<Vec<(Guid, &[u8])>, Error> {
    let len = data.len();
    if len < RESET_AREA + ENTRY_HEADER {
        return Err(Error::FirmwareTooSmall { len });
    }
    let footer_end = len - RESET_AREA;
    let (footer_size, footer_guid) = entry_at(data, footer_end);
    let mut entries = Vec::new();
    if footer_guid != known::OVMF_TABLE_FOOTER || footer_size < ENTRY_HEADER {
        return Ok(entries);
    }
    let table_end = footer_end - ENTRY_HEADER;
    let table_size = footer_size - ENTRY_HEADER;
    let table_start = table_end
        .checked_sub(table_size)
        .ok_or(Error::FooterTableOverrun { size: table_size, available: table_end })?;
    let mut table = &data[table_start..table_end];
    while table.len() >= ENTRY_HEADER {
        let (size, guid) = entry_at(table, table.len());
        if size < ENTRY_HEADER || size > table.len() {
            return Err(Error::FooterEntrySize { guid, size, available: table.len() });
        }
        let start = table.len() - size;
        entries.push((guid, &table[start..table.len() - ENTRY_HEADER]));
        table = &table[..start];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an image of `len` bytes with the given table entries (file order) and metadata.
    pub(crate) fn synth_image(len: usize, entries: &[(Guid, Vec<u8>)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (g, d) in entries {
            table.extend_from_slice(d);
            table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(g.as_bytes_le());
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(known::OVMF_TABLE_FOOTER.as_bytes_le());
        let mut img = vec![0u8; len];
        let end = len - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }

    #[test]
    fn walks_entries_and_reads_values() {
        let img = synth_image(
            8192,
            &[
                (known::SEV_HASH_TABLE_RV, [0x00, 0x0c, 0x81, 0, 0, 4, 0, 0].to_vec()),
                (known::SEV_ES_RESET_BLOCK, 0x80b004u32.to_le_bytes().to_vec()),
            ],
        );
        let fw = FirmwareImage::parse(&img).expect("parse");
        assert_eq!(fw.gpa(), FOUR_GIB - 8192);
        assert_eq!(fw.sev_es_reset_eip(), Ok(0x80b004));
        assert_eq!(fw.sev_hashes_table_gpa(), Ok(0x810c00));
        assert!(fw.sev_metadata().is_empty());
        assert_eq!(fw.table_entries()[0].0, known::SEV_ES_RESET_BLOCK);
    }

    #[test]
    fn no_footer_means_empty_table() {
        let img = vec![0u8; 4096];
        let fw = FirmwareImage::parse(&img).expect("parse");
        assert!(fw.table_entries().is_empty());
        assert!(matches!(fw.sev_es_reset_eip(), Err(Error::MissingTableEntry { .. })));
    }

    #[test]
    fn malformed_tables_are_rejected() {
        assert_eq!(FirmwareImage::parse(&[0u8; 49]).err(), Some(Error::FirmwareTooSmall { len: 49 }));
        // An entry whose size runs past the table start.
        let mut img = synth_image(4096, &[(known::SEV_ES_RESET_BLOCK, vec![1, 2, 3, 4])]);
        let at = 4096 - 32 - 18 - 18;
        img[at..at + 2].copy_from_slice(&200u16.to_le_bytes());
        assert!(matches!(FirmwareImage::parse(&img), Err(Error::FooterEntrySize { size: 200, .. })));
        // A footer claiming more than the file.
        let mut img = synth_image(4096, &[]);
        img[4096 - 50..4096 - 48].copy_from_slice(&9000u16.to_le_bytes());
        assert!(matches!(FirmwareImage::parse(&img), Err(Error::FooterTableOverrun { .. })));
    }

    #[test]
    fn sev_metadata_checks() {
        let meta_entry = |off: u32| (known::OVMF_SEV_METADATA, off.to_le_bytes().to_vec());
        let mut img = synth_image(4096, &[meta_entry(0x800)]);
        let start = 4096 - 0x800;
        img[start..start + 4].copy_from_slice(b"ASEV");
        img[start + 4..start + 8].copy_from_slice(&(16u32 + 24).to_le_bytes());
        img[start + 8..start + 12].copy_from_slice(&1u32.to_le_bytes());
        img[start + 12..start + 16].copy_from_slice(&2u32.to_le_bytes());
        let item = |gpa: u32, size: u32, t: u32| [gpa.to_le_bytes(), size.to_le_bytes(), t.to_le_bytes()].concat();
        img[start + 16..start + 28].copy_from_slice(&item(0x811000, 0x1000, 1));
        img[start + 28..start + 40].copy_from_slice(&item(0x810000, 0x1000, 0x10));
        let fw = FirmwareImage::parse(&img).expect("parse");
        assert_eq!(fw.sev_metadata().len(), 2);
        assert_eq!(fw.sev_metadata()[0].gpa, 0x811000, "file order kept");
        assert_eq!(fw.sev_metadata()[1].section_type(), Some(SevSectionType::SnpKernelHashes));

        let mut bad = img.clone();
        bad[start + 8] = 2;
        assert_eq!(FirmwareImage::parse(&bad).err(), Some(Error::SevMetadataVersion(2)));
        let mut bad = img.clone();
        bad[start] = b'X';
        assert!(matches!(FirmwareImage::parse(&bad), Err(Error::SevMetadataSignature { .. })));
        let mut bad = img.clone();
        bad[start + 12..start + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(FirmwareImage::parse(&bad), Err(Error::SevMetadataItemsOverrun { .. })));
        let bad = synth_image(4096, &[meta_entry(0x2000)]);
        assert!(matches!(FirmwareImage::parse(&bad), Err(Error::SevMetadataOutOfBounds { .. })));
    }
}
