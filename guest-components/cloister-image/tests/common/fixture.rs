//! The two-layer test image: sources for each layer (files, modes, owners, xattrs, hard links,
//! symlinks, a fifo, whiteouts, an opaque directory, a directory replaced by a file, 3 MiB of
//! incompressible data) and the tree expected after applying both with overlay semantics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run, set_xattr};

/// Two layer source trees and the tree expected after applying both.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub l1: PathBuf,
    pub l2: PathBuf,
    pub expected: PathBuf,
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let l1 = dir.path().join("l1");
    let l2 = dir.path().join("l2");
    write(&l1.join("etc/hostname"), b"base\n", 0o644);
    set_xattr(&l1.join("etc/hostname"), "user.cloister.test", "hello");
    write(&l1.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n", 0o644);
    write(&l1.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    fs::set_permissions(l1.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(l1.join("bin/tool"), l1.join("bin/tool2")).unwrap();
    symlink("/etc/hostname", l1.join("etc/link")).unwrap();
    symlink("etc/hostname", l1.join("rel")).unwrap();
    write(&l1.join("usr/share/doc/a.txt"), b"a\n", 0o644);
    write(&l1.join("usr/share/doc/b.txt"), b"b\n", 0o644);
    write(&l1.join("data/keep.txt"), b"keep\n", 0o644);
    write(&l1.join("data/gone.txt"), b"gone\n", 0o644);
    write(&l1.join("data/dir-to-file/inner"), b"inner\n", 0o644);
    write(&l1.join("home/user/notes"), b"secret notes\n", 0o600);
    std::os::unix::fs::chown(l1.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(l1.join("home/user/notes"), Some(1000), Some(1000)).unwrap();
    fs::create_dir_all(l1.join("run")).unwrap();
    run(Command::new("mkfifo").arg(l1.join("run/fifo")));
    fs::set_permissions(l1.join("usr/share/doc"), fs::Permissions::from_mode(0o755)).unwrap();

    write(&l2.join("etc/hostname"), b"layer2\n", 0o644);
    write(&l2.join("data/.wh.gone.txt"), b"", 0o644);
    write(&l2.join("data/dir-to-file"), b"now a file\n", 0o640);
    write(&l2.join("usr/share/doc/.wh..wh..opq"), b"", 0o644);
    write(&l2.join("usr/share/doc/c.txt"), b"c\n", 0o644);
    // 3 MiB of incompressible bytes: many chunks through the pipeline.
    let mut big = vec![0u8; 3 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    write(&l2.join("opt/big.bin"), &big, 0o644);
    for d in [&l1, &l2] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }

    // The expected result, built by hand from the overlay rules.
    let expected = dir.path().join("expected");
    run(Command::new("cp").arg("-a").arg(&l1).arg(&expected));
    fs::remove_file(expected.join("data/gone.txt")).unwrap();
    fs::remove_dir_all(expected.join("data/dir-to-file")).unwrap();
    fs::remove_file(expected.join("usr/share/doc/a.txt")).unwrap();
    fs::remove_file(expected.join("usr/share/doc/b.txt")).unwrap();
    // --remove-destination: an upper file replaces the lower one whole (xattrs included).
    run(Command::new("cp").args(["-a", "--remove-destination"]).arg(format!("{}/.", l2.display())).arg(&expected));
    fs::remove_file(expected.join("data/.wh.gone.txt")).unwrap();
    fs::remove_file(expected.join("usr/share/doc/.wh..wh..opq")).unwrap();
    Fixture { dir, l1, l2, expected }
}
