//! Value types of the SEV-SNP attestation report: fixed-size byte fields, the TCB version with its
//! two per-product layouts, guest policy, platform and key information bits, the processor product.
//!
//! **What it trusts:** nothing; these are plain values. Interpreting a TCB version needs the
//! product, which the caller must know (from CPUID or from the certificate chain), never guess.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serialises a byte array as lowercase hex and parses it back, for the fixed-size fields.
macro_rules! byte_field {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the field in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex of the bytes, in stored order.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly `2 × LEN` hex digits.
            pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }

            /// True when every byte is zero (an absent or masked value).
            pub fn is_zero(&self) -> bool {
                self.0.iter().all(|b| *b == 0)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self([0u8; $len])
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = std::array::TryFromSliceError;
            fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
                Ok(Self(<[u8; $len]>::try_from(bytes)?))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

byte_field!(
    /// FAMILY_ID (16 bytes) from the guest's ID block.
    FamilyId,
    16
);
byte_field!(
    /// IMAGE_ID (16 bytes) from the guest's ID block.
    ImageId,
    16
);
byte_field!(
    /// REPORT_DATA (64 bytes) supplied by the guest when it asked for the report.
    ReportData,
    64
);
byte_field!(
    /// MEASUREMENT (48 bytes): the SHA-384 launch digest.
    Measurement,
    48
);
byte_field!(
    /// HOST_DATA (32 bytes) supplied by the host at launch (CoCo: the init-data digest).
    HostData,
    32
);
byte_field!(
    /// A SHA-384 key digest (48 bytes): ID_KEY_DIGEST or AUTHOR_KEY_DIGEST.
    KeyDigest,
    48
);
byte_field!(
    /// REPORT_ID or REPORT_ID_MA (32 bytes).
    ReportId,
    32
);
byte_field!(
    /// CHIP_ID (64 bytes): the chip's unique id, equal to the VCEK hwID (Turin: first 8 bytes).
    ChipId,
    64
);

/// AMD EPYC product (processor generation), which selects the root of trust, the KDS path and the
/// TCB_VERSION layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    /// EPYC 7003 (family 0x19, models 0x00–0x0F).
    Milan,
    /// EPYC 9004/8004 and Bergamo/Siena (family 0x19, models 0x10–0x1F and 0xA0–0xAF).
    Genoa,
    /// EPYC 9005 (family 0x1A, models 0x00–0x11).
    Turin,
}

impl Product {
    /// Every product with public AMD roots.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name used by AMD KDS and in certificate names: `Milan`, `Genoa`, `Turin`.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product of a CPUID family/model (extended family + family, extended model + model), or
    /// `None` for a processor without public roots (e.g. Venice) or an unknown one.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// The TCB_VERSION layout this product uses.
    pub fn tcb_layout(self) -> TcbLayout {
        match self {
            Product::Milan | Product::Genoa => TcbLayout::MilanGenoa,
            Product::Turin => TcbLayout::Turin,
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Product::from_str`]: the name is not one of `Milan`, `Genoa`, `Turin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown AMD product {0:?} (expected Milan, Genoa or Turin)")]
pub struct UnknownProduct(pub String);

impl FromStr for Product {
    type Err = UnknownProduct;
    /// Case-insensitive product name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Product::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownProduct(s.to_string()))
    }
}

impl Serialize for Product {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Product {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the 8 bytes of a TCB_VERSION are assigned to components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode; bytes 2–5 reserved.
    MilanGenoa,
    /// Turin and later: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 7 microcode; bytes 4–6 reserved.
    Turin,
}

/// The security patch levels of a TCB_VERSION, decoded with a [`TcbLayout`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcbParts {
    /// FMC (Turin and later only).
    pub fmc: Option<u8>,
    /// ASP boot loader SVN.
    pub bootloader: u8,
    /// ASP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
}

/// A TCB_VERSION (8 bytes as stored). Its meaning depends on the product: see [`TcbLayout`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcbVersion(pub [u8; 8]);

impl TcbVersion {
    /// The stored bytes as a little-endian integer.
    pub fn as_u64(self) -> u64 {
        u64::from_le_bytes(self.0)
    }

    /// From the little-endian integer form.
    pub fn from_u64(v: u64) -> Self {
        Self(v.to_le_bytes())
    }

    /// Lowercase hex of the 8 stored bytes (e.g. `0300000000000873`).
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Decodes the components with the given layout.
    pub fn parts(self, layout: TcbLayout) -> TcbParts {
        let b = self.0;
        match layout {
            TcbLayout::MilanGenoa => TcbParts { fmc: None, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] },
            TcbLayout::Turin => TcbParts { fmc: Some(b[0]), bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] },
        }
    }

    /// Encodes components with the given layout; reserved bytes are zero. `fmc` is ignored for
    /// the Milan/Genoa layout and taken as 0 when absent for the Turin layout.
    pub fn from_parts(layout: TcbLayout, p: TcbParts) -> Self {
        let mut b = [0u8; 8];
        match layout {
            TcbLayout::MilanGenoa => {
                b[0] = p.bootloader;
                b[1] = p.tee;
                b[6] = p.snp;
                b[7] = p.microcode;
            }
            TcbLayout::Turin => {
                b[0] = p.fmc.unwrap_or(0);
                b[1] = p.bootloader;
                b[2] = p.tee;
                b[3] = p.snp;
                b[7] = p.microcode;
            }
        }
        Self(b)
    }

    /// True when the bytes the layout reserves are all zero.
    pub fn reserved_is_zero(self, layout: TcbLayout) -> bool {
        let b = self.0;
        match layout {
            TcbLayout::MilanGenoa => b[2..6].iter().all(|x| *x == 0),
            TcbLayout::Turin => b[4..7].iter().all(|x| *x == 0),
        }
    }
}

impl fmt::Debug for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcbVersion({})", self.to_hex())
    }
}

impl Serialize for TcbVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TcbVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut b = [0u8; 8];
        hex::decode_to_slice(&s, &mut b).map_err(serde::de::Error::custom)?;
        Ok(Self(b))
    }
}

/// Guest POLICY (u64) fixed at launch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 16: SMT allowed on the host.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be 1.
    pub const RESERVED_MUST_BE_ONE: u64 = 1 << 17;
    /// Bit 18: a migration agent may be associated.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging (host can read/write guest memory) allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: guest may run on one socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// Bit 21: CXL may be populated with devices or memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Bit 22: AES-256-XTS required for memory encryption.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Bit 23: running average power limit must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Bit 24: ciphertext hiding required.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Bit 25: guest support for page swapping disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Every bit the specification defines (ABI version, bits 16–25).
    pub const DEFINED: u64 = 0x03FF_FFFF;

    /// Minimum ABI minor version (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
    /// Minimum ABI major version (bits 15:8).
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xFF) as u8
    }
    fn bit(self, mask: u64) -> bool {
        self.0 & mask != 0
    }
    /// SMT allowed.
    pub fn smt_allowed(self) -> bool {
        self.bit(Self::SMT)
    }
    /// The reserved bit 17 (should be set).
    pub fn reserved_bit17(self) -> bool {
        self.bit(Self::RESERVED_MUST_BE_ONE)
    }
    /// Migration agent allowed.
    pub fn migrate_ma(self) -> bool {
        self.bit(Self::MIGRATE_MA)
    }
    /// Debugging allowed.
    pub fn debug(self) -> bool {
        self.bit(Self::DEBUG)
    }
    /// Single socket required.
    pub fn single_socket(self) -> bool {
        self.bit(Self::SINGLE_SOCKET)
    }
    /// CXL allowed.
    pub fn cxl_allowed(self) -> bool {
        self.bit(Self::CXL_ALLOW)
    }
    /// AES-256-XTS required.
    pub fn mem_aes_256_xts(self) -> bool {
        self.bit(Self::MEM_AES_256_XTS)
    }
    /// RAPL must be disabled.
    pub fn rapl_dis(self) -> bool {
        self.bit(Self::RAPL_DIS)
    }
    /// Ciphertext hiding required.
    pub fn ciphertext_hiding(self) -> bool {
        self.bit(Self::CIPHERTEXT_HIDING)
    }
    /// Page swapping disabled.
    pub fn page_swap_disable(self) -> bool {
        self.bit(Self::PAGE_SWAP_DISABLE)
    }
    /// Bits set that the specification does not define (should be zero).
    pub fn undefined_bits(self) -> u64 {
        self.0 & !Self::DEFINED
    }
}

/// PLATFORM_INFO (u64): platform state at the time of the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    /// Bit 0: SMT enabled on the platform.
    pub fn smt_enabled(self) -> bool {
        self.bit(0)
    }
    /// Bit 1: transparent SME enabled.
    pub fn tsme_enabled(self) -> bool {
        self.bit(1)
    }
    /// Bit 2: ECC memory in use.
    pub fn ecc_enabled(self) -> bool {
        self.bit(2)
    }
    /// Bit 3: RAPL disabled.
    pub fn rapl_disabled(self) -> bool {
        self.bit(3)
    }
    /// Bit 4: ciphertext hiding enabled.
    pub fn ciphertext_hiding_enabled(self) -> bool {
        self.bit(4)
    }
    /// Bit 5: alias check completed.
    pub fn alias_check_complete(self) -> bool {
        self.bit(5)
    }
    /// Bit 7: SEV-TIO enabled.
    pub fn sev_tio_enabled(self) -> bool {
        self.bit(7)
    }
}

/// Which key signed the report (KEY_INFO bits 4:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningKey {
    /// 0: the chip's versioned chip endorsement key.
    Vcek,
    /// 1: a versioned loaded endorsement key (cloud provider).
    Vlek,
    /// 7: not signed.
    None,
    /// Any other (reserved) value.
    Reserved(u8),
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::Vcek => f.write_str("VCEK"),
            SigningKey::Vlek => f.write_str("VLEK"),
            SigningKey::None => f.write_str("none"),
            SigningKey::Reserved(v) => write!(f, "reserved value {v}"),
        }
    }
}

/// KEY_INFO (u32 at 0x48).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyInfo(pub u32);

impl KeyInfo {
    /// Bit 0: AUTHOR_KEY_EN (AUTHOR_KEY_DIGEST is meaningful).
    pub fn author_key_en(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: MASK_CHIP_KEY (the signature is all zero).
    pub fn mask_chip_key(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bits 4:2: the signing key.
    pub fn signing_key(self) -> SigningKey {
        match (self.0 >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            // The mask keeps the value below 8.
            v => SigningKey::Reserved(v as u8),
        }
    }
    /// KEY_INFO with the given flags and signing key.
    pub fn new(author_key_en: bool, mask_chip_key: bool, signing_key: SigningKey) -> Self {
        let key = match signing_key {
            SigningKey::Vcek => 0,
            SigningKey::Vlek => 1,
            SigningKey::None => 7,
            SigningKey::Reserved(v) => u32::from(v & 7),
        };
        Self(u32::from(author_key_en) | (u32::from(mask_chip_key) << 1) | (key << 2))
    }
}

/// CPUID family, model and stepping of the reporting processor (report version 3 and later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cpuid {
    /// Extended family + family (0x19, 0x1A, …).
    pub family: u8,
    /// Extended model + model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

impl Cpuid {
    /// The product, if it is one with public roots.
    pub fn product(self) -> Option<Product> {
        Product::from_cpuid(self.family, self.model)
    }
}

/// An SNP firmware version as stored (build, minor, major bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build number.
    pub build: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// The report signature: ECDSA P-384 R and S as stored, 72 bytes little-endian each.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportSignature {
    /// R, little-endian, zero-extended to 72 bytes.
    pub r: [u8; 72],
    /// S, little-endian, zero-extended to 72 bytes.
    pub s: [u8; 72],
}

impl Default for ReportSignature {
    fn default() -> Self {
        Self { r: [0; 72], s: [0; 72] }
    }
}

impl ReportSignature {
    /// True when R and S are all zero (MASK_CHIP_KEY, or an unsigned report).
    pub fn is_zero(&self) -> bool {
        self.r.iter().chain(self.s.iter()).all(|b| *b == 0)
    }

    /// The fixed-width big-endian `r ‖ s` (48 + 48 bytes) form of a P-384 signature, or `None`
    /// when either value does not fit in 48 bytes (bytes 48..72 not zero).
    pub fn to_p384_fixed(&self) -> Option<[u8; 96]> {
        if self.r[48..].iter().chain(self.s[48..].iter()).any(|b| *b != 0) {
            return None;
        }
        let mut out = [0u8; 96];
        for i in 0..48 {
            out[i] = self.r[47 - i];
            out[48 + i] = self.s[47 - i];
        }
        Some(out)
    }

    /// From the fixed-width big-endian `r ‖ s` form (what `ring` produces when signing).
    pub fn from_p384_fixed(sig: &[u8; 96]) -> Self {
        let mut out = Self::default();
        for i in 0..48 {
            out.r[i] = sig[47 - i];
            out.s[i] = sig[95 - i];
        }
        out
    }
}

impl fmt::Debug for ReportSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportSignature {{ r: {}, s: {} }}", hex::encode(self.r), hex::encode(self.s))
    }
}

#[derive(Serialize, Deserialize)]
struct SignatureHex {
    r: String,
    s: String,
}

impl Serialize for ReportSignature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SignatureHex { r: hex::encode(self.r), s: hex::encode(self.s) }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ReportSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = SignatureHex::deserialize(d)?;
        let mut out = Self::default();
        hex::decode_to_slice(&h.r, &mut out.r).map_err(serde::de::Error::custom)?;
        hex::decode_to_slice(&h.s, &mut out.s).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
