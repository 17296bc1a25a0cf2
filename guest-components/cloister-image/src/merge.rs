//! Flattening overlay-format layer directories (see [`crate::unpack`]) into one rootfs, bottom
//! layer first, with overlayfs semantics: a whiteout deletes what lower layers put at its name,
//! an opaque directory hides the lower directory's contents, a directory replaces a lower
//! non-directory (and the reverse). Symlinks in the rootfs are never followed: every level is
//! checked with `lstat`.
//!
//! Layers are either moved in (`rename`, when they are not kept) or copied (when they stay in a
//! layer store for reuse), keeping hard links linked.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, XattrFlags};

use crate::error::ImageError;
use crate::unpack::{LinkMap, OPAQUE_XATTR, get_xattr, list_xattrs, remove_existing, set_mtime};

/// Whether a layer directory may be consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    /// Move entries (the layer directory is left partly empty).
    Move,
    /// Copy entries (the layer directory is unchanged).
    Copy,
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::io(p, e)
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    get_xattr(p, OPAQUE_XATTR).ok().flatten().is_some_and(|v| v == b"y")
}

/// Applies one layer directory onto `rootfs` (which exists).
pub fn merge_layer(layer: &Path, rootfs: &Path, mode: MergeMode, same_owner: bool) -> Result<(), ImageError> {
    let mut links = LinkMap::new();
    merge_dir(layer, rootfs, mode, same_owner, &mut links)
}

fn merge_dir(src: &Path, dst: &Path, mode: MergeMode, same_owner: bool, links: &mut LinkMap) -> Result<(), ImageError> {
    let mut entries: Vec<fs::DirEntry> =
        fs::read_dir(src).map_err(io_at(src))?.collect::<Result<_, _>>().map_err(io_at(src))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).map_err(io_at(&s))?;
        if is_whiteout(&m) {
            remove_existing(&d, false).map_err(io_at(&d))?;
            continue;
        }
        if m.is_dir() {
            let mut existed = remove_existing(&d, true).map_err(io_at(&d))?;
            if existed && is_opaque(&s) {
                fs::remove_dir_all(&d).map_err(io_at(&d))?;
                existed = false;
            }
            if !existed {
                fs::create_dir(&d).map_err(io_at(&d))?;
            }
            merge_dir(&s, &d, mode, same_owner, links)?;
            copy_meta(&s, &d, &m, same_owner)?;
            set_mtime(&d, u64::try_from(m.mtime()).unwrap_or(0)).map_err(io_at(&d))?;
            continue;
        }
        remove_existing(&d, false).map_err(io_at(&d))?;
        match mode {
            MergeMode::Move => match fs::rename(&s, &d) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::EXDEV) => copy_entry(&s, &d, &m, same_owner, links)?,
                Err(err) => return Err(ImageError::io(&d, err)),
            },
            MergeMode::Copy => copy_entry(&s, &d, &m, same_owner, links)?,
        }
    }
    Ok(())
}

fn copy_entry(s: &Path, d: &Path, m: &fs::Metadata, same_owner: bool, links: &mut LinkMap) -> Result<(), ImageError> {
    let ft = m.file_type();
    if m.nlink() > 1 && !ft.is_dir() {
        if let Some(first) = links.get(&(m.dev(), m.ino())) {
            fs::hard_link(first, d).map_err(io_at(d))?;
            return Ok(());
        }
        links.insert((m.dev(), m.ino()), d.to_path_buf());
    }
    if ft.is_symlink() {
        let target = fs::read_link(s).map_err(io_at(s))?;
        std::os::unix::fs::symlink(&target, d).map_err(io_at(d))?;
    } else if ft.is_file() {
        // Opens `s` read-only and creates `d` exclusively; neither follows a symlink here
        // because both were lstat'ed as regular files / removed just before.
        fs::copy(s, d).map_err(io_at(d))?;
    } else {
        let kind = if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else if ft.is_fifo() {
            FileType::Fifo
        } else {
            return Err(ImageError::io(s, io::Error::other("sockets are not copied")));
        };
        rustix::fs::mknodat(CWD, d, kind, Mode::from_raw_mode(0o600), m.rdev())
            .map_err(|e| ImageError::io(d, e.into()))?;
    }
    copy_meta(s, d, m, same_owner)?;
    set_mtime(d, u64::try_from(m.mtime()).unwrap_or(0)).map_err(io_at(d))?;
    Ok(())
}

/// Owner, mode and xattrs (not overlay's own) from `s` to `d`.
fn copy_meta(s: &Path, d: &Path, m: &fs::Metadata, same_owner: bool) -> Result<(), ImageError> {
    if same_owner {
        std::os::unix::fs::lchown(d, Some(m.uid()), Some(m.gid())).map_err(io_at(d))?;
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(d, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io_at(d))?;
    }
    for name in list_xattrs(s).map_err(io_at(s))? {
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = get_xattr(s, &name).map_err(io_at(s))? {
            rustix::fs::lsetxattr(d, name.as_str(), &value, XattrFlags::empty())
                .map_err(|e| ImageError::io(d, e.into()))?;
        }
    }
    Ok(())
}
