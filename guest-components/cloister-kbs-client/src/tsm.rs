//! The configfs-tsm attester (Linux ≥ 6.7; SNP and TDX): one report object per request under
//! `/sys/kernel/config/tsm/report/<name>`, `inblob` ← report data, `outblob` → the SNP report or
//! the complete TDX quote, `auxblob` → the SNP certificate table, and `generation` read before and
//! after to detect a concurrent writer (the kernel bumps it on every write).
//!
//! File-system access goes through the small [`TsmFs`] trait so that tests can drive the exact
//! protocol against a fake configfs (which, like the kernel, creates the attributes on `mkdir`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_kbs_protocol::Tee;
use serde_json::{Value, json};

use crate::attester::{Attester, AttesterError};

/// The kernel's report directory.
pub const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// SNP report length.
const SNP_REPORT_LEN: usize = 0x4A0;
/// Smallest plausible TDX quote (header + TD report + signature length).
const TDX_QUOTE_MIN: usize = 48 + 584 + 4;
/// Largest outblob/auxblob accepted.
const MAX_BLOB: usize = 1 << 20;

/// The operations configfs-tsm needs.
pub trait TsmFs: Send + Sync {
    /// `mkdir`.
    fn create_dir(&self, p: &Path) -> std::io::Result<()>;
    /// `rmdir`.
    fn remove_dir(&self, p: &Path) -> std::io::Result<()>;
    /// Reads an attribute.
    fn read(&self, p: &Path) -> std::io::Result<Vec<u8>>;
    /// Writes an attribute.
    fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl TsmFs for RealFs {
    fn create_dir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::create_dir(p)
    }
    fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(p)
    }
    fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
        std::fs::write(p, data)
    }
}

/// A configfs-tsm attester.
pub struct TsmAttester {
    fs: Arc<dyn TsmFs>,
    root: PathBuf,
    tee: Tee,
    counter: AtomicU64,
}

impl std::fmt::Debug for TsmAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsmAttester").field("root", &self.root).field("tee", &self.tee).finish()
    }
}

fn platform(detail: impl Into<String>) -> AttesterError {
    AttesterError::Platform { tee: "configfs-tsm", detail: detail.into() }
}

impl TsmAttester {
    /// Probes `root` (normally [`TSM_REPORT_ROOT`]) by creating a report object and reading its
    /// `provider` (`sev_guest` → SNP, `tdx_guest` → TDX).
    pub fn probe(fs: Arc<dyn TsmFs>, root: impl Into<PathBuf>) -> Result<Self, AttesterError> {
        let root = root.into();
        let dir = root.join(format!("cloister-probe-{}", std::process::id()));
        fs.create_dir(&dir).map_err(|e| platform(format!("cannot create {}: {e}", dir.display())))?;
        let provider = fs.read(&dir.join("provider"));
        let _ = fs.remove_dir(&dir);
        let provider = provider.map_err(|e| platform(format!("reading provider: {e}")))?;
        let tee = match String::from_utf8_lossy(&provider).trim() {
            "sev_guest" => Tee::Snp,
            "tdx_guest" => Tee::Tdx,
            other => return Err(platform(format!("provider {other:?} is not supported (sev_guest, tdx_guest)"))),
        };
        Ok(Self { fs, root, tee, counter: AtomicU64::new(0) })
    }

    /// The real configfs at [`TSM_REPORT_ROOT`].
    pub fn detect() -> Result<Self, AttesterError> {
        if !Path::new(TSM_REPORT_ROOT).is_dir() {
            return Err(platform(format!("{TSM_REPORT_ROOT} does not exist (no TEE, or kernel older than 6.7)")));
        }
        Self::probe(Arc::new(RealFs), TSM_REPORT_ROOT)
    }

    fn generation(&self, dir: &Path) -> Result<u64, AttesterError> {
        let g = self.fs.read(&dir.join("generation")).map_err(|e| platform(format!("reading generation: {e}")))?;
        String::from_utf8_lossy(&g).trim().parse().map_err(|_| platform("generation is not a number"))
    }

    fn request(&self, dir: &Path, report_data: &[u8; 64]) -> Result<(Vec<u8>, Vec<u8>), AttesterError> {
        if self.tee == Tee::Snp {
            // VMPL 0 (a guest kernel's default); ignored by older kernels without the attribute.
            let _ = self.fs.write(&dir.join("privlevel"), b"0");
        }
        self.fs.write(&dir.join("inblob"), report_data).map_err(|e| platform(format!("writing inblob: {e}")))?;
        let before = self.generation(dir)?;
        let out = self.fs.read(&dir.join("outblob")).map_err(|e| platform(format!("reading outblob: {e}")))?;
        let aux =
            if self.tee == Tee::Snp { self.fs.read(&dir.join("auxblob")).unwrap_or_default() } else { Vec::new() };
        let after = self.generation(dir)?;
        if before != after {
            return Err(platform(format!(
                "generation changed from {before} to {after} while reading: another writer used this report object"
            )));
        }
        if out.len() > MAX_BLOB || aux.len() > MAX_BLOB {
            return Err(platform("outblob or auxblob larger than 1 MiB"));
        }
        match self.tee {
            Tee::Snp if out.len() != SNP_REPORT_LEN => {
                return Err(platform(format!("SNP outblob is {} bytes, not {SNP_REPORT_LEN}", out.len())));
            }
            Tee::Tdx if out.len() < TDX_QUOTE_MIN => {
                return Err(platform(format!("TDX outblob is {} bytes, shorter than any quote", out.len())));
            }
            _ => {}
        }
        Ok((out, aux))
    }
}

impl Attester for TsmAttester {
    fn tee(&self) -> Tee {
        self.tee
    }

    fn evidence(&self, digest: &[u8]) -> Result<Value, AttesterError> {
        let report_data = cloister_kbs_protocol::binding::fit::<64>(digest);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("cloister-{}-{n}", std::process::id()));
        self.fs.create_dir(&dir).map_err(|e| platform(format!("cannot create {}: {e}", dir.display())))?;
        let result = self.request(&dir, &report_data);
        let _ = self.fs.remove_dir(&dir);
        let (out, aux) = result?;
        Ok(match self.tee {
            Tee::Snp if aux.is_empty() => json!({"report": STANDARD.encode(out)}),
            Tee::Snp => json!({"report": STANDARD.encode(out), "cert_table": STANDARD.encode(aux)}),
            _ => json!({"quote": STANDARD.encode(out)}),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
    use cloister_evidence::snp::Product;

    /// A configfs-tsm stand-in backed by the emulated SNP platform: `mkdir` creates the
    /// attributes, writing `inblob` bumps `generation` and produces the report.
    struct FakeTsm {
        platform: Arc<EmulatedSnp>,
        files: Mutex<HashMap<PathBuf, Vec<u8>>>,
        dirs: Mutex<Vec<PathBuf>>,
        /// Fault injection.
        truncate_outblob: bool,
        racing_writer: bool,
        fail_mkdir: bool,
    }

    impl FakeTsm {
        fn new(platform: Arc<EmulatedSnp>) -> Self {
            Self {
                platform,
                files: Mutex::default(),
                dirs: Mutex::default(),
                truncate_outblob: false,
                racing_writer: false,
                fail_mkdir: false,
            }
        }
    }

    impl TsmFs for FakeTsm {
        fn create_dir(&self, p: &Path) -> std::io::Result<()> {
            if self.fail_mkdir {
                return Err(std::io::Error::from_raw_os_error(12)); // ENOMEM, as a failing device
            }
            self.dirs.lock().unwrap().push(p.to_path_buf());
            let mut f = self.files.lock().unwrap();
            f.insert(p.join("provider"), b"sev_guest\n".to_vec());
            f.insert(p.join("generation"), b"0\n".to_vec());
            Ok(())
        }
        fn remove_dir(&self, p: &Path) -> std::io::Result<()> {
            self.dirs.lock().unwrap().retain(|d| d != p);
            self.files.lock().unwrap().retain(|k, _| !k.starts_with(p));
            Ok(())
        }
        fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
            if self.racing_writer && p.ends_with("auxblob") {
                let g = p.with_file_name("generation");
                self.files.lock().unwrap().insert(g, b"7\n".to_vec());
            }
            self.files.lock().unwrap().get(p).cloned().ok_or_else(|| std::io::Error::from_raw_os_error(2))
        }
        fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
            let mut f = self.files.lock().unwrap();
            if p.ends_with("inblob") {
                let rd: [u8; 64] = data.try_into().map_err(|_| std::io::Error::from_raw_os_error(22))?;
                let mut report = self.platform.report(&SnpReportRequest::new(rd)).unwrap();
                if self.truncate_outblob {
                    report.truncate(1000);
                }
                let dir = p.parent().unwrap();
                f.insert(dir.join("outblob"), report);
                f.insert(dir.join("auxblob"), self.platform.cert_table());
                let g: u64 = String::from_utf8_lossy(&f[&dir.join("generation")]).trim().parse().unwrap();
                f.insert(dir.join("generation"), format!("{}\n", g + 1).into_bytes());
            }
            f.insert(p.to_path_buf(), data.to_vec());
            Ok(())
        }
    }

    fn platform() -> Arc<EmulatedSnp> {
        static P: std::sync::OnceLock<Arc<EmulatedSnp>> = std::sync::OnceLock::new();
        P.get_or_init(|| Arc::new(EmulatedSnp::generate(Product::Milan).unwrap())).clone()
    }

    #[test]
    fn reports_through_configfs_and_cleans_up() {
        let fake = Arc::new(FakeTsm::new(platform()));
        let a = TsmAttester::probe(fake.clone(), "/tsm").unwrap();
        assert_eq!(a.tee(), Tee::Snp);
        let ev = a.evidence(&[0xab; 48]).unwrap();
        let report = STANDARD.decode(ev["report"].as_str().unwrap()).unwrap();
        let parsed = cloister_evidence::snp::AttestationReport::from_bytes(&report).unwrap();
        assert_eq!(&parsed.report_data.0[..48], &[0xab; 48]);
        assert_eq!(parsed.report_data.0[48..], [0; 16]);
        assert!(ev.get("cert_table").is_some());
        assert!(fake.dirs.lock().unwrap().is_empty(), "report objects must be removed");
    }

    #[test]
    fn device_faults_are_clear_errors() {
        let mut f = FakeTsm::new(platform());
        f.truncate_outblob = true;
        let a = TsmAttester::probe(Arc::new(f), "/tsm").unwrap();
        let e = a.evidence(&[1; 48]).unwrap_err().to_string();
        assert!(e.contains("1000 bytes"), "{e}");

        let mut f = FakeTsm::new(platform());
        f.racing_writer = true;
        let a = TsmAttester::probe(Arc::new(f), "/tsm").unwrap();
        let e = a.evidence(&[1; 48]).unwrap_err().to_string();
        assert!(e.contains("another writer"), "{e}");

        let mut f = FakeTsm::new(platform());
        f.fail_mkdir = true;
        let e = TsmAttester::probe(Arc::new(f), "/tsm").unwrap_err().to_string();
        assert!(e.contains("cannot create"), "{e}");
    }

    #[test]
    fn no_configfs_here_is_reported() {
        if Path::new(TSM_REPORT_ROOT).is_dir() {
            return; // a real TEE guest
        }
        let e = TsmAttester::detect().unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
