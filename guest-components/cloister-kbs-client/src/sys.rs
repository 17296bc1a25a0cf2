//! The only `unsafe` code of the guest components: the `/dev/sev-guest` ioctls
//! (`linux/sev-guest.h`). Everything here is plain-old-data marshalling around one `ioctl(2)`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_and_request_number() {
        assert_eq!(std::mem::size_of::<SnpReportReq>(), 96);
        assert_eq!(std::mem::size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
    }
}
