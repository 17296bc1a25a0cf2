//! TDX run-time measurements: the CCEL (TCG2 crypto-agile) event log and its replay into RTMR0..3.
//!
//! A TD's firmware and boot loaders extend the four RTMRs and record every extension in the event
//! log found through the ACPI `CCEL` table. [`parse_event_log`] reads that log: one legacy
//! `TCG_PCR_EVENT` header carrying the `Spec ID Event03` (which lists the digest algorithms and their
//! sizes), then `TCG_PCR_EVENT2` entries, up to a terminator (an MR index of `0xFFFFFFFF`, an all-zero
//! header, or the end of the buffer). [`EventLog::replay`] recomputes the registers
//! (`RTMR = SHA-384(RTMR ‖ digest)` from zero; MR index *i* → RTMR *i − 1*; `EV_NO_ACTION` skipped),
//! which a verifier compares with the RTMRs of a quote before appraising individual events.
//!
//! **What it trusts:** nothing. The log is untrusted bytes: every length is checked against the
//! remaining input before anything is read or allocated, digests of algorithms other than SHA-384 are
//! skipped using the sizes from the `Spec ID Event03`, and malformed logs are rejected with a typed
//! [`EventLogError`]. Parsing never panics. A parsed event is only *claimed* data until the replay has
//! matched the quoted RTMRs; the descriptions from [`TdEvent::describe`] are for display only.
//!
//! Rules beyond the TCG format, chosen for a CCEL (TDX) log:
//! * every extended event (type ≠ `EV_NO_ACTION`) must carry a SHA-384 digest and an MR index 1..=4
//!   (index 0 is MRTD, which nothing extends at run time); `EV_NO_ACTION` events may use index 0..=4;
//! * the `Spec ID Event03` must list SHA-384 (algorithm 0x000C) with size 48, and no algorithm twice;
//! * an event may list at most as many digests as the `Spec ID Event03` lists algorithms.

use std::fmt::Write as _;

use crate::digest::{Sha384, Sha384Digest};
use crate::guid::Guid;
use crate::ovmf::{read_u32, read_u64};

/// TCG algorithm id of SHA-384.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// `EV_NO_ACTION`: logged but never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// The signature at the start of the header event's data.
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// u32 index + u32 type + 20-byte SHA-1 + u32 size.
const LEGACY_HEADER: usize = 32;
/// u32 MR index + u32 type + u32 digest count.
const EVENT2_HEADER: usize = 12;
/// Longest text kept by [`TdEvent::describe`].
const DESCRIBE_MAX_CHARS: usize = 96;

/// Why an event log (or CCEL table) was rejected. Offsets are byte offsets into the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The input ends inside a structure.
    #[error("event log truncated at offset {offset:#x}: {what} needs {need} bytes, {available} left")]
    Truncated {
        /// Where the structure starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        available: usize,
    },
    /// The first event is not an `EV_NO_ACTION` header.
    #[error("event log header has event type {0:#x}, expected EV_NO_ACTION (0x3): not a TCG2 crypto-agile log")]
    HeaderType(u32),
    /// The header event's data is not a `Spec ID Event03`.
    #[error("event log header is not a \"Spec ID Event03\" (SHA-1-only logs are not supported)")]
    NotCryptoAgile,
    /// The `Spec ID Event03` structure is inconsistent.
    #[error("malformed Spec ID Event03: {0}")]
    BadSpecId(&'static str),
    /// The `Spec ID Event03` does not list SHA-384.
    #[error("Spec ID Event03 does not list SHA-384 (algorithm 0x000c): not a TDX event log")]
    NoSha384,
    /// SHA-384 listed with a size other than 48.
    #[error("Spec ID Event03 gives SHA-384 a digest size of {0}, expected 48")]
    Sha384Size(u16),
    /// An algorithm listed twice.
    #[error("Spec ID Event03 lists algorithm {0:#06x} twice")]
    DuplicateAlgorithm(u16),
    /// An event uses an algorithm the header does not list, so its size is unknown.
    #[error(
        "event at offset {offset:#x} has a digest of algorithm {algorithm:#06x}, which the Spec ID Event03 does not list"
    )]
    UnknownAlgorithm {
        /// Event offset.
        offset: usize,
        /// Algorithm id.
        algorithm: u16,
    },
    /// An event lists more digests than the header has algorithms.
    #[error("event at offset {offset:#x} lists {count} digests but the Spec ID Event03 has {listed} algorithms")]
    DigestCount {
        /// Event offset.
        offset: usize,
        /// Digest count.
        count: u32,
        /// Algorithms in the header.
        listed: usize,
    },
    /// An event carries two SHA-384 digests.
    #[error("event at offset {offset:#x} carries more than one SHA-384 digest")]
    DuplicateDigest {
        /// Event offset.
        offset: usize,
    },
    /// An extended event without a SHA-384 digest cannot be replayed.
    #[error("event at offset {offset:#x} (type {event_type:#x}) has no SHA-384 digest")]
    MissingSha384 {
        /// Event offset.
        offset: usize,
        /// Event type.
        event_type: u32,
    },
    /// An MR index that no RTMR backs.
    #[error(
        "event at offset {offset:#x} uses MR index {mr_index}; a TDX log uses 1..=4 (RTMR0..3) for extended events"
    )]
    MrIndex {
        /// Event offset.
        offset: usize,
        /// The index.
        mr_index: u32,
    },
    /// The ACPI CCEL table is malformed.
    #[error("malformed ACPI CCEL table: {0}")]
    BadCcelTable(&'static str),
}

/// One algorithm of the `Spec ID Event03`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    /// TCG algorithm id (0x000C = SHA-384).
    pub algorithm_id: u16,
    /// Digest size in bytes.
    pub digest_size: u16,
}

/// The `Spec ID Event03` from the log header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIdEvent {
    /// MR index of the header event (TCG says 0; TDVF writes 1).
    pub mr_index: u32,
    /// Platform class.
    pub platform_class: u32,
    /// Spec version (major, minor).
    pub spec_version: (u8, u8),
    /// Spec errata.
    pub spec_errata: u8,
    /// Size of UINTN in units of 4 bytes.
    pub uintn_size: u8,
    /// The algorithms every event carries, with their digest sizes.
    pub algorithms: Vec<AlgorithmSize>,
    /// Vendor information.
    pub vendor_info: Vec<u8>,
}

/// One `TCG_PCR_EVENT2` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdEvent {
    /// Byte offset of the event in the log.
    pub offset: usize,
    /// CC measurement-register index (1..=4 → RTMR0..3; 0..=4 for `EV_NO_ACTION`).
    pub mr_index: u32,
    /// TCG event type.
    pub event_type: u32,
    /// The SHA-384 digest (always present unless the event is `EV_NO_ACTION`).
    pub digest: Option<Sha384Digest>,
    /// The event data (claimed content; see [`TdEvent::describe`]).
    pub data: Vec<u8>,
}

impl TdEvent {
    /// The RTMR this event extends (0..=3), or `None` for `EV_NO_ACTION` events.
    pub fn rtmr(&self) -> Option<usize> {
        if self.event_type == EV_NO_ACTION {
            return None;
        }
        match self.mr_index {
            1..=4 => Some(self.mr_index as usize - 1),
            _ => None,
        }
    }

    /// The event type's TCG name.
    pub fn type_name(&self) -> &'static str {
        event_type_name(self.event_type)
    }

    /// A short, one-line, human description of the data (for listings; not verified content).
    pub fn describe(&self) -> String {
        describe_event(self.event_type, &self.data)
    }
}

/// A parsed CCEL event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The header's `Spec ID Event03`.
    pub spec_id: SpecIdEvent,
    /// The `TCG_PCR_EVENT2` entries, in log order.
    pub events: Vec<TdEvent>,
    /// Offset where parsing stopped (terminator, zero padding or end of input).
    pub end_offset: usize,
}

impl EventLog {
    /// Replays the log: RTMR0..3 as the TDX module would hold them after every logged extension.
    pub fn replay(&self) -> [Sha384Digest; 4] {
        let mut rtmrs = [Sha384Digest::ZERO; 4];
        for e in &self.events {
            if let (Some(i), Some(d)) = (e.rtmr(), e.digest.as_ref())
                && let Some(r) = rtmrs.get_mut(i)
            {
                *r = extend(r, d);
            }
        }
        rtmrs
    }

    /// The events that extend RTMR `rtmr` (0..=3), in order.
    pub fn events_for(&self, rtmr: usize) -> impl Iterator<Item = &TdEvent> {
        self.events.iter().filter(move |e| e.rtmr() == Some(rtmr))
    }
}

/// `SHA-384(register ‖ digest)`.
pub fn extend(register: &Sha384Digest, digest: &Sha384Digest) -> Sha384Digest {
    let mut h = Sha384::new();
    h.update(register.as_bytes());
    h.update(digest.as_bytes());
    h.finish()
}

/// A bounds-checked reader over the log.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, at: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let trunc = EventLogError::Truncated { offset: at, what, need: n, available: self.remaining() };
        let end = self.pos.checked_add(n).ok_or(trunc.clone())?;
        let s = self.bytes.get(self.pos..end).ok_or(trunc)?;
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self, at: usize, what: &'static str) -> Result<u16, EventLogError> {
        let s = self.take(2, at, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self, at: usize, what: &'static str) -> Result<u32, EventLogError> {
        let s = self.take(4, at, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Parses a CCEL / TCG2 crypto-agile event log (the whole log area may be passed: parsing stops at
/// the terminator or the zero padding).
pub fn parse_event_log(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    let mut c = Cursor { bytes, pos: 0 };
    let spec_id = parse_header(&mut c)?;
    let mut events = Vec::new();
    loop {
        let at = c.pos;
        let rest = bytes.get(at..).unwrap_or(&[]);
        if rest.is_empty() {
            break;
        }
        if rest.len() < EVENT2_HEADER {
            // Not enough for a header: only padding may remain.
            if rest.iter().all(|&b| b == 0) || rest.iter().all(|&b| b == 0xff) {
                break;
            }
            return Err(EventLogError::Truncated {
                offset: at,
                what: "event header",
                need: EVENT2_HEADER,
                available: rest.len(),
            });
        }
        let mr_index = read_u32(rest, 0).unwrap_or(0);
        if mr_index == u32::MAX || rest[..EVENT2_HEADER].iter().all(|&b| b == 0) {
            break;
        }
        events.push(parse_event2(&mut c, &spec_id)?);
    }
    Ok(EventLog { spec_id, events, end_offset: c.pos })
}

fn parse_header(c: &mut Cursor<'_>) -> Result<SpecIdEvent, EventLogError> {
    let hdr = c.take(LEGACY_HEADER, 0, "TCG_PCR_EVENT header")?;
    let mr_index = read_u32(hdr, 0).unwrap_or(0);
    let event_type = read_u32(hdr, 4).unwrap_or(0);
    let size = read_u32(hdr, 28).unwrap_or(0) as usize;
    if event_type != EV_NO_ACTION {
        return Err(EventLogError::HeaderType(event_type));
    }
    let data = c.take(size, 0, "Spec ID Event03 data")?;
    if data.get(..16) != Some(SPEC_ID_SIGNATURE.as_slice()) {
        return Err(EventLogError::NotCryptoAgile);
    }
    let bad = EventLogError::BadSpecId;
    let platform_class = read_u32(data, 16).ok_or(bad("too short for its fixed fields"))?;
    let fixed = data.get(20..28).ok_or(bad("too short for its fixed fields"))?;
    let (minor, major, errata, uintn_size) = (fixed[0], fixed[1], fixed[2], fixed[3]);
    let count = read_u32(fixed, 4).unwrap_or(0) as usize;
    if count == 0 {
        return Err(bad("lists no algorithms"));
    }
    let list_len = count.checked_mul(4).ok_or(bad("algorithm count overflows"))?;
    let list = data.get(28..28usize.saturating_add(list_len)).ok_or(bad("algorithm list runs past the event"))?;
    let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(count);
    for a in list.chunks_exact(4) {
        let alg = AlgorithmSize {
            algorithm_id: u16::from_le_bytes([a[0], a[1]]),
            digest_size: u16::from_le_bytes([a[2], a[3]]),
        };
        if algorithms.iter().any(|x| x.algorithm_id == alg.algorithm_id) {
            return Err(EventLogError::DuplicateAlgorithm(alg.algorithm_id));
        }
        algorithms.push(alg);
    }
    match algorithms.iter().find(|a| a.algorithm_id == TPM_ALG_SHA384) {
        None => return Err(EventLogError::NoSha384),
        Some(a) if a.digest_size != 48 => return Err(EventLogError::Sha384Size(a.digest_size)),
        Some(_) => {}
    }
    let vi_at = 28 + list_len;
    let vendor_len = *data.get(vi_at).ok_or(bad("vendor-info size missing"))? as usize;
    let vendor_info =
        data.get(vi_at + 1..vi_at + 1 + vendor_len).ok_or(bad("vendor info runs past the event"))?.to_vec();
    Ok(SpecIdEvent {
        mr_index,
        platform_class,
        spec_version: (major, minor),
        spec_errata: errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

fn parse_event2(c: &mut Cursor<'_>, spec: &SpecIdEvent) -> Result<TdEvent, EventLogError> {
    let offset = c.pos;
    let mr_index = c.u32(offset, "event header")?;
    let event_type = c.u32(offset, "event header")?;
    let count = c.u32(offset, "event header")?;
    if count as usize > spec.algorithms.len() {
        return Err(EventLogError::DigestCount { offset, count, listed: spec.algorithms.len() });
    }
    let mut digest = None;
    for _ in 0..count {
        let algorithm = c.u16(offset, "digest algorithm id")?;
        let size = spec
            .algorithms
            .iter()
            .find(|a| a.algorithm_id == algorithm)
            .ok_or(EventLogError::UnknownAlgorithm { offset, algorithm })?
            .digest_size;
        let d = c.take(size as usize, offset, "digest")?;
        if algorithm == TPM_ALG_SHA384 {
            if digest.is_some() {
                return Err(EventLogError::DuplicateDigest { offset });
            }
            digest = Sha384Digest::from_slice(d);
        }
    }
    let size = c.u32(offset, "event size")? as usize;
    let data = c.take(size, offset, "event data")?.to_vec();
    let max_index = 4;
    if mr_index > max_index || (event_type != EV_NO_ACTION && mr_index == 0) {
        return Err(EventLogError::MrIndex { offset, mr_index });
    }
    if event_type != EV_NO_ACTION && digest.is_none() {
        return Err(EventLogError::MissingSha384 { offset, event_type });
    }
    Ok(TdEvent { offset, mr_index, event_type, digest, data })
}

/// The ACPI `CCEL` table (Confidential Computing Event Log), 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcelTable {
    /// ACPI table revision.
    pub revision: u8,
    /// OEM id (6 ASCII bytes).
    pub oem_id: [u8; 6],
    /// CC type (2 = TDX).
    pub cc_type: u8,
    /// CC subtype.
    pub cc_subtype: u8,
    /// Log area minimum length (LAML).
    pub log_area_min_len: u64,
    /// Log area start address (LASA).
    pub log_area_start: u64,
}

impl CcelTable {
    /// CC type value for Intel TDX.
    pub const CC_TYPE_TDX: u8 = 2;
    /// Length of the table.
    pub const LEN: usize = 56;
}

/// Parses the ACPI `CCEL` table (e.g. `/sys/firmware/acpi/tables/CCEL`), checking its signature,
/// length and checksum.
pub fn parse_ccel_table(bytes: &[u8]) -> Result<CcelTable, EventLogError> {
    let bad = EventLogError::BadCcelTable;
    let t = bytes.get(..CcelTable::LEN).ok_or(bad("shorter than 56 bytes"))?;
    if &t[..4] != b"CCEL" {
        return Err(bad("signature is not \"CCEL\""));
    }
    let length = read_u32(t, 4).unwrap_or(0) as usize;
    if length != CcelTable::LEN || bytes.len() != CcelTable::LEN {
        return Err(bad("length is not 56 bytes"));
    }
    if t.iter().fold(0u8, |a, &b| a.wrapping_add(b)) != 0 {
        return Err(bad("checksum does not sum to zero"));
    }
    let mut oem_id = [0u8; 6];
    oem_id.copy_from_slice(&t[10..16]);
    Ok(CcelTable {
        revision: t[8],
        oem_id,
        cc_type: t[36],
        cc_subtype: t[37],
        log_area_min_len: read_u64(t, 40).unwrap_or(0),
        log_area_start: read_u64(t, 48).unwrap_or(0),
    })
}

/// The TCG name of an event type (`"unknown"` for values not in the PC Client / UEFI specs).
pub fn event_type_name(event_type: u32) -> &'static str {
    match event_type {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x2 => "EV_UNUSED",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xa => "EV_PLATFORM_CONFIG_FLAGS",
        0xb => "EV_TABLE_OF_DEVICES",
        0xc => "EV_COMPACT_HASH",
        0xd => "EV_IPL",
        0xe => "EV_IPL_PARTITION_DATA",
        0xf => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x13 => "EV_POST_CODE2",
        0x8000_0000 => "EV_EFI_EVENT_BASE",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_000d => "EV_EFI_GPT_EVENT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        0x8000_00e3 => "EV_EFI_SPDM_DEVICE_POLICY",
        0x8000_00e4 => "EV_EFI_SPDM_DEVICE_AUTHORITY",
        _ => "unknown",
    }
}

/// A short, one-line description of an event's data for listings: the UTF-16 name of EFI variable
/// events, the description of firmware-blob / handoff-table events, the file path of loaded images,
/// the text of textual events, otherwise the size and leading bytes. Never fails; the content is
/// whatever the log claims.
pub fn describe_event(event_type: u32, data: &[u8]) -> String {
    let described = match event_type {
        0x8000_0001 | 0x8000_0002 | 0x8000_000c | 0x8000_00e0 => describe_variable(data),
        0x8000_000a | 0x8000_000b => describe_blob2(data),
        0x8000_0003..=0x8000_0005 => describe_image(data),
        0x8000_0006 => describe_gpt(data),
        0x4 => describe_separator(data),
        EV_NO_ACTION => data.get(..16).and_then(printable_ascii).map(|s| format!("\"{s}\"")),
        _ => None,
    };
    described
        .or_else(|| printable_ascii(data).map(|s| format!("\"{s}\"")))
        .or_else(|| printable_utf16(data).map(|s| format!("\"{s}\" (UTF-16)")))
        .unwrap_or_else(|| hex_preview(data))
}

/// `UEFI_VARIABLE_DATA`: GUID, u64 name length (characters), u64 data length, UTF-16 name, data.
fn describe_variable(data: &[u8]) -> Option<String> {
    let guid_bytes: [u8; 16] = data.get(..16)?.try_into().ok()?;
    let name_chars = usize::try_from(read_u64(data, 16)?).ok()?;
    let data_len = read_u64(data, 24)?;
    let name_bytes = data.get(32..32usize.checked_add(name_chars.checked_mul(2)?)?)?;
    let name = utf16_lossy(name_bytes);
    Some(format!("{} [{}], {} byte(s)", clip(&name), Guid::from_bytes_le(guid_bytes), data_len))
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB2` / `UEFI_HANDOFF_TABLE_POINTERS2`: u8 description size, description.
fn describe_blob2(data: &[u8]) -> Option<String> {
    let n = *data.first()? as usize;
    let text = printable_ascii(data.get(1..1 + n)?)?;
    Some(format!("\"{text}\""))
}

/// `UEFI_IMAGE_LOAD_EVENT`: u64 location, u64 length, u64 link address, u64 device-path length,
/// device path. Shows the media file-path nodes if any.
fn describe_image(data: &[u8]) -> Option<String> {
    let length = read_u64(data, 8)?;
    let dp_len = usize::try_from(read_u64(data, 24)?).ok()?;
    let dp = data.get(32..32usize.checked_add(dp_len)?).unwrap_or(&[]);
    let mut path = String::new();
    let mut rest = dp;
    // Device-path nodes: u8 type, u8 subtype, u16 length (including these 4 bytes).
    while let [ty, sub, l0, l1, ..] = *rest {
        let node_len = u16::from_le_bytes([l0, l1]) as usize;
        if node_len < 4 || node_len > rest.len() || ty == 0x7f {
            break;
        }
        if ty == 4 && sub == 4 {
            let name = utf16_lossy(&rest[4..node_len]);
            if !path.is_empty() && !path.ends_with('\\') && !name.starts_with('\\') {
                path.push('\\');
            }
            path.push_str(&name);
        }
        rest = &rest[node_len..];
    }
    Some(if path.is_empty() {
        format!("image, {length} byte(s)")
    } else {
        format!("image {}, {length} byte(s)", clip(&path))
    })
}

/// `UEFI_GPT_DATA`: the 92-byte partition-table header, then u64 partition count.
fn describe_gpt(data: &[u8]) -> Option<String> {
    if data.get(..8)? != b"EFI PART" {
        return None;
    }
    let header_size = read_u32(data, 12)? as usize;
    let n = read_u64(data, header_size)?;
    Some(format!("GPT, {n} partition(s)"))
}

fn describe_separator(data: &[u8]) -> Option<String> {
    let v = read_u32(data, 0)?;
    (data.len() == 4).then(|| match v {
        0 => "separator".to_string(),
        u32::MAX => "error separator (0xffffffff)".to_string(),
        v => format!("separator {v:#010x}"),
    })
}

/// The data as text if, after trailing NULs are removed, it is non-empty printable ASCII
/// (newlines and tabs allowed, shown escaped).
fn printable_ascii(data: &[u8]) -> Option<String> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = &data[..end];
    if text.is_empty() || !text.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t' || b == b'\r') {
        return None;
    }
    let s: String = text.iter().map(|&b| b as char).collect();
    Some(clip(&s))
}

/// The data as UTF-16LE text if it decodes to non-empty printable characters (NUL-terminated or not).
fn printable_utf16(data: &[u8]) -> Option<String> {
    if data.len() < 2 || !data.len().is_multiple_of(2) {
        return None;
    }
    let s = utf16_lossy(data);
    (!s.is_empty() && s.chars().all(|ch| !ch.is_control() || ch == '\n' || ch == '\t') && !s.contains('\u{fffd}'))
        .then(|| clip(&s))
}

/// UTF-16LE up to the first NUL, invalid units replaced.
fn utf16_lossy(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0);
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

/// One line: control characters escaped, at most `DESCRIBE_MAX_CHARS` characters.
fn clip(s: &str) -> String {
    let mut out = String::new();
    for (n, ch) in s.chars().enumerate() {
        if n == DESCRIBE_MAX_CHARS {
            out.push('…');
            break;
        }
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn hex_preview(data: &[u8]) -> String {
    let shown = data.get(..16).unwrap_or(data);
    let ellipsis = if data.len() > shown.len() { "…" } else { "" };
    format!("{} byte(s): {}{ellipsis}", data.len(), hex::encode(shown))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::digest::sha384;

    fn spec_id(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut data = SPEC_ID_SIGNATURE.to_vec();
        data.extend_from_slice(&0u32.to_le_bytes()); // platform class
        data.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintn
        data.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            data.extend_from_slice(&a.to_le_bytes());
            data.extend_from_slice(&s.to_le_bytes());
        }
        data.push(0); // vendor info size
        let mut ev = Vec::new();
        ev.extend_from_slice(&1u32.to_le_bytes());
        ev.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        ev.extend_from_slice(&[0u8; 20]);
        ev.extend_from_slice(&(data.len() as u32).to_le_bytes());
        ev.extend_from_slice(&data);
        ev
    }

    /// An event carrying, for each `(alg, size)`, a digest filled with `fill` (SHA-384 gets `d`).
    fn event(mr: u32, ty: u32, algs: &[(u16, u16)], d: &Sha384Digest, data: &[u8]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&mr.to_le_bytes());
        ev.extend_from_slice(&ty.to_le_bytes());
        ev.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            ev.extend_from_slice(&a.to_le_bytes());
            if *a == TPM_ALG_SHA384 {
                ev.extend_from_slice(d.as_bytes());
            } else {
                ev.extend(std::iter::repeat_n(0xa5, *s as usize));
            }
        }
        ev.extend_from_slice(&(data.len() as u32).to_le_bytes());
        ev.extend_from_slice(data);
        ev
    }

    const ONLY384: &[(u16, u16)] = &[(TPM_ALG_SHA384, 48)];
    const MULTI: &[(u16, u16)] = &[(0x0004, 20), (0x000b, 32), (TPM_ALG_SHA384, 48), (0x000d, 64)];

    fn sample(algs: &[(u16, u16)], padding: u8) -> Vec<u8> {
        let mut log = spec_id(algs);
        log.extend(event(1, 0x8000_000b, algs, &sha384(b"hob"), b"\x08TdxTable"));
        log.extend(event(0, EV_NO_ACTION, algs, &Sha384Digest::ZERO, b"StartupLocality\0\x03"));
        log.extend(event(2, 0x8000_0007, algs, &sha384(b"a"), b"Calling EFI Application from Boot Option"));
        log.extend(event(3, 0xd, algs, &sha384(b"b"), b"grub_cmd: linux /vmlinuz\0"));
        log.extend(event(2, 0x4, algs, &sha384(&[0u8; 4]), &[0u8; 4]));
        log.extend(event(4, 0x6, algs, &sha384(b"c"), b"aael"));
        log.extend(std::iter::repeat_n(padding, 300));
        log
    }

    fn expected_rtmrs() -> [Sha384Digest; 4] {
        let z = Sha384Digest::ZERO;
        let r0 = extend(&z, &sha384(b"hob"));
        let r1 = extend(&extend(&z, &sha384(b"a")), &sha384(&[0u8; 4]));
        let r2 = extend(&z, &sha384(b"b"));
        let r3 = extend(&z, &sha384(b"c"));
        [r0, r1, r2, r3]
    }

    #[test]
    fn parses_and_replays_single_algorithm_log() {
        for pad in [0x00, 0xff] {
            let log = parse_event_log(&sample(ONLY384, pad)).expect("parse");
            assert_eq!(log.events.len(), 6);
            assert_eq!(log.spec_id.algorithms, vec![AlgorithmSize { algorithm_id: 0xc, digest_size: 48 }]);
            assert_eq!(log.spec_id.spec_version, (2, 0));
            assert_eq!(log.replay(), expected_rtmrs());
            assert_eq!(log.events[1].rtmr(), None);
            assert_eq!(log.events[2].rtmr(), Some(1));
            assert_eq!(log.events_for(1).count(), 2);
        }
    }

    #[test]
    fn skips_other_algorithms_using_spec_id_sizes() {
        let log = parse_event_log(&sample(MULTI, 0)).expect("parse");
        assert_eq!(log.events.len(), 6);
        assert_eq!(log.replay(), expected_rtmrs());
        assert_eq!(log.events[3].data, b"grub_cmd: linux /vmlinuz\0");
    }

    #[test]
    fn stops_at_end_of_buffer_and_short_padding() {
        let mut bytes = sample(ONLY384, 0);
        bytes.truncate(bytes.len() - 300);
        let full = parse_event_log(&bytes).expect("parse");
        assert_eq!(full.end_offset, bytes.len());
        bytes.extend_from_slice(&[0xff; 5]);
        assert_eq!(parse_event_log(&bytes).expect("parse").events.len(), 6);
        bytes.truncate(bytes.len() - 5);
        bytes.extend_from_slice(&[1, 0, 0]);
        assert!(matches!(parse_event_log(&bytes), Err(EventLogError::Truncated { .. })));
    }

    #[test]
    fn rejects_malformed_logs() {
        let good = sample(ONLY384, 0);
        // Truncated anywhere inside an event.
        let first_event_end = spec_id(ONLY384).len() + 12 + 2 + 48 + 4 + 9;
        for cut in [10, 40, spec_id(ONLY384).len() + 20, first_event_end - 1] {
            assert!(matches!(parse_event_log(&good[..cut]), Err(EventLogError::Truncated { .. })), "{cut}");
        }
        // Header type.
        let mut b = good.clone();
        b[4] = 5;
        assert_eq!(parse_event_log(&b), Err(EventLogError::HeaderType(5)));
        // Signature.
        let mut b = good.clone();
        b[32] = b'X';
        assert_eq!(parse_event_log(&b), Err(EventLogError::NotCryptoAgile));
        // No SHA-384, bad size, duplicates.
        assert_eq!(parse_event_log(&spec_id(&[(0xb, 32)])), Err(EventLogError::NoSha384));
        assert_eq!(parse_event_log(&spec_id(&[(0xc, 32)])), Err(EventLogError::Sha384Size(32)));
        assert_eq!(parse_event_log(&spec_id(&[(0xc, 48), (0xc, 48)])), Err(EventLogError::DuplicateAlgorithm(0xc)));
        assert!(matches!(parse_event_log(&spec_id(&[])), Err(EventLogError::BadSpecId(_))));
        // Huge algorithm count in a short event.
        let mut b = spec_id(ONLY384);
        b[32 + 24..32 + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_event_log(&b), Err(EventLogError::BadSpecId(_))));
        // Unknown algorithm in an event.
        let mut b = spec_id(ONLY384);
        b.extend(event(1, 4, &[(0xb, 32)], &Sha384Digest::ZERO, &[0; 4]));
        assert!(matches!(parse_event_log(&b), Err(EventLogError::UnknownAlgorithm { algorithm: 0xb, .. })));
        // More digests than algorithms.
        let mut b = spec_id(ONLY384);
        b.extend(event(1, 4, &[(0xc, 48), (0xc, 48)], &Sha384Digest::ZERO, &[0; 4]));
        assert!(matches!(parse_event_log(&b), Err(EventLogError::DigestCount { count: 2, .. })));
        // Duplicate SHA-384 digest.
        let mut b = spec_id(MULTI);
        b.extend(event(1, 4, &[(0xc, 48), (0xc, 48)], &Sha384Digest::ZERO, &[0; 4]));
        assert!(matches!(parse_event_log(&b), Err(EventLogError::DuplicateDigest { .. })));
        // Extended event without SHA-384.
        let mut b = spec_id(MULTI);
        b.extend(event(1, 4, &[(0xb, 32)], &Sha384Digest::ZERO, &[0; 4]));
        assert!(matches!(parse_event_log(&b), Err(EventLogError::MissingSha384 { event_type: 4, .. })));
        // MR indices.
        for (mr, ty) in [(5, 4), (0, 4), (7, EV_NO_ACTION)] {
            let mut b = spec_id(ONLY384);
            b.extend(event(mr, ty, ONLY384, &Sha384Digest::ZERO, &[0; 4]));
            assert!(matches!(parse_event_log(&b), Err(EventLogError::MrIndex { .. })), "{mr}");
        }
        // Event size past the end.
        let mut b = spec_id(ONLY384);
        let mut e = event(1, 4, ONLY384, &Sha384Digest::ZERO, &[0; 4]);
        let n = e.len();
        e[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        b.extend(e);
        assert!(matches!(parse_event_log(&b), Err(EventLogError::Truncated { what: "event data", .. })));
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(event_type_name(0x8000_0001), "EV_EFI_VARIABLE_DRIVER_CONFIG");
        assert_eq!(event_type_name(0xd), "EV_IPL");
        assert_eq!(event_type_name(0x1234), "unknown");

        let mut var = crate::guid::known::OVMF_TABLE_FOOTER.as_bytes_le().to_vec();
        var.extend_from_slice(&10u64.to_le_bytes());
        var.extend_from_slice(&1u64.to_le_bytes());
        for u in "SecureBoot".encode_utf16() {
            var.extend_from_slice(&u.to_le_bytes());
        }
        var.push(1);
        assert_eq!(describe_event(0x8000_0001, &var), "SecureBoot [96b582de-1fb2-45f7-baea-a366c55a082d], 1 byte(s)");
        assert_eq!(describe_event(0x8000_000b, b"\x08TdxTable\x01\x00"), "\"TdxTable\"");
        assert_eq!(describe_event(0x4, &[0; 4]), "separator");
        assert_eq!(describe_event(0xd, b"grub_cmd: a\nb\0"), "\"grub_cmd: a\\nb\"");
        assert_eq!(describe_event(0x6, &[1, 2, 3]), "3 byte(s): 010203");
        let utf16: Vec<u8> = "initrd=x\0".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        assert_eq!(describe_event(0x6, &utf16), "\"initrd=x\" (UTF-16)");
        let long = "x".repeat(500);
        assert_eq!(describe_event(0x5, long.as_bytes()).chars().count(), DESCRIBE_MAX_CHARS + 3);

        // A loaded image with a file-path device-path node.
        let mut img = Vec::new();
        for v in [0x1000u64, 0x2000, 0, 0] {
            img.extend_from_slice(&v.to_le_bytes());
        }
        let name: Vec<u8> = "\\EFI\\BOOT\\BOOTX64.EFI\0".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut dp = vec![4u8, 4];
        dp.extend_from_slice(&((4 + name.len()) as u16).to_le_bytes());
        dp.extend_from_slice(&name);
        dp.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        img[24..32].copy_from_slice(&(dp.len() as u64).to_le_bytes());
        img.extend_from_slice(&dp);
        assert_eq!(describe_event(0x8000_0003, &img), "image \\EFI\\BOOT\\BOOTX64.EFI, 8192 byte(s)");
    }

    #[test]
    fn ccel_table() {
        let mut t = [0u8; 56];
        t[..4].copy_from_slice(b"CCEL");
        t[4..8].copy_from_slice(&56u32.to_le_bytes());
        t[8] = 1;
        t[36] = 2;
        t[40..48].copy_from_slice(&0x40000u64.to_le_bytes());
        t[48..56].copy_from_slice(&0xbedb_f000u64.to_le_bytes());
        let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
        let c = parse_ccel_table(&t).expect("ccel");
        assert_eq!((c.cc_type, c.log_area_min_len, c.log_area_start), (CcelTable::CC_TYPE_TDX, 0x40000, 0xbedb_f000));
        let mut bad = t;
        bad[20] ^= 1;
        assert!(matches!(parse_ccel_table(&bad), Err(EventLogError::BadCcelTable(_))));
        assert!(parse_ccel_table(&t[..40]).is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                if let Ok(log) = parse_event_log(&data) {
                    let _ = log.replay();
                    for e in &log.events {
                        let _ = e.describe();
                    }
                }
                let _ = parse_ccel_table(&data);
                for ty in [0x8000_0001u32, 0x8000_0003, 0x8000_0006, 0x8000_000a, 0x4, 0x3, 0x6] {
                    let _ = describe_event(ty, &data);
                }
            }

            #[test]
            fn mutated_logs_never_panic(
                multi in any::<bool>(),
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut log = sample(if multi { MULTI } else { ONLY384 }, 0);
                for (at, v) in edits {
                    let i = at.index(log.len());
                    log[i] = v;
                }
                let end = cut.index(log.len() + 1);
                if let Ok(parsed) = parse_event_log(&log[..end]) {
                    let _ = parsed.replay();
                    for e in &parsed.events {
                        let _ = e.describe();
                    }
                }
            }
        }
    }
}
