//! The real guest image for VM tests: `runtime/guest/build.sh` builds the Debian cloud kernel
//! (vmlinux, PVH) and an initrd with the static musl agent, cached under
//! `/var/tmp/cloister-guest-cache/<key>`, the key being the SHA-256 of every input (build
//! script, /init, kernel package, agent binary, busybox, policy, options).
//!
//! Needs: `qemu-system-x86_64`, `/bin/busybox` (busybox-static), `cpio`, `zstd`, `lz4`,
//! `dpkg-deb`, the Rust target `x86_64-unknown-linux-musl` + `musl-gcc` (musl-tools), and the
//! cloud kernel package: `$CLOISTER_TEST_KERNEL_DEB`, else `/var/tmp/cloister-ci-kernel/*.deb`
//! (where .ci/run downloads it). [`prerequisites`] returns `None` with a message otherwise, and
//! panics instead under `CI`.

// A test harness: a failed build or setup step fails the calling test, with its cause.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The musl target of the static agent.
pub const MUSL: &str = "x86_64-unknown-linux-musl";
/// Debian's OVMF (the build measures with it when present).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_default()
}

/// `name` in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Skips (prints why, returns `None`) unless under CI, where a missing prerequisite fails.
pub fn missing<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "{why} (required under CI)");
    eprintln!("skipping: {why}");
    None
}

fn kernel_deb() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("CLOISTER_TEST_KERNEL_DEB") {
        return Some(k.into());
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir("/var/tmp/cloister-ci-kernel")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.contains("-cloud-amd64_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// What building and booting the guest needs.
#[derive(Debug, Clone)]
pub struct Prereqs {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The cloud kernel package.
    pub kernel_deb: PathBuf,
}

/// The prerequisites, or `None` after saying what is missing (a panic under `CI`).
pub fn prerequisites() -> Option<Prereqs> {
    for tool in ["qemu-system-x86_64", "cpio", "zstd", "lz4", "dpkg-deb", "musl-gcc"] {
        if which(tool).is_none() {
            return missing(&format!("{tool} not found (apt-get install qemu-system-x86 cpio zstd lz4 musl-tools)"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return missing("/bin/busybox not found (apt-get install busybox-static)");
    }
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(MUSL).is_dir() {
        return missing(&format!("Rust target {MUSL} not installed (rustup target add {MUSL})"));
    }
    let Some(kernel_deb) = kernel_deb() else {
        return missing("no cloud kernel package (set CLOISTER_TEST_KERNEL_DEB or run .ci/run's kernel download)");
    };
    Some(Prereqs { qemu: which("qemu-system-x86_64")?, kernel_deb })
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
}

/// The static agent, built (or found up to date) by cargo in the workspace target directory.
pub fn musl_agent() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let st = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "-q", "--locked", "--release", "--target", MUSL, "-p", "cloister-agent"])
        .status()
        .unwrap_or_else(|e| panic!("running cargo: {e}"));
    assert!(st.success(), "building the musl agent failed: {st}");
    eprintln!("musl agent build/check: {:?}", started.elapsed());
    // bin_dir() is <target>/<profile>; the musl build is <target>/<triple>/release.
    crate::bin_dir().parent().unwrap_or(Path::new("/")).join(MUSL).join("release/cloister-agent")
}

/// Writes a busybox root filesystem for test containers into `dir`.
pub fn busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    for d in ["proc", "dev", "sys", "tmp", "etc", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    for applet in ["sh", "echo", "cat", "uname", "hostname", "test", "sleep", "ls", "id"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    Ok(())
}

/// How to build a guest image.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Bake a busybox root filesystem in as the local image `busybox` (the agent then serves
    /// only local images).
    pub local_busybox: bool,
    /// Extra agent arguments (`--agent-arg`).
    pub agent_args: Vec<String>,
}

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Directory with `vmlinux`, `initrd.img`, `cmdline.txt` (and maybe `measurements.json`).
    pub dir: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
}

impl GuestImage {
    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The initrd.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
}

/// Builds the image with `runtime/guest/build.sh`, or reuses the cached build for the same inputs.
pub fn guest_image(p: &Prereqs, opts: &ImageOptions) -> GuestImage {
    let repo = repo();
    let agent = musl_agent();
    let inputs = [
        repo.join("runtime/guest/build.sh"),
        repo.join("runtime/guest/init"),
        repo.join("policies/agent/allow_all.rego"),
        p.kernel_deb.clone(),
        agent.clone(),
        PathBuf::from("/bin/busybox"),
    ];
    let mut key = Sha256::new();
    for i in &inputs {
        key.update(sha256_file(i).as_bytes());
    }
    key.update(Path::new(OVMF).exists().to_string().as_bytes());
    key.update(format!("{:?}/{:?}", opts.local_busybox, opts.agent_args).as_bytes());
    let key = hex::encode(key.finalize());
    let cache = PathBuf::from("/var/tmp/cloister-guest-cache");
    let dir = cache.join(&key[..16]);
    if !dir.join("SHA256SUMS").exists() {
        let started = Instant::now();
        std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display()));
        let tmp = tempfile::tempdir_in(&cache).unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut cmd = Command::new(repo.join("runtime/guest/build.sh"));
        cmd.arg("--out").arg(tmp.path().join("out"));
        cmd.arg("--kernel-deb").arg(&p.kernel_deb);
        cmd.arg("--agent").arg(&agent);
        if opts.local_busybox {
            let rootfs = tmp.path().join("busybox-rootfs");
            busybox_rootfs(&rootfs).unwrap_or_else(|e| panic!("busybox rootfs: {e}"));
            cmd.arg("--local-image").arg(format!("busybox={}", rootfs.display()));
        }
        for a in &opts.agent_args {
            cmd.arg(format!("--agent-arg={a}"));
        }
        if !Path::new(OVMF).exists() {
            cmd.args(["--firmware", "none"]);
        }
        if let Some(c) = crate::binary("cloister") {
            cmd.env("CLOISTER", c);
        }
        let st = cmd.status().unwrap_or_else(|e| panic!("running build.sh: {e}"));
        assert!(st.success(), "build.sh failed: {st}");
        // Publish atomically: another test run may be building the same key.
        let _ = std::fs::rename(tmp.path().join("out"), &dir);
        eprintln!("guest image built in {:?}", started.elapsed());
    } else {
        eprintln!("guest image reused from {}", dir.display());
        // Mark it used, so that pruning keeps it.
        let _ = std::fs::File::options()
            .write(true)
            .open(dir.join("SHA256SUMS"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
    prune_cache(&cache, &dir);
    let cmdline = std::fs::read_to_string(dir.join("cmdline.txt")).unwrap_or_else(|e| panic!("cmdline.txt: {e}"));
    GuestImage { dir, cmdline }
}

/// Cached guest images not used for this long are removed (one is built for every agent change).
const CACHE_KEEP: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// Removes cached images (and leftovers of interrupted builds) unused for [`CACHE_KEEP`], except
/// `keep`.
fn prune_cache(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    for p in entries.flatten().map(|e| e.path()) {
        if p == keep || !p.is_dir() {
            continue;
        }
        // A finished image is dated by its SHA256SUMS (touched on every use), a leftover by itself.
        let stamp = if p.join("SHA256SUMS").exists() { p.join("SHA256SUMS") } else { p.clone() };
        let stale = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > CACHE_KEEP);
        if stale && std::fs::remove_dir_all(&p).is_ok() {
            eprintln!("removed the stale guest image {}", p.display());
        }
    }
}

/// The last 30 lines of a console log.
pub fn console_tail(path: &Path) -> String {
    let console = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_removes_only_stale_images_and_leftovers() {
        let cache = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - CACHE_KEEP - std::time::Duration::from_secs(60);
        let make = |name: &str, finished: bool, when: std::time::SystemTime| {
            let d = cache.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let stamp = if finished {
                std::fs::write(d.join("SHA256SUMS"), "x").unwrap();
                std::fs::File::options().write(true).open(d.join("SHA256SUMS")).unwrap()
            } else {
                std::fs::File::open(&d).unwrap()
            };
            stamp.set_modified(when).unwrap();
            d
        };
        let now = std::time::SystemTime::now();
        let (fresh, stale, leftover, current) =
            (make("fresh", true, now), make("stale", true, old), make(".tmp1", false, old), make("current", true, old));
        prune_cache(cache.path(), &current);
        assert!(fresh.exists() && current.exists());
        assert!(!stale.exists() && !leftover.exists());
    }
}
