//! The TDX module's `TDREPORT_STRUCT` (1024 bytes), as `/dev/tdx_guest`'s `TDX_CMD_GET_REPORT0`
//! returns it, and how the quoting enclave maps it to a quote's TD 1.0 body.
//!
//! Layout (TDX module ABI, "TDREPORT_STRUCT"; integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 256 | `REPORTMACSTRUCT`: REPORTTYPE (type 0x81, subtype, version, reserved), 12 reserved, CPUSVN (16), TEE_TCB_INFO_HASH (48), TEE_INFO_HASH (48), REPORTDATA (64), 32 reserved, MAC (32) |
//! | 0x100 | 239 | `TEE_TCB_INFO`: VALID (8), TEE_TCB_SVN (16), MRSEAM (48), MRSIGNERSEAM (48), ATTRIBUTES (8), TEE_TCB_SVN2 (16, TDX 1.5), 95 reserved |
//! | 0x1EF | 17 | reserved |
//! | 0x200 | 512 | `TDINFO_STRUCT`: ATTRIBUTES (8), XFAM (8), MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG (48 each), RTMR0..3 (4 × 48), SERVTD_HASH (48, TDX 1.5), 64 reserved |
//!
//! TEE_TCB_INFO_HASH is SHA-384 of the 239 TEE_TCB_INFO bytes, TEE_INFO_HASH is SHA-384 of the 512
//! TDINFO bytes, and the MAC (a CPU key only the quoting enclave can check) covers the first 224
//! bytes of `REPORTMACSTRUCT`, so it covers the other two structures through their hashes.
//!
//! Sources (read to learn the layout, no code taken): Linux `include/uapi/linux/tdx-guest.h` and
//! its selftest's `struct tdreport`, Intel's TDX module ABI specification as cited there.
//!
//! **What it trusts:** nothing; parsing does no cryptography. Reserved bytes are kept so that a
//! report re-serialises to exactly the bytes received (the MAC and hashes cover them).

use super::{Bytes, Mr48, ReportData, Svn16, TdAttributes, TdReport10};

/// Length of `TDREPORT_STRUCT`.
pub const TD_REPORT_LEN: usize = 1024;
/// REPORTTYPE.TYPE of a TD report.
pub const REPORT_TYPE_TDX: u8 = 0x81;
/// Offset of `TEE_TCB_INFO`.
pub const TEE_TCB_INFO_OFFSET: usize = 0x100;
/// Length of `TEE_TCB_INFO`.
pub const TEE_TCB_INFO_LEN: usize = 239;
/// Offset of `TDINFO_STRUCT`.
pub const TD_INFO_OFFSET: usize = 0x200;
/// Length of `TDINFO_STRUCT`.
pub const TD_INFO_LEN: usize = 512;
/// Length of the MAC-covered part of `REPORTMACSTRUCT` (everything before the MAC).
pub const MAC_COVERED_LEN: usize = 0xE0;

/// Why bytes are not a TD report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdReportError {
    /// Not exactly 1024 bytes.
    #[error("a TDREPORT is {TD_REPORT_LEN} bytes, got {0}")]
    Length(usize),
    /// REPORTTYPE.TYPE is not 0x81 (an SGX report, or garbage).
    #[error("REPORTTYPE {0:#04x} is not a TD report (0x81)")]
    ReportType(u8),
}

/// `TEE_TCB_INFO`: the TDX module's identity and TCB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeeTcbInfo {
    /// Which of the fields below are valid (bit mask).
    pub valid: Bytes<8>,
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: Svn16,
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: Mr48,
    /// MRSIGNERSEAM (zero for Intel's module).
    pub mr_signer_seam: Mr48,
    /// SEAM ATTRIBUTES.
    pub attributes: Bytes<8>,
    /// TEE_TCB_SVN2 (TDX 1.5; zero on 1.0).
    pub tee_tcb_svn2: Svn16,
    /// Reserved.
    pub reserved: Bytes<95>,
}

/// `TDINFO_STRUCT`: the TD's attributes and measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdInfo {
    /// TDATTRIBUTES.
    pub attributes: TdAttributes,
    /// XFAM.
    pub xfam: Bytes<8>,
    /// MRTD.
    pub mr_td: Mr48,
    /// MRCONFIGID.
    pub mr_config_id: Mr48,
    /// MROWNER.
    pub mr_owner: Mr48,
    /// MROWNERCONFIG.
    pub mr_owner_config: Mr48,
    /// RTMR0..3.
    pub rtmr: [Mr48; 4],
    /// SERVTD_HASH (TDX 1.5).
    pub servtd_hash: Mr48,
    /// Reserved.
    pub reserved: Bytes<64>,
}

/// A parsed `TDREPORT_STRUCT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdReport {
    /// REPORTTYPE: type (0x81), subtype, version, reserved.
    pub report_type: [u8; 4],
    /// Reserved bytes 4..16.
    pub reserved1: Bytes<12>,
    /// CPUSVN.
    pub cpu_svn: Svn16,
    /// SHA-384 of `TEE_TCB_INFO`.
    pub tee_tcb_info_hash: Mr48,
    /// SHA-384 of `TDINFO_STRUCT`.
    pub tee_info_hash: Mr48,
    /// REPORTDATA.
    pub report_data: ReportData,
    /// Reserved bytes 0xC0..0xE0.
    pub reserved2: Bytes<32>,
    /// The CPU's MAC over bytes 0..0xE0.
    pub mac: Bytes<32>,
    /// `TEE_TCB_INFO`.
    pub tee_tcb_info: TeeTcbInfo,
    /// Reserved bytes 0x1EF..0x200.
    pub reserved3: Bytes<17>,
    /// `TDINFO_STRUCT`.
    pub td_info: TdInfo,
}

/// Copies `N` bytes at `at` (the caller has checked the total length).
fn at<const N: usize>(b: &[u8; TD_REPORT_LEN], at: usize) -> Bytes<N> {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    Bytes(out)
}

impl TdReport {
    /// Parses exactly 1024 bytes whose REPORTTYPE.TYPE is 0x81.
    pub fn from_bytes(b: &[u8]) -> Result<Self, TdReportError> {
        let b: &[u8; TD_REPORT_LEN] = b.try_into().map_err(|_| TdReportError::Length(b.len()))?;
        if b[0] != REPORT_TYPE_TDX {
            return Err(TdReportError::ReportType(b[0]));
        }
        let t = TEE_TCB_INFO_OFFSET;
        let i = TD_INFO_OFFSET;
        Ok(Self {
            report_type: [b[0], b[1], b[2], b[3]],
            reserved1: at(b, 4),
            cpu_svn: at(b, 0x10),
            tee_tcb_info_hash: at(b, 0x20),
            tee_info_hash: at(b, 0x50),
            report_data: at(b, 0x80),
            reserved2: at(b, 0xC0),
            mac: at(b, 0xE0),
            tee_tcb_info: TeeTcbInfo {
                valid: at(b, t),
                tee_tcb_svn: at(b, t + 0x08),
                mr_seam: at(b, t + 0x18),
                mr_signer_seam: at(b, t + 0x48),
                attributes: at(b, t + 0x78),
                tee_tcb_svn2: at(b, t + 0x80),
                reserved: at(b, t + 0x90),
            },
            reserved3: at(b, t + TEE_TCB_INFO_LEN),
            td_info: TdInfo {
                attributes: TdAttributes(at(b, i)),
                xfam: at(b, i + 0x08),
                mr_td: at(b, i + 0x10),
                mr_config_id: at(b, i + 0x40),
                mr_owner: at(b, i + 0x70),
                mr_owner_config: at(b, i + 0xA0),
                rtmr: [at(b, i + 0xD0), at(b, i + 0x100), at(b, i + 0x130), at(b, i + 0x160)],
                servtd_hash: at(b, i + 0x190),
                reserved: at(b, i + 0x1C0),
            },
        })
    }

    /// The 1024-byte encoding.
    pub fn to_bytes(&self) -> [u8; TD_REPORT_LEN] {
        let mut out = [0u8; TD_REPORT_LEN];
        let mut put = |off: usize, v: &[u8]| out[off..off + v.len()].copy_from_slice(v);
        put(0, &self.report_type);
        put(4, self.reserved1.as_ref());
        put(0x10, self.cpu_svn.as_ref());
        put(0x20, self.tee_tcb_info_hash.as_ref());
        put(0x50, self.tee_info_hash.as_ref());
        put(0x80, self.report_data.as_ref());
        put(0xC0, self.reserved2.as_ref());
        put(0xE0, self.mac.as_ref());
        let t = TEE_TCB_INFO_OFFSET;
        let c = &self.tee_tcb_info;
        put(t, c.valid.as_ref());
        put(t + 0x08, c.tee_tcb_svn.as_ref());
        put(t + 0x18, c.mr_seam.as_ref());
        put(t + 0x48, c.mr_signer_seam.as_ref());
        put(t + 0x78, c.attributes.as_ref());
        put(t + 0x80, c.tee_tcb_svn2.as_ref());
        put(t + 0x90, c.reserved.as_ref());
        put(t + TEE_TCB_INFO_LEN, self.reserved3.as_ref());
        let i = TD_INFO_OFFSET;
        let d = &self.td_info;
        put(i, d.attributes.0.as_ref());
        put(i + 0x08, d.xfam.as_ref());
        put(i + 0x10, d.mr_td.as_ref());
        put(i + 0x40, d.mr_config_id.as_ref());
        put(i + 0x70, d.mr_owner.as_ref());
        put(i + 0xA0, d.mr_owner_config.as_ref());
        for (k, r) in d.rtmr.iter().enumerate() {
            put(i + 0xD0 + 48 * k, r.as_ref());
        }
        put(i + 0x190, d.servtd_hash.as_ref());
        put(i + 0x1C0, d.reserved.as_ref());
        out
    }

    /// The TD 1.0 quote body the quoting enclave makes of this report (the TEE_TCB_INFO and
    /// TDINFO fields, SEAM ATTRIBUTES as SEAMATTRIBUTES, and REPORTDATA).
    pub fn to_td10_body(&self) -> TdReport10 {
        TdReport10 {
            tee_tcb_svn: self.tee_tcb_info.tee_tcb_svn,
            mr_seam: self.tee_tcb_info.mr_seam,
            mr_signer_seam: self.tee_tcb_info.mr_signer_seam,
            seam_attributes: self.tee_tcb_info.attributes,
            td_attributes: self.td_info.attributes,
            xfam: self.td_info.xfam,
            mr_td: self.td_info.mr_td,
            mr_config_id: self.td_info.mr_config_id,
            mr_owner: self.td_info.mr_owner,
            mr_owner_config: self.td_info.mr_owner_config,
            rtmr: self.td_info.rtmr,
            report_data: self.report_data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterned() -> [u8; TD_REPORT_LEN] {
        let mut b = [0u8; TD_REPORT_LEN];
        for (k, v) in b.iter_mut().enumerate() {
            *v = (k * 7 + 3) as u8;
        }
        b[0] = REPORT_TYPE_TDX;
        b
    }

    #[test]
    fn round_trips_every_byte() {
        let b = patterned();
        let r = TdReport::from_bytes(&b).unwrap();
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    fn fields_sit_at_the_abi_offsets() {
        let b = patterned();
        let r = TdReport::from_bytes(&b).unwrap();
        assert_eq!(r.report_data.as_ref(), &b[0x80..0xC0]);
        assert_eq!(r.mac.as_ref(), &b[0xE0..0x100]);
        assert_eq!(r.tee_tcb_info.mr_seam.as_ref(), &b[0x118..0x148]);
        assert_eq!(r.td_info.mr_td.as_ref(), &b[0x210..0x240]);
        assert_eq!(r.td_info.mr_config_id.as_ref(), &b[0x240..0x270]);
        assert_eq!(r.td_info.rtmr[3].as_ref(), &b[0x360..0x390]);
        let body = r.to_td10_body();
        assert_eq!(body.report_data, r.report_data);
        assert_eq!(body.seam_attributes.as_ref(), &b[0x178..0x180]);
        assert_eq!(body.td_attributes.0.as_ref(), &b[0x200..0x208]);
    }

    #[test]
    fn refuses_wrong_length_and_type() {
        assert_eq!(TdReport::from_bytes(&[0u8; 1023]), Err(TdReportError::Length(1023)));
        assert_eq!(TdReport::from_bytes(&[]), Err(TdReportError::Length(0)));
        let mut b = patterned();
        b[0] = 0;
        assert_eq!(TdReport::from_bytes(&b), Err(TdReportError::ReportType(0)));
    }
}
