//! Intel TDX and SGX DCAP quotes: parse from and serialise to the exact byte layout.
//!
//! Supported: quote version 4 (TD 1.0 body, or an SGX enclave body), version 5 (a 6-byte body
//! descriptor, then an SGX enclave body, a TD 1.0, TD 1.5 or TD 1.5-extended body) and version 3
//! (SGX), all with an ECDSA P-256 attestation key (type 2). The signature data is parsed completely:
//! the quote signature and attestation key, the QE report and its signature, the QE authentication
//! data and the certification data (for v4/v5 wrapped in type 6, "QE report certification data";
//! the inner type 5 is the PEM PCK certificate chain, kept as raw bytes).
//!
//! Layout (integers little-endian): a 48-byte header; for v5 `u16 body type` + `u32 body size`; the
//! body; `u32` signature-data length; the signature data. The signed region is the header, the v5
//! descriptor and the body. Bytes after the signature data (real quotes come in buffers of 5006 or
//! 8000 bytes) are tolerated and counted in [`Quote::trailing_len`]; bytes inside the declared
//! signature data that no field accounts for are an error.
//!
//! **What it trusts:** nothing. The input is untrusted bytes: every length is checked against the
//! remaining input before it is used, nothing is allocated beyond the input's size, malformed input
//! is rejected with a typed [`QuoteError`], and parsing never panics. A parsed quote says what the
//! bytes *claim*; signatures, the PCK chain and collateral are checked by `cloister-verifier`.
//! [`Quote::signed_bytes`] is the signed region exactly as received, so signatures are verified over
//! the original bytes, never over a re-serialisation.

pub mod qgs;
pub mod tdreport;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of the quote header.
pub const HEADER_LEN: usize = 48;
/// Length of the v5 body descriptor (`u16` type + `u32` size).
pub const BODY_DESCRIPTOR_LEN: usize = 6;
/// Length of an SGX enclave report body (also the QE report).
pub const ENCLAVE_REPORT_LEN: usize = 384;
/// Length of a TD 1.0 report body.
pub const TD_REPORT10_LEN: usize = 584;
/// Length of a TD 1.5 report body.
pub const TD_REPORT15_LEN: usize = 648;
/// Length of a TD 1.5-extended report body.
pub const TD_REPORT15_EX_LEN: usize = 885;
/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// TEE type of an SGX quote.
pub const TEE_TYPE_SGX: u32 = 0;
/// Attestation key type ECDSA-256 with the P-256 curve (the only one defined in practice).
pub const ATTESTATION_KEY_ECDSA_P256: u16 = 2;
/// Intel's QE vendor ID.
pub const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];
/// Certification data type 5: PCK certificate chain (PEM: leaf, intermediate CA, root).
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Certification data type 6: QE report certification data (wraps QE report, signature, auth data
/// and the inner certification data).
pub const CERT_DATA_QE_REPORT: u16 = 6;
/// v5 body type: SGX enclave report.
pub const BODY_TYPE_SGX: u16 = 1;
/// v5 body type: TD report 1.0.
pub const BODY_TYPE_TD10: u16 = 2;
/// v5 body type: TD report 1.5.
pub const BODY_TYPE_TD15: u16 = 3;
/// v5 body type: TD report 1.5 extended.
pub const BODY_TYPE_TD15_EX: u16 = 4;
/// Length of an ECDSA P-256 signature `r ‖ s` or raw public key `x ‖ y`.
const P256_LEN: usize = 64;

/// Why a quote was rejected by the parser. Offsets are byte offsets into the quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The input ends inside a structure.
    #[error("quote truncated at offset {offset}: {what} needs {need} bytes, {available} left")]
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
    /// A quote version this parser does not know.
    #[error("unsupported quote version {0} (supported: 3 for SGX, 4 and 5)")]
    UnsupportedVersion(u16),
    /// The TEE type does not fit the version or body type.
    #[error("TEE type {tee_type:#x} is not valid for a version {version} quote{}", body_type.map(|t| format!(" with body type {t}")).unwrap_or_default())]
    UnsupportedTeeType {
        /// Quote version.
        version: u16,
        /// TEE type from the header.
        tee_type: u32,
        /// v5 body type, if any.
        body_type: Option<u16>,
    },
    /// A v5 body type this parser does not know.
    #[error("unsupported v5 body type {0} (known: 1 SGX, 2 TD 1.0, 3 TD 1.5, 4 TD 1.5 extended)")]
    UnsupportedBodyType(u16),
    /// The v5 body size does not match the body type.
    #[error("v5 body type {body_type} declares {size} bytes, expected {expected}")]
    BodySize {
        /// Body type.
        body_type: u16,
        /// Declared size.
        size: u32,
        /// Size of that body type.
        expected: usize,
    },
    /// An attestation key type other than ECDSA P-256.
    #[error("unsupported attestation key type {0} (only 2 = ECDSA P-256 is supported)")]
    UnsupportedKeyType(u16),
    /// The outer certification data of a v4/v5 quote is not type 6.
    #[error("certification data type {found}, expected {expected}")]
    CertificationDataType {
        /// Expected type.
        expected: u16,
        /// Found type.
        found: u16,
    },
    /// Bytes inside a declared length that no field accounts for.
    #[error("{unused} unaccounted bytes at the end of the {what}")]
    UnusedBytes {
        /// The enclosing structure.
        what: &'static str,
        /// How many bytes are left over.
        unused: usize,
    },
    /// A length that does not fit the field it is serialised into.
    #[error("{what} is {len} bytes, too long for its length field")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// A fixed-size byte string, shown and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes<const N: usize>(pub [u8; N]);

/// A 48-byte measurement register value (SHA-384): MRTD, RTMR0..3, MRSEAM, MRSIGNERSEAM, MRCONFIGID,
/// MROWNER, MROWNERCONFIG, MRSERVICETD.
pub type Mr48 = Bytes<48>;
/// A 32-byte SGX measurement: MRENCLAVE, MRSIGNER.
pub type Mr32 = Bytes<32>;
/// The 64 bytes of report data a guest or enclave binds into its report.
pub type ReportData = Bytes<64>;
/// A 16-byte SVN vector: TEE_TCB_SVN, TEE_TCB_SVN2, CPUSVN.
pub type Svn16 = Bytes<16>;
/// A raw ECDSA P-256 value: signature `r ‖ s` or public key `x ‖ y` (big-endian coordinates).
pub type P256Raw = Bytes<64>;

impl<const N: usize> Bytes<N> {
    /// Length in bytes.
    pub const LEN: usize = N;
    /// All zero.
    pub const ZERO: Self = Self([0; N]);

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly `2 * N` hex digits.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }

    /// Copies a slice of exactly `N` bytes.
    pub fn from_slice(s: &[u8]) -> Option<Self> {
        <[u8; N]>::try_from(s).ok().map(Self)
    }

    /// True if every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const N: usize> From<[u8; N]> for Bytes<N> {
    fn from(b: [u8; N]) -> Self {
        Self(b)
    }
}

impl<const N: usize> AsRef<[u8]> for Bytes<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> fmt::Display for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> Serialize for Bytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// TDATTRIBUTES (8 bytes, a little-endian bit field).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TdAttributes(pub Bytes<8>);

impl TdAttributes {
    /// Bit 0: the TD is debuggable (its memory and state are visible to the host).
    pub const DEBUG: u64 = 1 << 0;
    /// Bits 4..=6: performance-profiling features under host control (TUD group).
    pub const PROFILING: u64 = 0x70;
    /// Bit 16: ICSSD.
    pub const ICSSD: u64 = 1 << 16;
    /// Bit 17: SERVTD_EXT, the TD can be bound to service TDs.
    pub const SERVTD_EXT: u64 = 1 << 17;
    /// Bit 27: LASS.
    pub const LASS: u64 = 1 << 27;
    /// Bit 28: SEPT_VE_DISABLE, EPT violations are not converted to #VE.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// Bit 29: MIGRATABLE.
    pub const MIGRATABLE: u64 = 1 << 29;
    /// Bit 30: PKS (protection keys for supervisor pages).
    pub const PKS: u64 = 1 << 30;
    /// Bit 31: KL (key locker).
    pub const KL: u64 = 1 << 31;
    /// Bit 62: TPA.
    pub const TPA: u64 = 1 << 62;
    /// Bit 63: PERFMON.
    pub const PERFMON: u64 = 1 << 63;
    /// Bits that the TDX module ABI (1.5) defines as reserved, must-be-zero.
    pub const RESERVED: u64 = 0x0e | 0xff80 | (0xf << 23) | (((1u64 << 30) - 1) << 32);

    /// The attributes as a `u64`.
    pub fn bits(&self) -> u64 {
        u64::from_le_bytes(self.0.0)
    }

    /// True if every bit of `mask` is set.
    pub fn has(&self, mask: u64) -> bool {
        self.bits() & mask == mask
    }

    /// DEBUG (bit 0).
    pub fn debug(&self) -> bool {
        self.has(Self::DEBUG)
    }

    /// SEPT_VE_DISABLE (bit 28).
    pub fn sept_ve_disable(&self) -> bool {
        self.has(Self::SEPT_VE_DISABLE)
    }

    /// MIGRATABLE (bit 29).
    pub fn migratable(&self) -> bool {
        self.has(Self::MIGRATABLE)
    }
}

impl fmt::Debug for TdAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdAttributes({:#018x})", self.bits())
    }
}

/// The 48-byte quote header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteHeader {
    /// Quote version: 3 (SGX), 4, 5.
    pub version: u16,
    /// Attestation key type (2 = ECDSA P-256).
    pub attestation_key_type: u16,
    /// TEE type: 0x81 TDX, 0 SGX.
    pub tee_type: u32,
    /// Bytes 8..10: reserved for TDX; QE SVN in SGX v3 quotes.
    pub qe_svn: u16,
    /// Bytes 10..12: reserved for TDX; PCE SVN in SGX v3 quotes.
    pub pce_svn: u16,
    /// QE vendor ID (Intel: [`INTEL_QE_VENDOR_ID`]).
    pub qe_vendor_id: Bytes<16>,
    /// User data; the first 16 bytes are the QE identifier.
    pub user_data: Bytes<20>,
}

/// The TD report body of TDX 1.0 (584 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdReport10 {
    /// TEE_TCB_SVN: byte 0 TDX module SVN, byte 1 module major version, rest TCB components.
    pub tee_tcb_svn: Svn16,
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: Mr48,
    /// MRSIGNERSEAM: signer of the TDX module (zero for Intel's).
    pub mr_signer_seam: Mr48,
    /// SEAMATTRIBUTES.
    pub seam_attributes: Bytes<8>,
    /// TDATTRIBUTES.
    pub td_attributes: TdAttributes,
    /// XFAM: extended features the TD may use.
    pub xfam: Bytes<8>,
    /// MRTD: build-time measurement of the initial TD memory (the firmware).
    pub mr_td: Mr48,
    /// MRCONFIGID: host-provided at launch (CoCo: init-data digest).
    pub mr_config_id: Mr48,
    /// MROWNER.
    pub mr_owner: Mr48,
    /// MROWNERCONFIG.
    pub mr_owner_config: Mr48,
    /// RTMR0..RTMR3.
    pub rtmr: [Mr48; 4],
    /// REPORTDATA.
    pub report_data: ReportData,
}

/// The TD report body of TDX 1.5 (648 bytes): TD 1.0 plus two fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdReport15 {
    /// The TD 1.0 fields.
    pub base: TdReport10,
    /// TEE_TCB_SVN2: the TCB of the currently running TDX module (differs from TEE_TCB_SVN after
    /// a TD-preserving module update).
    pub tee_tcb_svn2: Svn16,
    /// MRSERVICETD: hash of the bound service TDs' TDINFO (zero if none).
    pub mr_service_td: Mr48,
}

/// The "TD 1.5 extended" report body (885 bytes): TD 1.5 plus launch-time and binding information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdReport15Ex {
    /// The TD 1.5 fields.
    pub base: TdReport15,
    /// VM identifier.
    pub vm_id: u8,
    /// TD identifier.
    pub td_id: Bytes<32>,
    /// Hash of the device information (TDX Connect).
    pub dev_info_hash: Mr48,
    /// Service-TD hash at TD creation.
    pub init_service_td_hash: Mr48,
    /// Service-TD attributes at TD creation.
    pub init_service_td_attributes: Bytes<8>,
    /// CPUSVN at TD creation.
    pub init_cpu_svn: Svn16,
    /// TEE_TCB_SVN at TD creation.
    pub init_tee_tcb_svn: Svn16,
    /// FMSPC information at TD creation (12 bytes as laid out by the TDX module).
    pub init_fmspc: Bytes<12>,
    /// Currently bound service TDs' hash.
    pub cur_service_td_hash: Mr48,
    /// Currently bound service TDs' attributes.
    pub cur_service_td_attributes: Bytes<8>,
}

/// An SGX report body (384 bytes): the body of SGX quotes and the QE report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnclaveReport {
    /// CPUSVN.
    pub cpu_svn: Svn16,
    /// MISCSELECT.
    pub misc_select: u32,
    /// Reserved (28 bytes).
    pub reserved1: Bytes<28>,
    /// ATTRIBUTES (flags, then XFRM).
    pub attributes: Bytes<16>,
    /// MRENCLAVE.
    pub mr_enclave: Mr32,
    /// Reserved (32 bytes).
    pub reserved2: Bytes<32>,
    /// MRSIGNER.
    pub mr_signer: Mr32,
    /// Reserved (96 bytes).
    pub reserved3: Bytes<96>,
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// Reserved (60 bytes).
    pub reserved4: Bytes<60>,
    /// REPORTDATA.
    pub report_data: ReportData,
}

impl EnclaveReport {
    /// ATTRIBUTES.DEBUG (bit 1 of the flags).
    pub fn debug(&self) -> bool {
        self.attributes.0[0] & 0x02 != 0
    }

    /// Parses exactly 384 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(b, 0);
        let v = read_enclave_report(&mut r)?;
        r.finish("enclave report")?;
        Ok(v)
    }

    /// The 384-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCLAVE_REPORT_LEN);
        write_enclave_report(&mut out, self);
        out
    }
}

/// The quote body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "report", rename_all = "snake_case")]
// The bodies differ in size as the hardware formats do; boxing would cost an allocation per quote.
#[allow(clippy::large_enum_variant)]
pub enum QuoteBody {
    /// SGX enclave report (v3, v4 with TEE type 0, v5 body type 1).
    SgxEnclave(EnclaveReport),
    /// TD report 1.0 (v4, v5 body type 2).
    Td10(TdReport10),
    /// TD report 1.5 (v5 body type 3).
    Td15(TdReport15),
    /// TD report 1.5 extended (v5 body type 4).
    Td15Ex(TdReport15Ex),
}

impl QuoteBody {
    /// The v5 body type of this body.
    pub fn body_type(&self) -> u16 {
        match self {
            Self::SgxEnclave(_) => BODY_TYPE_SGX,
            Self::Td10(_) => BODY_TYPE_TD10,
            Self::Td15(_) => BODY_TYPE_TD15,
            Self::Td15Ex(_) => BODY_TYPE_TD15_EX,
        }
    }

    /// Encoded length of this body.
    pub fn len(&self) -> usize {
        body_len(self.body_type()).unwrap_or(0)
    }

    /// Always false (bodies have a fixed, non-zero size); for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The TD 1.0 fields of a TD body (also for TD 1.5 and 1.5-extended).
    pub fn td10(&self) -> Option<&TdReport10> {
        match self {
            Self::Td10(r) => Some(r),
            Self::Td15(r) => Some(&r.base),
            Self::Td15Ex(r) => Some(&r.base.base),
            Self::SgxEnclave(_) => None,
        }
    }

    /// The TD 1.5 fields (TD 1.5 and 1.5-extended).
    pub fn td15(&self) -> Option<&TdReport15> {
        match self {
            Self::Td15(r) => Some(r),
            Self::Td15Ex(r) => Some(&r.base),
            _ => None,
        }
    }

    /// The SGX enclave report.
    pub fn sgx(&self) -> Option<&EnclaveReport> {
        match self {
            Self::SgxEnclave(r) => Some(r),
            _ => None,
        }
    }

    /// REPORTDATA of any body.
    pub fn report_data(&self) -> &ReportData {
        match self {
            Self::SgxEnclave(r) => &r.report_data,
            Self::Td10(r) => &r.report_data,
            Self::Td15(r) => &r.base.report_data,
            Self::Td15Ex(r) => &r.base.base.report_data,
        }
    }

    /// Serialises the body alone (without a v5 descriptor).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        write_body(&mut out, self);
        out
    }
}

/// Certification data: a type and opaque bytes (type 5: PEM PCK chain, often NUL-terminated).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificationData {
    /// Certification data type (1..=7; 5 = PCK certificate chain).
    pub cert_type: u16,
    /// The data.
    #[serde(with = "hex_vec")]
    pub data: Vec<u8>,
}

impl fmt::Debug for CertificationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificationData").field("cert_type", &self.cert_type).field("len", &self.data.len()).finish()
    }
}

/// The signature data of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteSignatureData {
    /// ECDSA P-256 signature `r ‖ s` over SHA-256 of the signed region, by the attestation key.
    pub signature: P256Raw,
    /// Attestation public key `x ‖ y`.
    pub attestation_key: P256Raw,
    /// The QE report (an SGX report body of the quoting enclave).
    pub qe_report: EnclaveReport,
    /// ECDSA P-256 signature `r ‖ s` of the PCK key over the 384 QE report bytes.
    pub qe_report_signature: P256Raw,
    /// QE authentication data (typically 32 bytes).
    #[serde(with = "hex_vec")]
    pub qe_auth_data: Vec<u8>,
    /// The certification data: for v4/v5 the one inside the type-6 wrapper.
    pub certification: CertificationData,
}

/// A parsed DCAP quote, keeping the signed region exactly as received.
#[derive(Clone, PartialEq, Eq)]
pub struct Quote {
    header: QuoteHeader,
    body: QuoteBody,
    signature: QuoteSignatureData,
    signed: Vec<u8>,
    qe_report_raw: Bytes<ENCLAVE_REPORT_LEN>,
    encoded_len: usize,
    trailing: usize,
}

impl fmt::Debug for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quote")
            .field("header", &self.header)
            .field("body", &self.body)
            .field("signature", &self.signature)
            .field("signed_len", &self.signed.len())
            .field("encoded_len", &self.encoded_len)
            .field("trailing", &self.trailing)
            .finish()
    }
}

impl Quote {
    /// Parses a quote. Bytes after the signature data are ignored (see [`Quote::trailing_len`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(bytes, 0);
        let header = read_header(&mut r)?;
        if header.attestation_key_type != ATTESTATION_KEY_ECDSA_P256 {
            return Err(QuoteError::UnsupportedKeyType(header.attestation_key_type));
        }
        let body = match header.version {
            3 => {
                if header.tee_type != TEE_TYPE_SGX {
                    return Err(QuoteError::UnsupportedTeeType {
                        version: 3,
                        tee_type: header.tee_type,
                        body_type: None,
                    });
                }
                QuoteBody::SgxEnclave(read_enclave_report(&mut r)?)
            }
            4 => match header.tee_type {
                TEE_TYPE_TDX => QuoteBody::Td10(read_td10(&mut r)?),
                TEE_TYPE_SGX => QuoteBody::SgxEnclave(read_enclave_report(&mut r)?),
                t => return Err(QuoteError::UnsupportedTeeType { version: 4, tee_type: t, body_type: None }),
            },
            5 => {
                let body_type = r.u16("body descriptor")?;
                let size = r.u32("body descriptor")?;
                let expected = body_len(body_type).ok_or(QuoteError::UnsupportedBodyType(body_type))?;
                if usize::try_from(size).ok() != Some(expected) {
                    return Err(QuoteError::BodySize { body_type, size, expected });
                }
                let tee_ok = match body_type {
                    BODY_TYPE_SGX => header.tee_type == TEE_TYPE_SGX,
                    _ => header.tee_type == TEE_TYPE_TDX,
                };
                if !tee_ok {
                    return Err(QuoteError::UnsupportedTeeType {
                        version: 5,
                        tee_type: header.tee_type,
                        body_type: Some(body_type),
                    });
                }
                read_body(&mut r, body_type)?
            }
            v => return Err(QuoteError::UnsupportedVersion(v)),
        };
        let signed_len = r.pos;
        let sig_len = r.u32("signature data length")?;
        let sig_len = usize::try_from(sig_len).unwrap_or(usize::MAX);
        let sig_start = r.pos;
        let sig_bytes = r.take(sig_len, "signature data")?;
        let encoded_len = r.pos;
        let (signature, qe_report_raw) = parse_signature_data(sig_bytes, sig_start, header.version)?;
        Ok(Self {
            header,
            body,
            signature,
            signed: bytes[..signed_len].to_vec(),
            qe_report_raw,
            encoded_len,
            trailing: bytes.len() - encoded_len,
        })
    }

    /// Builds a quote from its parts (for the TEE emulator): the signed region and the lengths are
    /// computed from the fields. The caller signs [`Quote::signed_bytes`] and fills in the signatures.
    pub fn new(header: QuoteHeader, body: QuoteBody, signature: QuoteSignatureData) -> Result<Self, QuoteError> {
        let mut signed = Vec::with_capacity(HEADER_LEN + BODY_DESCRIPTOR_LEN + body.len());
        write_header(&mut signed, &header);
        if header.version == 5 {
            let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
            signed.extend_from_slice(&body.body_type().to_le_bytes());
            signed.extend_from_slice(&size.to_le_bytes());
        }
        write_body(&mut signed, &body);
        let qe_report_raw = Bytes::from_slice(&signature.qe_report.to_bytes()).unwrap_or(Bytes::ZERO);
        let quote = Self { header, body, signature, signed, qe_report_raw, encoded_len: 0, trailing: 0 };
        let encoded = quote.to_bytes()?;
        // Check the parts are consistent (version vs body, key type, …) by parsing the encoding.
        let parsed = Self::parse(&encoded)?;
        Ok(parsed)
    }

    /// The header.
    pub fn header(&self) -> &QuoteHeader {
        &self.header
    }

    /// The body.
    pub fn body(&self) -> &QuoteBody {
        &self.body
    }

    /// The signature data.
    pub fn signature_data(&self) -> &QuoteSignatureData {
        &self.signature
    }

    /// The signed region as received: header, v5 body descriptor, body.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The 384 QE report bytes as received (what the PCK key signed).
    pub fn qe_report_bytes(&self) -> &[u8; ENCLAVE_REPORT_LEN] {
        &self.qe_report_raw.0
    }

    /// The TD 1.0 fields of a TDX quote.
    pub fn td10(&self) -> Option<&TdReport10> {
        self.body.td10()
    }

    /// True for a TDX quote.
    pub fn is_tdx(&self) -> bool {
        self.header.tee_type == TEE_TYPE_TDX
    }

    /// Length of the quote proper (up to the end of the signature data).
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// Bytes after the signature data that were ignored.
    pub fn trailing_len(&self) -> usize {
        self.trailing
    }

    /// Serialises the quote (without trailing bytes). For a parsed quote this reproduces the input
    /// up to [`Quote::encoded_len`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, QuoteError> {
        let sig = encode_signature_data(&self.signature, self.header.version)?;
        let sig_len =
            u32::try_from(sig.len()).map_err(|_| QuoteError::TooLong { what: "signature data", len: sig.len() })?;
        let mut out = Vec::with_capacity(self.signed.len() + 4 + sig.len());
        out.extend_from_slice(&self.signed);
        out.extend_from_slice(&sig_len.to_le_bytes());
        out.extend_from_slice(&sig);
        Ok(out)
    }
}

impl QuoteHeader {
    /// Parses exactly 48 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(b, 0);
        let h = read_header(&mut r)?;
        r.finish("quote header")?;
        Ok(h)
    }

    /// The 48-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        write_header(&mut out, self);
        out
    }
}

impl TdReport10 {
    /// Parses exactly 584 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(b, 0);
        let v = read_td10(&mut r)?;
        r.finish("TD report")?;
        Ok(v)
    }

    /// The 584-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TD_REPORT10_LEN);
        write_td10(&mut out, self);
        out
    }
}

/// Encoded length of a v5 body type.
pub fn body_len(body_type: u16) -> Option<usize> {
    match body_type {
        BODY_TYPE_SGX => Some(ENCLAVE_REPORT_LEN),
        BODY_TYPE_TD10 => Some(TD_REPORT10_LEN),
        BODY_TYPE_TD15 => Some(TD_REPORT15_LEN),
        BODY_TYPE_TD15_EX => Some(TD_REPORT15_EX_LEN),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A bounds-checked little-endian reader; `base` is the offset of `bytes` in the whole quote.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self { bytes, pos: 0, base }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], QuoteError> {
        let available = self.bytes.len().saturating_sub(self.pos);
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(QuoteError::Truncated { offset: self.base + self.pos, what, need: n, available }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], QuoteError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<Bytes<N>, QuoteError> {
        self.array(what).map(Bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, QuoteError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn finish(&self, what: &'static str) -> Result<(), QuoteError> {
        match self.bytes.len().saturating_sub(self.pos) {
            0 => Ok(()),
            unused => Err(QuoteError::UnusedBytes { what, unused }),
        }
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<QuoteHeader, QuoteError> {
    const W: &str = "quote header";
    // Check the whole header is there first, so a short input reports the header, not a field.
    let mut h = Reader::new(r.take(HEADER_LEN, W)?, r.base);
    Ok(QuoteHeader {
        version: h.u16(W)?,
        attestation_key_type: h.u16(W)?,
        tee_type: h.u32(W)?,
        qe_svn: h.u16(W)?,
        pce_svn: h.u16(W)?,
        qe_vendor_id: h.bytes(W)?,
        user_data: h.bytes(W)?,
    })
}

fn read_td10(r: &mut Reader<'_>) -> Result<TdReport10, QuoteError> {
    const W: &str = "TD report body";
    let base = r.base + r.pos;
    let mut b = Reader::new(r.take(TD_REPORT10_LEN, W)?, base);
    Ok(TdReport10 {
        tee_tcb_svn: b.bytes(W)?,
        mr_seam: b.bytes(W)?,
        mr_signer_seam: b.bytes(W)?,
        seam_attributes: b.bytes(W)?,
        td_attributes: TdAttributes(b.bytes(W)?),
        xfam: b.bytes(W)?,
        mr_td: b.bytes(W)?,
        mr_config_id: b.bytes(W)?,
        mr_owner: b.bytes(W)?,
        mr_owner_config: b.bytes(W)?,
        rtmr: [b.bytes(W)?, b.bytes(W)?, b.bytes(W)?, b.bytes(W)?],
        report_data: b.bytes(W)?,
    })
}

fn read_td15(r: &mut Reader<'_>) -> Result<TdReport15, QuoteError> {
    const W: &str = "TD 1.5 report body";
    let need = TD_REPORT15_LEN;
    let available = r.bytes.len().saturating_sub(r.pos);
    if available < need {
        return Err(QuoteError::Truncated { offset: r.base + r.pos, what: W, need, available });
    }
    Ok(TdReport15 { base: read_td10(r)?, tee_tcb_svn2: r.bytes(W)?, mr_service_td: r.bytes(W)? })
}

fn read_td15ex(r: &mut Reader<'_>) -> Result<TdReport15Ex, QuoteError> {
    const W: &str = "TD 1.5 extended report body";
    let need = TD_REPORT15_EX_LEN;
    let available = r.bytes.len().saturating_sub(r.pos);
    if available < need {
        return Err(QuoteError::Truncated { offset: r.base + r.pos, what: W, need, available });
    }
    Ok(TdReport15Ex {
        base: read_td15(r)?,
        vm_id: r.u8(W)?,
        td_id: r.bytes(W)?,
        dev_info_hash: r.bytes(W)?,
        init_service_td_hash: r.bytes(W)?,
        init_service_td_attributes: r.bytes(W)?,
        init_cpu_svn: r.bytes(W)?,
        init_tee_tcb_svn: r.bytes(W)?,
        init_fmspc: r.bytes(W)?,
        cur_service_td_hash: r.bytes(W)?,
        cur_service_td_attributes: r.bytes(W)?,
    })
}

fn read_enclave_report(r: &mut Reader<'_>) -> Result<EnclaveReport, QuoteError> {
    const W: &str = "enclave report";
    let base = r.base + r.pos;
    let mut b = Reader::new(r.take(ENCLAVE_REPORT_LEN, W)?, base);
    Ok(EnclaveReport {
        cpu_svn: b.bytes(W)?,
        misc_select: b.u32(W)?,
        reserved1: b.bytes(W)?,
        attributes: b.bytes(W)?,
        mr_enclave: b.bytes(W)?,
        reserved2: b.bytes(W)?,
        mr_signer: b.bytes(W)?,
        reserved3: b.bytes(W)?,
        isv_prod_id: b.u16(W)?,
        isv_svn: b.u16(W)?,
        reserved4: b.bytes(W)?,
        report_data: b.bytes(W)?,
    })
}

fn read_body(r: &mut Reader<'_>, body_type: u16) -> Result<QuoteBody, QuoteError> {
    Ok(match body_type {
        BODY_TYPE_SGX => QuoteBody::SgxEnclave(read_enclave_report(r)?),
        BODY_TYPE_TD10 => QuoteBody::Td10(read_td10(r)?),
        BODY_TYPE_TD15 => QuoteBody::Td15(read_td15(r)?),
        BODY_TYPE_TD15_EX => QuoteBody::Td15Ex(read_td15ex(r)?),
        t => return Err(QuoteError::UnsupportedBodyType(t)),
    })
}

/// Reads QE report, its signature, QE auth data and certification data.
fn read_qe_part(
    r: &mut Reader<'_>,
) -> Result<(EnclaveReport, Bytes<ENCLAVE_REPORT_LEN>, P256Raw, Vec<u8>, CertificationData), QuoteError> {
    let raw: Bytes<ENCLAVE_REPORT_LEN> = r.bytes("QE report")?;
    let qe_report = EnclaveReport::from_bytes(&raw.0)?;
    let qe_sig = r.bytes("QE report signature")?;
    let auth_len = usize::from(r.u16("QE authentication data size")?);
    let auth = r.take(auth_len, "QE authentication data")?.to_vec();
    let cert_type = r.u16("certification data type")?;
    let cert_len = usize::try_from(r.u32("certification data size")?).unwrap_or(usize::MAX);
    let data = r.take(cert_len, "certification data")?.to_vec();
    Ok((qe_report, raw, qe_sig, auth, CertificationData { cert_type, data }))
}

fn parse_signature_data(
    bytes: &[u8],
    base: usize,
    version: u16,
) -> Result<(QuoteSignatureData, Bytes<ENCLAVE_REPORT_LEN>), QuoteError> {
    let mut r = Reader::new(bytes, base);
    let signature = r.bytes("quote signature")?;
    let attestation_key = r.bytes("attestation key")?;
    let (qe_report, raw, qe_report_signature, qe_auth_data, certification) = if version == 3 {
        read_qe_part(&mut r)?
    } else {
        let outer_type = r.u16("certification data type")?;
        if outer_type != CERT_DATA_QE_REPORT {
            return Err(QuoteError::CertificationDataType { expected: CERT_DATA_QE_REPORT, found: outer_type });
        }
        let outer_len = usize::try_from(r.u32("certification data size")?).unwrap_or(usize::MAX);
        let inner_base = r.base + r.pos;
        let mut inner = Reader::new(r.take(outer_len, "QE report certification data")?, inner_base);
        let part = read_qe_part(&mut inner)?;
        inner.finish("QE report certification data")?;
        part
    };
    r.finish("signature data")?;
    Ok((
        QuoteSignatureData { signature, attestation_key, qe_report, qe_report_signature, qe_auth_data, certification },
        raw,
    ))
}

// ---------------------------------------------------------------------------------------------
// Writing

fn write_header(out: &mut Vec<u8>, h: &QuoteHeader) {
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&h.attestation_key_type.to_le_bytes());
    out.extend_from_slice(&h.tee_type.to_le_bytes());
    out.extend_from_slice(&h.qe_svn.to_le_bytes());
    out.extend_from_slice(&h.pce_svn.to_le_bytes());
    out.extend_from_slice(&h.qe_vendor_id.0);
    out.extend_from_slice(&h.user_data.0);
}

fn write_td10(out: &mut Vec<u8>, b: &TdReport10) {
    out.extend_from_slice(&b.tee_tcb_svn.0);
    out.extend_from_slice(&b.mr_seam.0);
    out.extend_from_slice(&b.mr_signer_seam.0);
    out.extend_from_slice(&b.seam_attributes.0);
    out.extend_from_slice(&b.td_attributes.0.0);
    out.extend_from_slice(&b.xfam.0);
    out.extend_from_slice(&b.mr_td.0);
    out.extend_from_slice(&b.mr_config_id.0);
    out.extend_from_slice(&b.mr_owner.0);
    out.extend_from_slice(&b.mr_owner_config.0);
    for r in &b.rtmr {
        out.extend_from_slice(&r.0);
    }
    out.extend_from_slice(&b.report_data.0);
}

fn write_td15(out: &mut Vec<u8>, b: &TdReport15) {
    write_td10(out, &b.base);
    out.extend_from_slice(&b.tee_tcb_svn2.0);
    out.extend_from_slice(&b.mr_service_td.0);
}

fn write_td15ex(out: &mut Vec<u8>, b: &TdReport15Ex) {
    write_td15(out, &b.base);
    out.push(b.vm_id);
    out.extend_from_slice(&b.td_id.0);
    out.extend_from_slice(&b.dev_info_hash.0);
    out.extend_from_slice(&b.init_service_td_hash.0);
    out.extend_from_slice(&b.init_service_td_attributes.0);
    out.extend_from_slice(&b.init_cpu_svn.0);
    out.extend_from_slice(&b.init_tee_tcb_svn.0);
    out.extend_from_slice(&b.init_fmspc.0);
    out.extend_from_slice(&b.cur_service_td_hash.0);
    out.extend_from_slice(&b.cur_service_td_attributes.0);
}

fn write_enclave_report(out: &mut Vec<u8>, b: &EnclaveReport) {
    out.extend_from_slice(&b.cpu_svn.0);
    out.extend_from_slice(&b.misc_select.to_le_bytes());
    out.extend_from_slice(&b.reserved1.0);
    out.extend_from_slice(&b.attributes.0);
    out.extend_from_slice(&b.mr_enclave.0);
    out.extend_from_slice(&b.reserved2.0);
    out.extend_from_slice(&b.mr_signer.0);
    out.extend_from_slice(&b.reserved3.0);
    out.extend_from_slice(&b.isv_prod_id.to_le_bytes());
    out.extend_from_slice(&b.isv_svn.to_le_bytes());
    out.extend_from_slice(&b.reserved4.0);
    out.extend_from_slice(&b.report_data.0);
}

fn write_body(out: &mut Vec<u8>, body: &QuoteBody) {
    match body {
        QuoteBody::SgxEnclave(b) => write_enclave_report(out, b),
        QuoteBody::Td10(b) => write_td10(out, b),
        QuoteBody::Td15(b) => write_td15(out, b),
        QuoteBody::Td15Ex(b) => write_td15ex(out, b),
    }
}

fn encode_signature_data(s: &QuoteSignatureData, version: u16) -> Result<Vec<u8>, QuoteError> {
    let auth_len = u16::try_from(s.qe_auth_data.len())
        .map_err(|_| QuoteError::TooLong { what: "QE authentication data", len: s.qe_auth_data.len() })?;
    let cert_len = u32::try_from(s.certification.data.len())
        .map_err(|_| QuoteError::TooLong { what: "certification data", len: s.certification.data.len() })?;
    let mut qe =
        Vec::with_capacity(ENCLAVE_REPORT_LEN + P256_LEN + 8 + s.qe_auth_data.len() + s.certification.data.len());
    write_enclave_report(&mut qe, &s.qe_report);
    qe.extend_from_slice(&s.qe_report_signature.0);
    qe.extend_from_slice(&auth_len.to_le_bytes());
    qe.extend_from_slice(&s.qe_auth_data);
    qe.extend_from_slice(&s.certification.cert_type.to_le_bytes());
    qe.extend_from_slice(&cert_len.to_le_bytes());
    qe.extend_from_slice(&s.certification.data);
    let mut out = Vec::with_capacity(2 * P256_LEN + 6 + qe.len());
    out.extend_from_slice(&s.signature.0);
    out.extend_from_slice(&s.attestation_key.0);
    if version == 3 {
        out.extend_from_slice(&qe);
    } else {
        let qe_len = u32::try_from(qe.len())
            .map_err(|_| QuoteError::TooLong { what: "QE report certification data", len: qe.len() })?;
        out.extend_from_slice(&CERT_DATA_QE_REPORT.to_le_bytes());
        out.extend_from_slice(&qe_len.to_le_bytes());
        out.extend_from_slice(&qe);
    }
    Ok(out)
}

/// Serde helper: `Vec<u8>` as a hex string.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_td_attribute_bits() {
        let defined = [0u32, 4, 5, 6, 16, 17, 18, 19, 20, 21, 22, 27, 28, 29, 30, 31, 62, 63];
        for bit in 0..64 {
            let reserved = TdAttributes::RESERVED & (1u64 << bit) != 0;
            assert_eq!(reserved, !defined.contains(&bit), "bit {bit}");
        }
    }

    #[test]
    fn short_inputs_are_truncated_errors() {
        for n in 0..HEADER_LEN {
            assert!(matches!(Quote::parse(&vec![0u8; n]), Err(QuoteError::Truncated { .. })));
        }
    }
}
