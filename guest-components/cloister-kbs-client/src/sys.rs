//! The only `unsafe` code of the guest components: the `/dev/sev-guest` ioctls
//! (`linux/sev-guest.h`: SNP_GET_REPORT, SNP_GET_EXT_REPORT), the `/dev/tdx_guest` ioctl
//! (`linux/tdx-guest.h`: TDX_CMD_GET_REPORT0), the IBM Secure Execution `/dev/uv` ioctl
//! (`asm/uvdevice.h`: UVIO_IOCTL_ATT) and an `AF_VSOCK` connect (to the host's quote generation
//! service). Everything here is plain-old-data marshalling around one system call.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// `struct snp_report_req`: user data, VMPL, reserved.
#[repr(C)]
struct SnpReportReq {
    user_data: [u8; 64],
    vmpl: u32,
    rsvd: [u8; 28],
}

/// `struct snp_report_resp`: the firmware's message (status, size, reserved, report).
#[repr(C)]
struct SnpReportResp {
    data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct SnpGuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}

/// `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
const SNP_GET_REPORT: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<SnpGuestRequestIoctl>() as libc::c_ulong) << 16) | ((b'S' as libc::c_ulong) << 8);

/// `struct snp_ext_report_req`: the report request plus the certificate buffer.
#[repr(C)]
struct SnpExtReportReq {
    data: SnpReportReq,
    certs_address: u64,
    certs_len: u32,
}

/// `_IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
const SNP_GET_EXT_REPORT: libc::c_ulong = SNP_GET_REPORT | 0x2;

/// Why SNP_GET_EXT_REPORT failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtReportError {
    /// `errno`.
    pub errno: i32,
    /// The firmware/VMM error (`exitinfo2`).
    pub exitinfo2: u64,
    /// The certificate length the kernel asks for when the buffer was too small.
    pub certs_len: u32,
}

/// The raw firmware response message of SNP_GET_EXT_REPORT and the certificate table written into
/// `certs` (its length must be a multiple of 4096; the kernel writes at most that many bytes and
/// zero when the host has no certificates).
pub(crate) fn snp_get_ext_report(
    dev: &File,
    user_data: &[u8; 64],
    vmpl: u32,
    certs: &mut [u8],
) -> Result<Vec<u8>, ExtReportError> {
    let certs_len = u32::try_from(certs.len()).unwrap_or(u32::MAX) & !0xfff;
    let mut req = SnpExtReportReq {
        data: SnpReportReq { user_data: *user_data, vmpl, rsvd: [0; 28] },
        certs_address: certs.as_mut_ptr() as u64,
        certs_len,
    };
    let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: std::ptr::addr_of_mut!(req) as u64,
        resp_data: std::ptr::addr_of_mut!(*resp) as u64,
        exitinfo2: 0,
    };
    // SAFETY: `dev` is an open file; SNP_GET_EXT_REPORT reads `arg` (a properly laid out
    // `snp_guest_request_ioctl`), reads and updates `req` (`snp_ext_report_req`) through
    // `req_data`, writes at most `size_of::<SnpReportResp>()` bytes through `resp_data` and at most
    // `req.certs_len` bytes (≤ `certs.len()`, rounded down to pages) at `certs_address`; all of
    // them live until the call returns and nothing else aliases them.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), SNP_GET_EXT_REPORT as libc::Ioctl, std::ptr::addr_of_mut!(arg)) };
    if rc < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(ExtReportError { errno, exitinfo2: arg.exitinfo2, certs_len: req.certs_len });
    }
    Ok(resp.data.to_vec())
}

/// The raw firmware response message of SNP_GET_REPORT, or (errno, exitinfo2).
pub(crate) fn snp_get_report(dev: &File, user_data: &[u8; 64], vmpl: u32) -> Result<Vec<u8>, (i32, u64)> {
    let req = SnpReportReq { user_data: *user_data, vmpl, rsvd: [0; 28] };
    let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: std::ptr::addr_of!(req) as u64,
        resp_data: std::ptr::addr_of_mut!(*resp) as u64,
        exitinfo2: 0,
    };
    // SAFETY: `dev` is an open file; SNP_GET_REPORT reads `arg` (a properly laid out
    // `snp_guest_request_ioctl`), reads `req` through `req_data` and writes at most
    // `size_of::<SnpReportResp>()` bytes through `resp_data`; all three live until the call returns
    // and nothing else aliases them.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), SNP_GET_REPORT as libc::Ioctl, std::ptr::addr_of_mut!(arg)) };
    if rc < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err((errno, arg.exitinfo2));
    }
    Ok(resp.data.to_vec())
}

/// `struct tdx_report_req`: report data in, TDREPORT out.
#[repr(C)]
struct TdxReportReq {
    reportdata: [u8; 64],
    tdreport: [u8; 1024],
}

/// `_IOWR('T', 1, struct tdx_report_req)`.
const TDX_CMD_GET_REPORT0: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<TdxReportReq>() as libc::c_ulong) << 16) | ((b'T' as libc::c_ulong) << 8) | 1;

/// TDX_CMD_GET_REPORT0: the TDX module's TDREPORT for `report_data`, or `errno`.
pub(crate) fn tdx_get_report0(dev: &File, report_data: &[u8; 64]) -> Result<[u8; 1024], i32> {
    let mut req = Box::new(TdxReportReq { reportdata: *report_data, tdreport: [0; 1024] });
    // SAFETY: `dev` is an open file; TDX_CMD_GET_REPORT0 reads `reportdata` and writes exactly
    // the 1024 `tdreport` bytes of the `tdx_report_req` `req` points to, which lives (boxed,
    // unaliased) until the call returns.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), TDX_CMD_GET_REPORT0 as libc::Ioctl, std::ptr::addr_of_mut!(*req)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(req.tdreport)
}

/// `struct uvio_ioctl_cb`: the uvdevice's control block (0x40 bytes).
#[repr(C)]
struct UvioIoctlCb {
    flags: u32,
    uv_rc: u16,
    uv_rrc: u16,
    argument_addr: u64,
    argument_len: u32,
    reserved14: [u8; 0x40 - 0x14],
}

/// `struct uvio_attest` (0x138 bytes).
#[repr(C)]
struct UvioAttest {
    arcb_addr: u64,
    meas_addr: u64,
    add_data_addr: u64,
    user_data: [u8; 256],
    config_uid: [u8; 16],
    arcb_len: u32,
    meas_len: u32,
    add_data_len: u32,
    user_data_len: u16,
    reserved136: u16,
}

/// `_IOWR('u', UVIO_IOCTL_ATT_NR = 1, struct uvio_ioctl_cb)`.
const UVIO_IOCTL_ATT: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<UvioIoctlCb>() as libc::c_ulong) << 16) | ((b'u' as libc::c_ulong) << 8) | 1;

/// Why UVIO_IOCTL_ATT failed: `errno` and the Ultravisor's return and reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UvError {
    pub errno: i32,
    pub uv_rc: u16,
    pub uv_rrc: u16,
}

/// UVIO_IOCTL_ATT: the Ultravisor's attestation of `arcb` with `user_data` (≤ 256 bytes). Fills
/// `measurement` and `additional` (their lengths are the sizes the request asks for) and returns
/// the configuration unique ID.
pub(crate) fn uv_attest(
    dev: &File,
    arcb: &[u8],
    user_data: &[u8],
    measurement: &mut [u8],
    additional: &mut [u8],
) -> Result<[u8; 16], UvError> {
    let fail = |errno| UvError { errno, uv_rc: 0, uv_rrc: 0 };
    let len32 = |n: usize| u32::try_from(n).map_err(|_| fail(libc::EINVAL));
    let mut ud = [0u8; 256];
    ud.get_mut(..user_data.len()).ok_or(fail(libc::EINVAL))?.copy_from_slice(user_data);
    let mut att = Box::new(UvioAttest {
        arcb_addr: arcb.as_ptr() as u64,
        meas_addr: measurement.as_mut_ptr() as u64,
        add_data_addr: if additional.is_empty() { 0 } else { additional.as_mut_ptr() as u64 },
        user_data: ud,
        config_uid: [0; 16],
        arcb_len: len32(arcb.len())?,
        meas_len: len32(measurement.len())?,
        add_data_len: len32(additional.len())?,
        user_data_len: u16::try_from(user_data.len()).map_err(|_| fail(libc::EINVAL))?,
        reserved136: 0,
    });
    let mut cb = UvioIoctlCb {
        flags: 0,
        uv_rc: 0,
        uv_rrc: 0,
        argument_addr: std::ptr::addr_of_mut!(*att) as u64,
        argument_len: std::mem::size_of::<UvioAttest>() as u32,
        reserved14: [0; 0x40 - 0x14],
    };
    // SAFETY: `dev` is an open file; UVIO_IOCTL_ATT reads `cb` (a properly laid out
    // `uvio_ioctl_cb`) and writes its rc/rrc, reads the boxed `uvio_attest` it points to and
    // writes its `config_uid`, reads `arcb_len` bytes at `arcb_addr` and writes at most
    // `meas_len`/`add_data_len` bytes at `meas_addr`/`add_data_addr`. Every buffer is a live,
    // unaliased slice of exactly the length given, valid until the call returns.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), UVIO_IOCTL_ATT as libc::Ioctl, std::ptr::addr_of_mut!(cb)) };
    if rc < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(UvError { errno, uv_rc: cb.uv_rc, uv_rrc: cb.uv_rrc });
    }
    Ok(att.config_uid)
}

/// A connected `AF_VSOCK` stream socket to `cid:port`.
pub(crate) fn vsock_connect(cid: u32, port: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: `sockaddr_vm` is plain old data (integers and a byte array), for which all-zero
    // bytes are a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: `addr` is a properly initialised `sockaddr_vm` that outlives the call, and the
    // length passed is its exact size.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_and_request_number() {
        assert_eq!(std::mem::size_of::<SnpReportReq>(), 96);
        assert_eq!(std::mem::size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
        assert_eq!(std::mem::size_of::<SnpExtReportReq>(), 112);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
        assert_eq!(std::mem::size_of::<TdxReportReq>(), 1088);
        assert_eq!(TDX_CMD_GET_REPORT0, 0xC440_5401);
        assert_eq!(std::mem::size_of::<UvioIoctlCb>(), 0x40);
        assert_eq!(std::mem::size_of::<UvioAttest>(), 0x138);
        assert_eq!(std::mem::offset_of!(UvioAttest, config_uid), 0x118);
        assert_eq!(std::mem::offset_of!(UvioAttest, user_data_len), 0x134);
        assert_eq!(std::mem::offset_of!(UvioIoctlCb, argument_len), 0x10);
        assert_eq!(UVIO_IOCTL_ATT, 0xC040_7501);
    }
}
