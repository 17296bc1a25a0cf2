//! A throw-away Debian `docker-registry` on loopback, and one-layer OCI layouts to push to it.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A running `docker-registry` (killed on drop).
#[derive(Debug)]
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts one storing under `dir/reg` on a free loopback port.
    pub fn start(dir: &Path) -> std::io::Result<Registry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host = format!("127.0.0.1:{port}");
        fs::write(
            dir.join("reg.yml"),
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {host}}}\n",
                dir.join("reg").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("reg.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let reg = Registry { child, host };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("docker-registry did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }
}

/// Writes a one-layer OCI layout of the directory `src` (GNU tar + gzip) with tag `v1`.
pub fn layout_of(src: &Path, layout: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tar = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(src)
        .args(["-cf", "-", "."])
        .output()?
        .stdout;
    let mut gz = Command::new("gzip").args(["-n", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    // Feed gzip from another thread: it blocks on a full stdout pipe while we would block on its
    // full stdin.
    let mut stdin = gz.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
    let feeder = {
        let tar = tar.clone();
        std::thread::spawn(move || stdin.write_all(&tar))
    };
    let gz = gz.wait_with_output()?.stdout;
    feeder.join().map_err(|_| std::io::Error::other("gzip feeder panicked"))??;
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let put = |b: &[u8]| -> std::io::Result<String> {
        let h = sha(b);
        fs::write(blobs.join(&h), b)?;
        Ok(h)
    };
    let lh = put(&gz)?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        sha(&tar)
    );
    let ch = put(config.as_bytes())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{lh}","size":{}}}]}}"#,
        config.len(),
        gz.len()
    );
    let mh = put(manifest.as_bytes())?;
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
}
