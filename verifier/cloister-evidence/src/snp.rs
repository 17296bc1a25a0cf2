//! AMD SEV-SNP attestation report (ATTESTATION_REPORT, 1184 bytes): parse and serialise.
//!
//! [`AttestationReport::from_bytes`] decodes report versions 2, 3, 4 (laid out like 3) and 5 into
//! [`ReportFields`] and **keeps the received bytes**: the signature must be checked over
//! [`AttestationReport::signed_bytes`] (bytes `0x000..0x2A0` exactly as received), never over a
//! re-serialisation. [`ReportFields::to_bytes`] builds the byte layout (for the TEE emulator).
//!
//! **What it trusts:** nothing. The input is untrusted bytes; parsing checks the length, version,
//! signature algorithm and (by default) that every reserved byte is zero, reports any failure as a
//! typed [`SnpReportError`] and never panics. Parsing does no cryptography: a parsed report is
//! what the bytes claim, not proof that a processor produced them.
//!
//! Strictness (a decision, see [`AttestationReport::from_bytes`]): reserved fields inside the
//! signed area, the CPUID bytes of a version-2 report, the mitigation vectors before version 5, and
//! the unused signature bytes (R/S bytes 48..72 and 0x330..0x4A0) must be zero. AMD firmware writes
//! zeros there; the bytes after 0x2A0 are not signed, so rejecting non-zero values there removes a
//! way to alter a report without breaking its signature. Bit fields (POLICY, PLATFORM_INFO,
//! KEY_INFO) are kept as integers and not checked here: that is policy.
//! [`AttestationReport::from_bytes_lenient`] skips the reserved-byte checks.

pub mod cert_table;
pub mod sev_json;
mod types;

use serde::{Deserialize, Serialize};

pub use types::{
    ChipId, Cpuid, FamilyId, FirmwareVersion, GuestPolicy, HostData, ImageId, KeyDigest, KeyInfo, Measurement,
    PlatformInfo, Product, ReportData, ReportId, ReportSignature, SigningKey, TcbLayout, TcbParts, TcbVersion,
    UnknownProduct,
};

/// Size of an attestation report in bytes (0x4A0).
pub const REPORT_SIZE: usize = 0x4A0;

/// Length of the signed part of the report: bytes `0x000..0x2A0`.
pub const SIGNED_LEN: usize = 0x2A0;

/// The only defined SIGNATURE_ALGO: ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Report versions this parser accepts.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// Why bytes are not an acceptable SEV-SNP attestation report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpReportError {
    /// The input is not exactly 1184 bytes.
    #[error("SNP report is {actual} bytes, expected exactly {REPORT_SIZE}")]
    WrongLength {
        /// Length received.
        actual: usize,
    },
    /// VERSION is not 2, 3, 4 or 5.
    #[error("SNP report version {0} is not supported (2 to 5 are)")]
    UnsupportedVersion(u32),
    /// SIGNATURE_ALGO is not 1 (ECDSA P-384 with SHA-384).
    #[error("SNP report signature algorithm {0} is not ECDSA P-384/SHA-384 (1)")]
    UnsupportedSignatureAlgorithm(u32),
    /// A reserved field (or one not defined for this version) is not zero.
    #[error("SNP report v{version}: reserved field {field} at {offset:#05x} is not zero")]
    ReservedNotZero {
        /// Name of the field.
        field: &'static str,
        /// Offset of the field in the report.
        offset: usize,
        /// Report version.
        version: u32,
    },
}

/// The decoded fields of an attestation report. Build one and call [`ReportFields::to_bytes`] to
/// produce the byte layout; parse bytes with [`AttestationReport::from_bytes`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFields {
    /// VERSION (0x000).
    pub version: u32,
    /// GUEST_SVN (0x004).
    pub guest_svn: u32,
    /// POLICY (0x008).
    pub policy: GuestPolicy,
    /// FAMILY_ID (0x010).
    pub family_id: FamilyId,
    /// IMAGE_ID (0x020).
    pub image_id: ImageId,
    /// VMPL (0x030).
    pub vmpl: u32,
    /// SIGNATURE_ALGO (0x034).
    pub signature_algo: u32,
    /// CURRENT_TCB (0x038).
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO (0x040).
    pub platform_info: PlatformInfo,
    /// KEY_INFO (0x048): author key enable, chip key masking, signing key.
    pub key_info: KeyInfo,
    /// REPORT_DATA (0x050).
    pub report_data: ReportData,
    /// MEASUREMENT (0x090).
    pub measurement: Measurement,
    /// HOST_DATA (0x0C0).
    pub host_data: HostData,
    /// ID_KEY_DIGEST (0x0E0).
    pub id_key_digest: KeyDigest,
    /// AUTHOR_KEY_DIGEST (0x110).
    pub author_key_digest: KeyDigest,
    /// REPORT_ID (0x140).
    pub report_id: ReportId,
    /// REPORT_ID_MA (0x160).
    pub report_id_ma: ReportId,
    /// REPORTED_TCB (0x180): the TCB the VCEK/VLEK was derived for.
    pub reported_tcb: TcbVersion,
    /// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (0x188): `Some` for version 3 and later only.
    pub cpuid: Option<Cpuid>,
    /// CHIP_ID (0x1A0).
    pub chip_id: ChipId,
    /// COMMITTED_TCB (0x1E0).
    pub committed_tcb: TcbVersion,
    /// CURRENT_BUILD/MINOR/MAJOR (0x1E8).
    pub current_version: FirmwareVersion,
    /// COMMITTED_BUILD/MINOR/MAJOR (0x1EC).
    pub committed_version: FirmwareVersion,
    /// LAUNCH_TCB (0x1F0).
    pub launch_tcb: TcbVersion,
    /// LAUNCH_MIT_VECTOR (0x1F8): `Some` for version 5 and later only.
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (0x200): `Some` for version 5 and later only.
    pub current_mit_vector: Option<u64>,
    /// SIGNATURE (0x2A0): R and S.
    pub signature: ReportSignature,
}

// Field offsets (AMD SEV-SNP firmware ABI, ATTESTATION_REPORT).
const OFF_VERSION: usize = 0x000;
const OFF_GUEST_SVN: usize = 0x004;
const OFF_POLICY: usize = 0x008;
const OFF_FAMILY_ID: usize = 0x010;
const OFF_IMAGE_ID: usize = 0x020;
const OFF_VMPL: usize = 0x030;
const OFF_SIG_ALGO: usize = 0x034;
const OFF_CURRENT_TCB: usize = 0x038;
const OFF_PLATFORM_INFO: usize = 0x040;
const OFF_KEY_INFO: usize = 0x048;
const OFF_REPORT_DATA: usize = 0x050;
const OFF_MEASUREMENT: usize = 0x090;
const OFF_HOST_DATA: usize = 0x0C0;
const OFF_ID_KEY_DIGEST: usize = 0x0E0;
const OFF_AUTHOR_KEY_DIGEST: usize = 0x110;
const OFF_REPORT_ID: usize = 0x140;
const OFF_REPORT_ID_MA: usize = 0x160;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID: usize = 0x188;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_CURRENT_VERSION: usize = 0x1E8;
const OFF_COMMITTED_VERSION: usize = 0x1EC;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_LAUNCH_MIT: usize = 0x1F8;
const OFF_CURRENT_MIT: usize = 0x200;
const OFF_SIG_R: usize = 0x2A0;
const OFF_SIG_S: usize = 0x2E8;
const OFF_SIG_REST: usize = 0x330;

/// Reserved ranges that must be zero in every version: (name, start, end).
const RESERVED_ALWAYS: [(&str, usize, usize); 8] = [
    ("reserved (0x04C)", 0x04C, 0x050),
    ("reserved (0x18B)", 0x18B, 0x1A0),
    ("reserved (0x1EB)", 0x1EB, 0x1EC),
    ("reserved (0x1EF)", 0x1EF, 0x1F0),
    ("reserved (0x208)", 0x208, SIGNED_LEN),
    ("signature R bytes 48..72", OFF_SIG_R + 48, OFF_SIG_R + 72),
    ("signature S bytes 48..72", OFF_SIG_S + 48, OFF_SIG_S + 72),
    ("signature reserved (0x330)", OFF_SIG_REST, REPORT_SIZE),
];

fn array_at<const N: usize>(b: &[u8; REPORT_SIZE], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

fn u32_at(b: &[u8; REPORT_SIZE], off: usize) -> u32 {
    u32::from_le_bytes(array_at(b, off))
}

fn u64_at(b: &[u8; REPORT_SIZE], off: usize) -> u64 {
    u64::from_le_bytes(array_at(b, off))
}

fn version_at(b: &[u8; REPORT_SIZE], off: usize) -> FirmwareVersion {
    FirmwareVersion { build: b[off], minor: b[off + 1], major: b[off + 2] }
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

impl ReportFields {
    /// Serialises into the 1184-byte layout. Reserved bytes are zero; the CPUID bytes are written
    /// only when [`ReportFields::cpuid`] is `Some`, the mitigation vectors only when `Some`. The
    /// result parses back to `self` when the fields are consistent with the version (CPUID for
    /// version ≥ 3, mitigation vectors for version ≥ 5) and SIGNATURE_ALGO is 1.
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        let mut b = [0u8; REPORT_SIZE];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(OFF_VERSION, &self.version.to_le_bytes());
        put(OFF_GUEST_SVN, &self.guest_svn.to_le_bytes());
        put(OFF_POLICY, &self.policy.0.to_le_bytes());
        put(OFF_FAMILY_ID, &self.family_id.0);
        put(OFF_IMAGE_ID, &self.image_id.0);
        put(OFF_VMPL, &self.vmpl.to_le_bytes());
        put(OFF_SIG_ALGO, &self.signature_algo.to_le_bytes());
        put(OFF_CURRENT_TCB, &self.current_tcb.0);
        put(OFF_PLATFORM_INFO, &self.platform_info.0.to_le_bytes());
        put(OFF_KEY_INFO, &self.key_info.0.to_le_bytes());
        put(OFF_REPORT_DATA, &self.report_data.0);
        put(OFF_MEASUREMENT, &self.measurement.0);
        put(OFF_HOST_DATA, &self.host_data.0);
        put(OFF_ID_KEY_DIGEST, &self.id_key_digest.0);
        put(OFF_AUTHOR_KEY_DIGEST, &self.author_key_digest.0);
        put(OFF_REPORT_ID, &self.report_id.0);
        put(OFF_REPORT_ID_MA, &self.report_id_ma.0);
        put(OFF_REPORTED_TCB, &self.reported_tcb.0);
        if let Some(c) = self.cpuid {
            put(OFF_CPUID, &[c.family, c.model, c.stepping]);
        }
        put(OFF_CHIP_ID, &self.chip_id.0);
        put(OFF_COMMITTED_TCB, &self.committed_tcb.0);
        let v = self.current_version;
        put(OFF_CURRENT_VERSION, &[v.build, v.minor, v.major]);
        let v = self.committed_version;
        put(OFF_COMMITTED_VERSION, &[v.build, v.minor, v.major]);
        put(OFF_LAUNCH_TCB, &self.launch_tcb.0);
        if let Some(m) = self.launch_mit_vector {
            put(OFF_LAUNCH_MIT, &m.to_le_bytes());
        }
        if let Some(m) = self.current_mit_vector {
            put(OFF_CURRENT_MIT, &m.to_le_bytes());
        }
        put(OFF_SIG_R, &self.signature.r);
        put(OFF_SIG_S, &self.signature.s);
        b
    }

    /// The product named by CPUID (version 3 and later), `None` for version 2 or an unknown CPU.
    pub fn cpuid_product(&self) -> Option<Product> {
        self.cpuid.and_then(Cpuid::product)
    }

    /// The REPORTED_TCB components for a product.
    pub fn reported_tcb_parts(&self, product: Product) -> TcbParts {
        self.reported_tcb.parts(product.tcb_layout())
    }
}

/// A parsed attestation report together with the exact bytes it was parsed from.
///
/// Dereferences to [`ReportFields`] for field access.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationReport {
    fields: ReportFields,
    raw: Box<[u8; REPORT_SIZE]>,
}

impl std::fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields.fmt(f)
    }
}

impl std::ops::Deref for AttestationReport {
    type Target = ReportFields;
    fn deref(&self) -> &ReportFields {
        &self.fields
    }
}

impl AttestationReport {
    /// Parses a report strictly: exactly 1184 bytes, VERSION 2–5, SIGNATURE_ALGO 1, and every
    /// reserved byte zero (see the module documentation for the list).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnpReportError> {
        Self::parse(bytes, true)
    }

    /// Like [`AttestationReport::from_bytes`] but tolerates non-zero reserved bytes (they stay in
    /// [`AttestationReport::raw`] and are covered by the signature when inside `0..0x2A0`).
    pub fn from_bytes_lenient(bytes: &[u8]) -> Result<Self, SnpReportError> {
        Self::parse(bytes, false)
    }

    /// Serialises `fields` and parses the result strictly (for building reports, e.g. in an
    /// emulator): fails when the fields are inconsistent with their version.
    pub fn from_fields(fields: &ReportFields) -> Result<Self, SnpReportError> {
        Self::from_bytes(&fields.to_bytes())
    }

    fn parse(bytes: &[u8], strict: bool) -> Result<Self, SnpReportError> {
        let raw: &[u8; REPORT_SIZE] =
            bytes.try_into().map_err(|_| SnpReportError::WrongLength { actual: bytes.len() })?;
        let version = u32_at(raw, OFF_VERSION);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(SnpReportError::UnsupportedVersion(version));
        }
        let signature_algo = u32_at(raw, OFF_SIG_ALGO);
        if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(SnpReportError::UnsupportedSignatureAlgorithm(signature_algo));
        }
        if strict {
            let reserved = |field: &'static str, offset: usize, end: usize| {
                if all_zero(&raw[offset..end]) {
                    Ok(())
                } else {
                    Err(SnpReportError::ReservedNotZero { field, offset, version })
                }
            };
            for (field, start, end) in RESERVED_ALWAYS {
                reserved(field, start, end)?;
            }
            if version < 3 {
                reserved("CPUID (before v3)", OFF_CPUID, OFF_CPUID + 3)?;
            }
            if version < 5 {
                reserved("mitigation vectors (before v5)", OFF_LAUNCH_MIT, OFF_CURRENT_MIT + 8)?;
            }
        }
        let cpuid = (version >= 3).then(|| Cpuid {
            family: raw[OFF_CPUID],
            model: raw[OFF_CPUID + 1],
            stepping: raw[OFF_CPUID + 2],
        });
        let v5 = version >= 5;
        let fields = ReportFields {
            version,
            guest_svn: u32_at(raw, OFF_GUEST_SVN),
            policy: GuestPolicy(u64_at(raw, OFF_POLICY)),
            family_id: FamilyId(array_at(raw, OFF_FAMILY_ID)),
            image_id: ImageId(array_at(raw, OFF_IMAGE_ID)),
            vmpl: u32_at(raw, OFF_VMPL),
            signature_algo,
            current_tcb: TcbVersion(array_at(raw, OFF_CURRENT_TCB)),
            platform_info: PlatformInfo(u64_at(raw, OFF_PLATFORM_INFO)),
            key_info: KeyInfo(u32_at(raw, OFF_KEY_INFO)),
            report_data: ReportData(array_at(raw, OFF_REPORT_DATA)),
            measurement: Measurement(array_at(raw, OFF_MEASUREMENT)),
            host_data: HostData(array_at(raw, OFF_HOST_DATA)),
            id_key_digest: KeyDigest(array_at(raw, OFF_ID_KEY_DIGEST)),
            author_key_digest: KeyDigest(array_at(raw, OFF_AUTHOR_KEY_DIGEST)),
            report_id: ReportId(array_at(raw, OFF_REPORT_ID)),
            report_id_ma: ReportId(array_at(raw, OFF_REPORT_ID_MA)),
            reported_tcb: TcbVersion(array_at(raw, OFF_REPORTED_TCB)),
            cpuid,
            chip_id: ChipId(array_at(raw, OFF_CHIP_ID)),
            committed_tcb: TcbVersion(array_at(raw, OFF_COMMITTED_TCB)),
            current_version: version_at(raw, OFF_CURRENT_VERSION),
            committed_version: version_at(raw, OFF_COMMITTED_VERSION),
            launch_tcb: TcbVersion(array_at(raw, OFF_LAUNCH_TCB)),
            launch_mit_vector: v5.then(|| u64_at(raw, OFF_LAUNCH_MIT)),
            current_mit_vector: v5.then(|| u64_at(raw, OFF_CURRENT_MIT)),
            signature: ReportSignature { r: array_at(raw, OFF_SIG_R), s: array_at(raw, OFF_SIG_S) },
        };
        Ok(Self { fields, raw: Box::new(*raw) })
    }

    /// The decoded fields.
    pub fn fields(&self) -> &ReportFields {
        &self.fields
    }

    /// The 1184 bytes exactly as received.
    pub fn raw(&self) -> &[u8; REPORT_SIZE] {
        &self.raw
    }

    /// The signed bytes `0x000..0x2A0` exactly as received: what the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// Re-serialises the decoded fields. Equal to [`AttestationReport::raw`] for a report accepted
    /// by the strict parser; never use it to check the signature.
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        self.fields.to_bytes()
    }

    /// Consumes the report, returning its fields.
    pub fn into_fields(self) -> ReportFields {
        self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReportFields {
        ReportFields {
            version: 3,
            signature_algo: 1,
            policy: GuestPolicy(0x30000),
            cpuid: Some(Cpuid { family: 0x19, model: 0x11, stepping: 1 }),
            reported_tcb: TcbVersion::from_parts(
                TcbLayout::MilanGenoa,
                TcbParts { fmc: None, bootloader: 3, tee: 0, snp: 8, microcode: 115 },
            ),
            current_version: FirmwareVersion { major: 1, minor: 55, build: 40 },
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_offsets() {
        let f = sample();
        let b = f.to_bytes();
        assert_eq!(&b[0x180..0x188], &[3, 0, 0, 0, 0, 0, 8, 0x73]);
        assert_eq!(&b[0x188..0x18B], &[0x19, 0x11, 1]);
        assert_eq!(&b[0x1E8..0x1EB], &[40, 55, 1]);
        let r = AttestationReport::from_bytes(&b).unwrap();
        assert_eq!(r.fields(), &f);
        assert_eq!(r.raw(), &b);
        assert_eq!(r.cpuid_product(), Some(Product::Genoa));
    }

    #[test]
    fn strictness() {
        let mut f = sample();
        f.version = 2;
        // v2 with CPUID bytes present: reserved before v3.
        let b = f.to_bytes();
        assert!(matches!(AttestationReport::from_bytes(&b), Err(SnpReportError::ReservedNotZero { .. })));
        let lenient = AttestationReport::from_bytes_lenient(&b).unwrap();
        assert_eq!(lenient.cpuid, None);
        let mut b = sample().to_bytes();
        b[0x4A0 - 1] = 1;
        assert!(matches!(
            AttestationReport::from_bytes(&b),
            Err(SnpReportError::ReservedNotZero { offset: 0x330, .. })
        ));
        let mut b = sample().to_bytes();
        b[0x34] = 2;
        assert_eq!(AttestationReport::from_bytes(&b), Err(SnpReportError::UnsupportedSignatureAlgorithm(2)));
        let mut b = sample().to_bytes();
        b[0] = 6;
        assert_eq!(AttestationReport::from_bytes(&b), Err(SnpReportError::UnsupportedVersion(6)));
        assert_eq!(AttestationReport::from_bytes(&b[..100]), Err(SnpReportError::WrongLength { actual: 100 }));
    }

    #[test]
    fn tcb_layouts() {
        let t = TcbVersion([1, 2, 3, 4, 0, 0, 0, 9]);
        assert_eq!(t.parts(TcbLayout::Turin), TcbParts { fmc: Some(1), bootloader: 2, tee: 3, snp: 4, microcode: 9 });
        assert_eq!(TcbVersion::from_parts(TcbLayout::Turin, t.parts(TcbLayout::Turin)), t);
        assert!(!t.reserved_is_zero(TcbLayout::MilanGenoa));
        assert!(t.reserved_is_zero(TcbLayout::Turin));
        let m = TcbVersion::from_u64(0x7308_0000_0000_0003);
        assert_eq!(m.to_hex(), "0300000000000873");
        assert_eq!(m.parts(TcbLayout::MilanGenoa).microcode, 115);
    }

    #[test]
    fn signature_conversion() {
        let mut fixed = [0u8; 96];
        for (i, b) in fixed.iter_mut().enumerate() {
            *b = i as u8;
        }
        let s = ReportSignature::from_p384_fixed(&fixed);
        assert_eq!(s.r[0], 47);
        assert_eq!(s.s[0], 95);
        assert_eq!(s.to_p384_fixed(), Some(fixed));
        let mut t = s;
        t.r[50] = 1;
        assert_eq!(t.to_p384_fixed(), None);
    }

    #[test]
    fn key_info_and_products() {
        let k = KeyInfo::new(true, false, SigningKey::Vlek);
        assert_eq!(k.0, 0b101);
        assert_eq!(k.signing_key(), SigningKey::Vlek);
        assert_eq!(KeyInfo(7 << 2).signing_key(), SigningKey::None);
        assert_eq!(KeyInfo(3 << 2).signing_key(), SigningKey::Reserved(3));
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x1A, 0x50), None);
        assert_eq!("genoa".parse::<Product>(), Ok(Product::Genoa));
        assert!("Venice".parse::<Product>().is_err());
    }
}
