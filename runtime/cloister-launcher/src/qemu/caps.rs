//! What the installed QEMU can do: its version and the QOM object types it can create
//! (`-object help`). A confidential configuration whose object is missing is refused before
//! anything is started: the launcher never falls back to a non-confidential VM.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::TeeKind;
use crate::error::LaunchError;

/// The Debian package that provides a QEMU binary.
pub fn debian_package(binary: &Path) -> &'static str {
    match binary.file_name().and_then(|n| n.to_str()) {
        Some("qemu-system-s390x") => "qemu-system-s390x",
        _ => "qemu-system-x86",
    }
}

/// The first upstream QEMU release that has a confidential object.
pub fn min_qemu_version(object: &str) -> &'static str {
    match object {
        "sev-snp-guest" => "9.1",
        "tdx-guest" => "10.1",
        "s390-pv-guest" => "6.0",
        _ => "?",
    }
}

/// A probed QEMU binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCapabilities {
    /// The binary probed.
    pub binary: PathBuf,
    /// The first line of `--version` (e.g. `QEMU emulator version 7.2.22 (Debian …)`).
    pub version: String,
    /// User-creatable object types listed by `-object help`.
    pub objects: BTreeSet<String>,
}

impl QemuCapabilities {
    /// Runs `BINARY --version` and `BINARY -object help`.
    pub fn probe(binary: &Path) -> Result<Self, LaunchError> {
        let version = run(binary, &["--version"])?;
        let help = run(binary, &["-object", "help"])?;
        Ok(Self::from_outputs(binary, &version, &help))
    }

    /// Parses the outputs of `--version` and `-object help`.
    pub fn from_outputs(binary: &Path, version: &str, object_help: &str) -> Self {
        let objects = object_help
            .lines()
            .filter(|l| l.starts_with(' ') || l.starts_with('\t'))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        QemuCapabilities {
            binary: binary.to_owned(),
            version: version.lines().next().unwrap_or_default().trim().to_owned(),
            objects,
        }
    }

    /// Whether `-object TYPE` is available.
    pub fn has_object(&self, object: &str) -> bool {
        self.objects.contains(object)
    }

    /// Fails with [`LaunchError::MissingConfidentialObject`] when `tee` needs an object this QEMU
    /// lacks.
    pub fn check(&self, tee: &TeeKind) -> Result<(), LaunchError> {
        match tee.required_qemu_object() {
            Some(object) if !self.has_object(object) => Err(LaunchError::MissingConfidentialObject {
                binary: self.binary.clone(),
                version: self.version.clone(),
                object,
                tee: tee.name(),
                min_version: min_qemu_version(object),
            }),
            _ => Ok(()),
        }
    }
}

fn run(binary: &Path, args: &[&str]) -> Result<String, LaunchError> {
    let out = Command::new(binary).args(args).stdin(Stdio::null()).output().map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::PermissionDenied => {
            LaunchError::QemuNotFound { binary: binary.to_owned(), package: debian_package(binary) }
        }
        _ => LaunchError::Probe { binary: binary.to_owned(), detail: format!("running {args:?}: {e}") },
    })?;
    if !out.status.success() {
        return Err(LaunchError::Probe {
            binary: binary.to_owned(),
            detail: format!("{args:?} exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::SnpConfig;

    const QEMU72_HELP: &str =
        "List of user creatable objects:\n  authz-list\n  memory-backend-memfd\n  sev-guest\n  throttle-group\n";

    #[test]
    fn qemu_7_2_lacks_snp() {
        let c = QemuCapabilities::from_outputs(
            Path::new("/usr/bin/qemu-system-x86_64"),
            "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright",
            QEMU72_HELP,
        );
        assert!(c.has_object("sev-guest"));
        assert!(!c.has_object("List"));
        c.check(&TeeKind::None).unwrap();
        let e = c.check(&TeeKind::SevSnp(SnpConfig::default())).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LaunchError::MissingConfidentialObject { object: "sev-snp-guest", .. }));
        assert!(msg.contains("sev-snp-guest") && msg.contains("7.2.22") && msg.contains("9.1"), "{msg}");
        let e = c.check(&TeeKind::Tdx(Default::default())).unwrap_err();
        assert!(matches!(e, LaunchError::MissingConfidentialObject { object: "tdx-guest", .. }));
    }

    #[test]
    fn missing_binary_is_typed() {
        let e = QemuCapabilities::probe(Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
        assert!(matches!(e, LaunchError::QemuNotFound { package: "qemu-system-x86", .. }), "{e}");
    }
}
