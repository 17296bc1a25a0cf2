//! Mounting a pulled image as overlayfs: the layer directories of the layer store (bottom first)
//! as read-only lower layers, plus a private writable upper layer. This is how the guest agent
//! gives each container its rootfs while layers are shared between containers; the kernel applies
//! the whiteouts and opaque directories that [`crate::unpack`] wrote.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::ImageError;

/// Characters overlayfs option parsing would misread in a path.
fn check_path(p: &Path) -> Result<String, ImageError> {
    let s = p.to_str().ok_or_else(|| ImageError::Config(format!("{}: not UTF-8", p.display())))?;
    if s.contains([',', ':', '\\', '\n']) {
        return Err(ImageError::Config(format!("{s}: overlayfs paths cannot contain , : or \\")));
    }
    Ok(s.to_owned())
}

/// Mounts `lowers` (bottom layer first) with `upper`/`work` (empty directories on the same
/// filesystem as each other) at `target`.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), ImageError> {
    if lowers.is_empty() {
        return Err(ImageError::Config("an overlay needs at least one layer".into()));
    }
    let mut lower = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        lower.push(check_path(l)?);
    }
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), check_path(upper)?, check_path(work)?);
    let data = CString::new(data).map_err(|_| ImageError::Config("NUL in an overlay path".into()))?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::NODEV, data.as_c_str()).map_err(|e| {
        ImageError::io(target, std::io::Error::new(std::io::Error::from(e).kind(), format!("mounting overlayfs: {e}")))
    })
}

/// Unmounts an overlay mounted by [`mount_overlay`].
pub fn unmount(target: &Path) -> Result<(), ImageError> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(|e| ImageError::io(target, e.into()))
}
