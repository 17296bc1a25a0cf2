//! The one error type of this crate: every rejection names what was wrong with which input.

use crate::guid::Guid;

/// Why a measurement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image is too small to hold the reset vector and a footer-table entry.
    #[error("firmware image is {len} bytes, too small to hold an OVMF footer table (need at least 50)")]
    FirmwareTooSmall {
        /// Image length.
        len: usize,
    },
    /// Pages are measured 4 KiB at a time.
    #[error("{what} is {len} bytes, which is not a multiple of 4096")]
    NotPageMultiple {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The footer claims a table larger than the image.
    #[error("OVMF footer table claims {size} bytes but only {available} precede it")]
    FooterTableOverrun {
        /// Claimed size.
        size: usize,
        /// Bytes available.
        available: usize,
    },
    /// A table entry's size field is below its own header size or past the table start.
    #[error("OVMF footer table entry {guid} has invalid size {size} (table has {available} bytes left)")]
    FooterEntrySize {
        /// Entry GUID.
        guid: Guid,
        /// Its size field.
        size: usize,
        /// Bytes left in the table.
        available: usize,
    },
    /// A table entry is shorter than the value read from it.
    #[error("OVMF footer table entry {guid} has {len} data bytes, need {need}")]
    FooterEntryTooShort {
        /// Entry GUID.
        guid: Guid,
        /// Its data length.
        len: usize,
        /// Needed length.
        need: usize,
    },
    /// The SEV metadata offset points outside the image.
    #[error("SEV metadata offset {offset:#x} from the end lies outside the {len}-byte image")]
    SevMetadataOutOfBounds {
        /// Offset from the end.
        offset: u32,
        /// Image length.
        len: usize,
    },
    /// Wrong magic.
    #[error("SEV metadata signature is {found:02x?}, expected \"ASEV\"")]
    SevMetadataSignature {
        /// Bytes found.
        found: [u8; 4],
    },
    /// Only version 1 exists.
    #[error("SEV metadata version {0} is not supported (expected 1)")]
    SevMetadataVersion(u32),
    /// Item count does not fit in the declared size or in the file.
    #[error("SEV metadata declares {count} items, which do not fit in its {size} bytes")]
    SevMetadataItemsOverrun {
        /// Declared count.
        count: u32,
        /// Declared size.
        size: u32,
    },
    /// A section of a type the SNP launch flow does not know.
    #[error("SEV metadata section {index} has unknown type {section_type:#x}")]
    UnknownSevSection {
        /// Index in file order.
        index: usize,
        /// The type value.
        section_type: u32,
    },
    /// The SNP_KERNEL_HASHES section must be exactly one page.
    #[error("SNP_KERNEL_HASHES section is {size:#x} bytes; it must be exactly one 4 KiB page")]
    KernelHashesSectionSize {
        /// Its size.
        size: u32,
    },
    /// Measured direct boot is not possible with this firmware.
    #[error("a kernel was given but the firmware does not support measured direct boot ({reason})")]
    KernelHashesUnsupported {
        /// Why.
        reason: &'static str,
    },
    /// The hashes table would not fit in its page.
    #[error("kernel-hashes table at page offset {offset:#x} does not fit in one page")]
    KernelHashesCrossPage {
        /// Offset inside the page.
        offset: u32,
    },
    /// A required footer-table entry is missing.
    #[error("firmware has no {what} entry ({guid}) in its OVMF footer table")]
    MissingTableEntry {
        /// What it is.
        what: &'static str,
        /// Its GUID.
        guid: Guid,
    },
    /// A launch needs at least one vCPU.
    #[error("vCPU count must be at least 1")]
    ZeroVcpus,
    /// QEMU VMSAs carry the vCPU signature.
    #[error("a vCPU type, signature or family/model/stepping is required for VMM type QEMU")]
    MissingVcpuSignature,
    /// A vCPU family without its model and stepping.
    #[error("--vcpu-family needs --vcpu-model and --vcpu-stepping")]
    IncompleteVcpuModel,
    /// Unknown QEMU CPU model name.
    #[error("unknown vCPU type '{0}' (known: {known})", known = crate::snp::vcpu_type_names().join(", "))]
    UnknownVcpuType(String),
    /// Unknown hypervisor name.
    #[error("unknown VMM type '{0}' (known: QEMU, ec2, gce)")]
    UnknownVmmType(String),
    /// A hex digest of the wrong length or with non-hex characters.
    #[error("expected {expected_len} bytes as {} hex digits, got {got_chars} characters", expected_len * 2)]
    BadHexDigest {
        /// Bytes expected.
        expected_len: usize,
        /// Characters given.
        got_chars: usize,
    },
    /// The SVSM image does not fit below the firmware and its variable store.
    #[error("SVSM image of {svsm_len} bytes does not fit below gpa {end:#x}")]
    SvsmLayout {
        /// SVSM image length.
        svsm_len: usize,
        /// Where it must end.
        end: u64,
    },
}
