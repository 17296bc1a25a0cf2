//! Helpers for end-to-end tests that run Cloister's real binaries (`cloister`, `cloister-kbs`)
//! from the workspace target directory. Trusts nothing but the binaries it starts.
#![forbid(unsafe_code)]

pub mod containerd;
pub mod guest;
pub mod registry;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The directory holding the workspace's binaries (`target/<profile>`), found from the running
/// test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

/// A workspace binary, or `None` (with a message) when it has not been built.
pub fn binary(name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not built (run cargo test --workspace)", p.display());
        None
    }
}

/// A running key broker.
#[derive(Debug)]
pub struct KbsProcess {
    child: Child,
    /// `https://127.0.0.1:<port>` or `http://…`.
    pub url: String,
    /// SHA-256 of its TLS certificate (HTTPS only).
    pub cert_sha256: Option<String>,
    /// Admin key file.
    pub admin_key: PathBuf,
    /// Its log (`<dir>/kbs.log`, level from `$CLOISTER_E2E_KBS_LOG`, default `info`).
    pub log: PathBuf,
}

impl KbsProcess {
    /// Starts `cloister-kbs` with `config` (TOML text) and data under `dir`.
    pub fn start(kbs: &Path, dir: &Path, config: &str) -> std::io::Result<Self> {
        let cfg = dir.join("kbs.toml");
        std::fs::write(&cfg, config)?;
        let admin_key = dir.join("admin.pem");
        let log = dir.join("kbs.log");
        let level = std::env::var("CLOISTER_E2E_KBS_LOG").unwrap_or_else(|_| "info".into());
        let mut child = Command::new(kbs)
            .arg("--config-file")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("kbs-data"))
            .arg("--admin-key-out")
            .arg(&admin_key)
            .env("CLOISTER_LOG", level)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        let mut cert_sha256 = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.to_owned());
            } else if let Some(fp) = line.strip_prefix("tls certificate sha256 ") {
                cert_sha256 = Some(fp.to_owned());
            } else if line.starts_with("data directory ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let url = url.ok_or_else(|| std::io::Error::other("cloister-kbs did not start"))?;
        Ok(Self { child, url, cert_sha256, admin_key, log })
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for KbsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => Output {
            status: std::process::ExitStatus::default(),
            stdout: Vec::new(),
            stderr: format!("cannot run: {e}").into_bytes(),
        },
    }
}
