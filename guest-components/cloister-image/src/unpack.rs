//! Safe, streaming tar extraction of one layer into an empty directory, in the overlayfs layer
//! format: a whiteout `.wh.<name>` becomes a 0:0 character device `<name>`, an opaque marker
//! `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory. Such a directory can be an
//! overlayfs lower layer as it is, or be merged into a flat rootfs by [`crate::merge`].
//!
//! Safety rules (never write outside the layer directory):
//! * entry paths are made relative; a `..` component is refused;
//! * every parent of an entry must be a real directory created by this layer: a path through a
//!   symlink is refused (symlinks are created verbatim and never followed while unpacking);
//! * an existing entry at the target is removed first and files are created with `O_EXCL`;
//! * hard-link targets obey the same rules and must already exist in this layer;
//! * `trusted.overlay.*` xattrs in the archive are refused (they would forge whiteouts).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};
use tar::EntryType;

use crate::digest::Digest;
use crate::error::ImageError;

/// The overlayfs opaque-directory xattr.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const COPY_BUF: usize = 256 * 1024;

/// Options for extraction.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Restore the archive's uid/gid (needs root; off → files belong to the caller).
    pub same_owner: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { same_owner: rustix::process::geteuid().is_root() }
    }
}

/// What a layer contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries applied.
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Whiteouts (including opaque markers).
    pub whiteouts: u64,
}

struct Ctx<'a> {
    layer: Digest,
    root: &'a Path,
    opts: UnpackOptions,
    dirs: Vec<(PathBuf, u64)>,
    buf: Vec<u8>,
    stats: LayerStats,
}

impl Ctx<'_> {
    fn unsafe_entry(&self, entry: &Path, why: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry { layer: self.layer, entry: entry.display().to_string(), why: why.into() }
    }
}

/// Errors from the reader chain (digest, decryption, decompression) surface as io errors inside
/// the tar reader; [`crate::pull`] maps them back to typed errors.
fn tar_err(layer: Digest, e: io::Error) -> ImageError {
    ImageError::BadTar { layer, why: e.to_string() }
}

/// Extracts the tar stream `reader` into `root` (an existing, empty directory). On error the
/// directory holds a partial layer: the caller deletes it.
pub fn unpack_layer<R: Read>(
    layer: Digest,
    reader: R,
    root: &Path,
    opts: UnpackOptions,
) -> Result<(LayerStats, R), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut ctx = Ctx { layer, root, opts, dirs: Vec::new(), buf: vec![0u8; COPY_BUF], stats: LayerStats::default() };
    {
        let entries = archive.entries().map_err(|e| tar_err(layer, e))?;
        for entry in entries {
            // Errors of the reader chain (transport, digest, decryption) also surface here as io
            // errors; the pipeline records their typed cause and reports that instead.
            let mut entry = entry.map_err(|e| tar_err(layer, e))?;
            apply_entry(&mut ctx, &mut entry)?;
        }
    }
    // Directory metadata last, deepest first, so creating children does not disturb mtimes
    // and read-only directories are filled before they become read-only.
    let mut dirs = std::mem::take(&mut ctx.dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (dir, mtime) in dirs {
        set_mtime(&dir, mtime).map_err(|e| ImageError::io(&dir, e))?;
    }
    Ok((ctx.stats, archive.into_inner()))
}

/// `a/./b/` → [a, b]; absolute paths become relative; `..` is refused.
fn clean(path: &Path) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("the path contains a \"..\" component"),
            Component::Normal(n) => out.push(n.to_owned()),
        }
    }
    Ok(out)
}

/// Makes sure every component of `parents` is a real directory under root (creating missing
/// ones with mode 0755), never following symlinks.
fn ensure_dirs(ctx: &Ctx<'_>, entry: &Path, parents: &[OsString]) -> Result<PathBuf, ImageError> {
    let mut p = ctx.root.to_path_buf();
    for c in parents {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ctx.unsafe_entry(
                    entry,
                    format!("its parent {} is a symlink (unpacking never follows symlinks)", rel(ctx.root, &p)),
                ));
            }
            Ok(_) => {
                return Err(ctx.unsafe_entry(entry, format!("its parent {} is not a directory", rel(ctx.root, &p))));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(|e| ImageError::io(&p, e))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(|e| ImageError::io(&p, e))?;
            }
            Err(e) => return Err(ImageError::io(&p, e)),
        }
    }
    Ok(p)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Removes whatever is at `p` (not following symlinks). `keep_dir`: an existing directory stays.
pub(crate) fn remove_existing(p: &Path, keep_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => {
            if keep_dir {
                return Ok(true);
            }
            fs::remove_dir_all(p)?;
            Ok(false)
        }
        Ok(_) => {
            fs::remove_file(p)?;
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn apply_entry<R: Read>(ctx: &mut Ctx<'_>, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink) {
        return Ok(());
    }
    let raw_path = entry.path().map_err(|e| tar_err(ctx.layer, e))?.into_owned();
    let comps = clean(&raw_path).map_err(|why| ctx.unsafe_entry(&raw_path, why))?;
    let Some((name, parents)) = comps.split_last() else {
        // The layer root itself ("./"): its metadata belongs to the rootfs, not to the layer.
        return Ok(());
    };
    ctx.stats.entries += 1;
    let name_str = name.to_string_lossy();

    // Whiteouts.
    if name_str == OPAQUE_MARKER {
        let dir = ensure_dirs(ctx, &raw_path, parents)?;
        rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| ImageError::io(&dir, e.into()))?;
        ctx.stats.whiteouts += 1;
        return Ok(());
    }
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(ctx.unsafe_entry(&raw_path, "malformed whiteout name"));
        }
        let dir = ensure_dirs(ctx, &raw_path, parents)?;
        let target = dir.join(hidden);
        remove_existing(&target, false).map_err(|e| ImageError::io(&target, e))?;
        rustix::fs::mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| ImageError::io(&target, io::Error::from(e)))?;
        ctx.stats.whiteouts += 1;
        return Ok(());
    }

    let dir = ensure_dirs(ctx, &raw_path, parents)?;
    let path = dir.join(name);
    let header = entry.header();
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    let mode = header.mode().map_err(|e| tar_err(ctx.layer, e))? & 0o7777;
    let mut uid = header.uid().map_err(|e| tar_err(ctx.layer, e))?;
    let mut gid = header.gid().map_err(|e| tar_err(ctx.layer, e))?;
    let mut mtime = header.mtime().map_err(|e| tar_err(ctx.layer, e))?;
    let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(|e| tar_err(ctx.layer, e))? {
        for ext in pax {
            let ext = ext.map_err(|e| tar_err(ctx.layer, e))?;
            let key = ext.key().map_err(|_| ctx.unsafe_entry(&raw_path, "a PAX key is not UTF-8"))?;
            let num =
                || std::str::from_utf8(ext.value_bytes()).ok().and_then(|v| v.split('.').next()?.parse::<u64>().ok());
            match key {
                "uid" => uid = num().ok_or_else(|| ctx.unsafe_entry(&raw_path, "bad PAX uid"))?,
                "gid" => gid = num().ok_or_else(|| ctx.unsafe_entry(&raw_path, "bad PAX gid"))?,
                "mtime" => mtime = num().unwrap_or(mtime),
                _ => {
                    let (name, value) = if let Some(n) = key.strip_prefix("SCHILY.xattr.") {
                        (n.to_owned(), ext.value_bytes().to_vec())
                    } else if let Some(n) = key.strip_prefix("LIBARCHIVE.xattr.") {
                        let v = base64::engine::general_purpose::STANDARD
                            .decode(ext.value_bytes())
                            .map_err(|_| ctx.unsafe_entry(&raw_path, "bad LIBARCHIVE.xattr value"))?;
                        (n.to_owned(), v)
                    } else {
                        continue;
                    };
                    if name.starts_with("trusted.overlay.") {
                        return Err(ctx.unsafe_entry(&raw_path, format!("the archive sets {name}")));
                    }
                    xattrs.push((name, value));
                }
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| ctx.unsafe_entry(&raw_path, "uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| ctx.unsafe_entry(&raw_path, "gid out of range"))?;
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| ImageError::io(p, e)
    };

    match kind {
        EntryType::Directory => {
            remove_existing(&path, true).map_err(io_at(&path))?;
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ImageError::io(&path, e)),
            }
            finish_meta(ctx, &path, uid, gid, Some(mode), &xattrs)?;
            ctx.dirs.push((path, mtime));
            return Ok(());
        }
        EntryType::Regular | EntryType::Continuous => {
            remove_existing(&path, false).map_err(io_at(&path))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_at(&path))?;
            let written = copy_entry(entry, &mut f, &mut ctx.buf)
                .map_err(|e| ImageError::BadTar { layer: ctx.layer, why: format!("{}: {e}", raw_path.display()) })?;
            ctx.stats.bytes += written;
            drop(f);
            finish_meta(ctx, &path, uid, gid, Some(mode), &xattrs)?;
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(|e| tar_err(ctx.layer, e))?
                .ok_or_else(|| ctx.unsafe_entry(&raw_path, "symlink without a target"))?
                .into_owned();
            remove_existing(&path, false).map_err(io_at(&path))?;
            std::os::unix::fs::symlink(&target, &path).map_err(io_at(&path))?;
            finish_meta(ctx, &path, uid, gid, None, &xattrs)?;
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| tar_err(ctx.layer, e))?
                .ok_or_else(|| ctx.unsafe_entry(&raw_path, "hard link without a target"))?
                .into_owned();
            let tcomps =
                clean(&target).map_err(|why| ctx.unsafe_entry(&raw_path, format!("hard link target: {why}")))?;
            let Some((tname, tparents)) = tcomps.split_last() else {
                return Err(ctx.unsafe_entry(&raw_path, "hard link to the layer root"));
            };
            let tdir = ensure_existing_dirs(ctx, &raw_path, tparents)?;
            let tpath = tdir.join(tname);
            match fs::symlink_metadata(&tpath) {
                Ok(m) if m.is_dir() => return Err(ctx.unsafe_entry(&raw_path, "hard link to a directory")),
                Ok(_) => {}
                Err(_) => {
                    return Err(ctx.unsafe_entry(
                        &raw_path,
                        format!("hard link target {} is not in this layer", target.display()),
                    ));
                }
            }
            if tpath == path {
                return Ok(());
            }
            remove_existing(&path, false).map_err(io_at(&path))?;
            // linkat without AT_SYMLINK_FOLLOW: links the entry itself, never a symlink's target.
            fs::hard_link(&tpath, &path).map_err(io_at(&path))?;
            return Ok(());
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let ft = match kind {
                EntryType::Char => FileType::CharacterDevice,
                EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            if ft == FileType::CharacterDevice && major == 0 && minor == 0 {
                return Err(
                    ctx.unsafe_entry(&raw_path, "a 0:0 character device is an overlay whiteout; use .wh. entries")
                );
            }
            remove_existing(&path, false).map_err(io_at(&path))?;
            rustix::fs::mknodat(CWD, &path, ft, Mode::from_raw_mode(0o600), rustix::fs::makedev(major, minor))
                .map_err(|e| ImageError::io(&path, e.into()))?;
            finish_meta(ctx, &path, uid, gid, Some(mode), &xattrs)?;
        }
        other => {
            return Err(ctx.unsafe_entry(&raw_path, format!("unsupported tar entry type {other:?}")));
        }
    }
    set_mtime(&path, mtime).map_err(io_at(&path))?;
    Ok(())
}

/// Like [`ensure_dirs`] but nothing is created: every parent must already be a real directory.
fn ensure_existing_dirs(ctx: &Ctx<'_>, entry: &Path, parents: &[OsString]) -> Result<PathBuf, ImageError> {
    let mut p = ctx.root.to_path_buf();
    for c in parents {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => {
                return Err(ctx.unsafe_entry(
                    entry,
                    format!("hard link target directory {} is not a directory of this layer", rel(ctx.root, &p)),
                ));
            }
        }
    }
    Ok(p)
}

fn copy_entry<R: Read>(entry: &mut R, out: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Ownership, then mode (chown clears set-id bits), then xattrs (chown clears capabilities).
fn finish_meta(
    ctx: &Ctx<'_>,
    path: &Path,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
    xattrs: &[(String, Vec<u8>)],
) -> Result<(), ImageError> {
    if ctx.opts.same_owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| ImageError::io(path, e))?;
    }
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| ImageError::io(path, e))?;
    }
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(path, name.as_str(), value, XattrFlags::empty()).map_err(|e| {
            ImageError::io(path, io::Error::new(io::Error::from(e).kind(), format!("setting xattr {name}: {e}")))
        })?;
    }
    Ok(())
}

pub(crate) fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let t = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
    rustix::fs::utimensat(CWD, path, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// An xattr of `p` itself (not following a symlink), or `None` if absent.
pub(crate) fn get_xattr(p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The xattr names of `p` itself.
pub(crate) fn list_xattrs(p: &Path) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rustix::fs::llistxattr(p, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| std::str::from_utf8(n).ok().map(str::to_owned))
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Inode → first path copied, to keep hard links linked when copying a layer.
pub(crate) type LinkMap = HashMap<(u64, u64), PathBuf>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn layer() -> Digest {
        Digest::of(b"test layer")
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, data: &[u8], link: Option<&str>, mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_577_836_800);
        h.set_uid(0);
        h.set_gid(0);
        // Write names raw so unsafe paths reach the unpacker (the builder refuses `..`).
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn run(tar: &[u8]) -> (tempfile::TempDir, Result<LayerStats, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_layer(layer(), tar, dir.path(), UnpackOptions::default()).map(|(s, _)| s);
        (dir, r)
    }

    #[test]
    fn files_links_modes() {
        let t = tar_with(|b| {
            add(b, "etc/", EntryType::Directory, b"", None, 0o755);
            add(b, "etc/hello", EntryType::Regular, b"hi\n", None, 0o640);
            add(b, "etc/link", EntryType::Symlink, b"", Some("/etc/hello"), 0o777);
            add(b, "etc/hard", EntryType::Link, b"", Some("etc/hello"), 0);
            add(b, "bin/tool", EntryType::Regular, b"#!/bin/sh\n", None, 0o4755);
        });
        let (d, r) = run(&t);
        let s = r.unwrap();
        assert_eq!(s.entries, 5);
        assert_eq!(fs::read(d.path().join("etc/hello")).unwrap(), b"hi\n");
        assert_eq!(fs::read_link(d.path().join("etc/link")).unwrap(), Path::new("/etc/hello"));
        use std::os::unix::fs::MetadataExt;
        let a = fs::metadata(d.path().join("etc/hello")).unwrap();
        let h = fs::metadata(d.path().join("etc/hard")).unwrap();
        assert_eq!(a.ino(), h.ino());
        assert_eq!(a.mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(d.path().join("bin/tool")).unwrap().mode() & 0o7777, 0o4755);
        assert_eq!(a.mtime(), 1_577_836_800);
    }

    #[test]
    fn refuses_escapes() {
        for (name, t) in [
            ("dotdot", tar_with(|b| add(b, "../evil", EntryType::Regular, b"x", None, 0o644))),
            ("nested dotdot", tar_with(|b| add(b, "a/../../evil", EntryType::Regular, b"x", None, 0o644))),
            (
                "through symlink",
                tar_with(|b| {
                    add(b, "esc", EntryType::Symlink, b"", Some("/tmp"), 0o777);
                    add(b, "esc/evil", EntryType::Regular, b"x", None, 0o644);
                }),
            ),
            (
                "relative symlink",
                tar_with(|b| {
                    add(b, "esc", EntryType::Symlink, b"", Some("../../.."), 0o777);
                    add(b, "esc/evil", EntryType::Regular, b"x", None, 0o644);
                }),
            ),
            ("hard link out", tar_with(|b| add(b, "h", EntryType::Link, b"", Some("../../etc/passwd"), 0))),
            ("hard link absent", tar_with(|b| add(b, "h", EntryType::Link, b"", Some("etc/passwd"), 0))),
        ] {
            let (_d, r) = run(&t);
            assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{name}: {r:?}");
        }
    }

    #[test]
    fn whiteouts_become_overlay_format() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: whiteouts need root (mknod)");
            return;
        }
        let t = tar_with(|b| {
            add(b, "a/", EntryType::Directory, b"", None, 0o755);
            add(b, "a/.wh..wh..opq", EntryType::Regular, b"", None, 0o644);
            add(b, "a/.wh.gone", EntryType::Regular, b"", None, 0o644);
        });
        let (d, r) = run(&t);
        assert_eq!(r.unwrap().whiteouts, 2);
        let m = fs::symlink_metadata(d.path().join("a/gone")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert_eq!(get_xattr(&d.path().join("a"), OPAQUE_XATTR).unwrap().unwrap(), b"y");
    }
}
