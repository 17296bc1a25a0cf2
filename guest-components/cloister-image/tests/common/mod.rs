//! Test fixtures: a real `docker-registry` (Debian's CNCF distribution 2.8) on loopback, OCI
//! layouts built from directory trees with GNU tar/gzip/zstd, pushed with Debian's `skopeo`, and
//! a tree comparison that checks content, types, modes, owners, links and xattrs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod fixture;
pub mod hostile;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prints why and returns true when a tool is missing.
pub fn skip_without(tools: &[&str]) -> bool {
    let ci = std::env::var_os("CI").is_some();
    for t in tools {
        if !have(t) {
            assert!(!ci, "{t} is required under CI (.ci/run installs it)");
            eprintln!("skipping: {t} not found (apt-get install skopeo docker-registry umoci apache2-utils zstd)");
            return true;
        }
    }
    if !rustix_is_root() {
        assert!(!ci, "the image-pull tests need root under CI");
        eprintln!("skipping: these tests unpack ownership and whiteouts and need root");
        return true;
    }
    false
}

fn rustix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to 20 s) until something listens on `host`.
pub fn wait_for(host: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(host).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running docker-registry.
pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub tls: Option<TlsFiles>,
    child: Child,
}

pub struct TlsFiles {
    pub ca_der: Vec<u8>,
    pub cert_dir: PathBuf,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With TLS (a self-signed, CA:FALSE certificate) and Basic auth for `user:pass`.
    pub fn start_tls_basic(user: &str, pass: &str) -> Self {
        Self::start_with(Some((user, pass)))
    }

    fn start_with(tls_auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut yml = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        let mut tls = None;
        if let Some((user, pass)) = tls_auth {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
            params.is_ca = rcgen::IsCa::ExplicitNoCa;
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            fs::write(dir.path().join("reg.crt"), cert.pem()).unwrap();
            fs::write(dir.path().join("reg.key"), key.serialize_pem()).unwrap();
            let cert_dir = dir.path().join("certs");
            fs::create_dir(&cert_dir).unwrap();
            fs::write(cert_dir.join("ca.crt"), cert.pem()).unwrap();
            let htpasswd = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
            yml.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\nauth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                dir.path().join("reg.crt").display(),
                dir.path().join("reg.key").display(),
                dir.path().join("htpasswd").display()
            ));
            tls = Some(TlsFiles { ca_der: cert.der().to_vec(), cert_dir });
        }
        fs::write(dir.path().join("reg.yml"), yml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("reg.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&host, "docker-registry");
        Self { dir, host, tls, child }
    }

    /// `skopeo copy oci:<layout>:<tag> docker://<host>/<repo>` with extra args.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "-q"]);
        match &self.tls {
            Some(t) => {
                cmd.arg("--dest-cert-dir").arg(&t.cert_dir);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        cmd.args(extra);
        cmd.arg(format!("oci:{}:{tag}", layout.display()));
        cmd.arg(format!("docker://{}/{repo}", self.host));
        run(&mut cmd);
    }

    /// The on-disk path of a blob in the registry's storage (for tampering tests).
    pub fn blob_path(&self, digest_hex: &str) -> PathBuf {
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{digest_hex}/data", &digest_hex[..2]))
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// How a layer is compressed in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// A layer tar of `dir` made by GNU tar (with xattrs, numeric owners, sorted names).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name", "--format=pax", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn compress(tar: &[u8], c: Comp) -> Vec<u8> {
    let tool = match c {
        Comp::None => return tar.to_vec(),
        Comp::Gzip => vec!["gzip", "-n", "-c"],
        Comp::Zstd => vec!["zstd", "-q", "-c"],
    };
    let mut child =
        Command::new(tool[0]).args(&tool[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = tar.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out.stdout
}

pub fn media_type(c: Comp) -> &'static str {
    match c {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Writes an OCI layout with one image (tag `tag`) whose layers are the given tars.
pub fn write_layout(layout: &Path, tag: &str, layers: &[(Vec<u8>, Comp)], arch: &str) -> String {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha256_hex(b);
        fs::write(blobs.join(&h), b).unwrap();
        h
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        diff_ids.push(format!("\"sha256:{}\"", sha256_hex(tar)));
        let blob = compress(tar, *c);
        let h = put(&blob);
        descs.push(format!(r#"{{"mediaType":"{}","digest":"sha256:{h}","size":{}}}"#, media_type(*c), blob.len()));
    }
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let ch = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let mh = put(manifest.as_bytes());
    let index_path = layout.join("index.json");
    let mut entries: Vec<String> = fs::read_to_string(&index_path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    entries.push(format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}"#,
        manifest.len()
    ));
    fs::write(index_path, format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, entries.join(","))).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    mh
}

/// A description of every entry of a tree, for comparisons.
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inode_first: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let full = root.join(&r);
            let m = fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let key = r.display().to_string();
            let mut xattrs: Vec<String> = xattr_names(&full)
                .into_iter()
                .filter(|x| !x.starts_with("trusted.overlay."))
                .map(|x| format!("{x}={}", hex::encode(xattr_get(&full, &x))))
                .collect();
            xattrs.sort();
            let common = format!("mode={:o} uid={} gid={} xattrs={:?}", m.mode() & 0o7777, m.uid(), m.gid(), xattrs);
            let desc = if ft.is_dir() {
                stack.push(r.clone());
                format!("dir {common}")
            } else if ft.is_symlink() {
                format!("symlink -> {} uid={} gid={}", fs::read_link(&full).unwrap().display(), m.uid(), m.gid())
            } else if ft.is_file() {
                let link = if m.nlink() > 1 {
                    match inode_first.get(&(m.dev(), m.ino())) {
                        Some(first) => format!(" hardlink-of={first}"),
                        None => {
                            inode_first.insert((m.dev(), m.ino()), key.clone());
                            String::new()
                        }
                    }
                } else {
                    String::new()
                };
                format!("file sha256={} mtime={} {common}{link}", sha256_hex(&fs::read(&full).unwrap()), m.mtime())
            } else if ft.is_fifo() {
                format!("fifo {common}")
            } else if ft.is_char_device() {
                format!("chardev {}:{} {common}", m.rdev() >> 8, m.rdev() & 0xff)
            } else {
                format!("other {common}")
            };
            out.insert(key, desc);
        }
    }
    out
}

fn xattr_names(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or(0);
    buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect()
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).unwrap();
    buf.truncate(n);
    buf
}

/// Differences between two tree descriptions, as readable lines.
pub fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only in first: {k}: {v}")),
            Some(w) if w != v => out.push(format!("{k}:\n  first:  {v}\n  second: {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!("only in second: {k}: {v}"));
        }
    }
    out
}

pub fn set_xattr(p: &Path, name: &str, value: &str) {
    rustix::fs::lsetxattr(p, name, value.as_bytes(), rustix::fs::XattrFlags::empty()).unwrap();
}
