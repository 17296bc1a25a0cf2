//! The guest pulls the image itself: a busybox image pushed by `skopeo` to a real
//! `docker-registry` on loopback, pulled by the agent's Puller-backed image provider into the
//! container's own rootfs, then run. Needs root, busybox-static, skopeo and docker-registry
//! (skipped without them, required under CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_agent::image::PullerImages;
use cloister_agent::ttrpc::Code;
use cloister_agent::{Agent, AgentClient, AgentPolicy, Runner, RunnerConfig};
use common::*;
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Registry {
    _dir: tempfile::TempDir,
    host: String,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp:\n  addr: {host}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { _dir: dir, host, child }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// An OCI layout holding `rootfs` as one gzip layer, tagged `tag`.
fn oci_layout(rootfs: &Path, layout: &Path, tag: &str) {
    let tar = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut gz = Command::new("gzip").args(["-n", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = gz.stdin.take().unwrap();
    let data = tar.stdout.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let layer = gz.wait_with_output().unwrap().stdout;
    writer.join().unwrap().unwrap();

    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha256(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        (h, b.len())
    };
    let (layer_hash, layer_len) = put(&layer);
    let config = json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&tar.stdout))]},
    })
    .to_string();
    let (config_hash, config_len) = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hash}"), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{layer_hash}"), "size": layer_len}],
    })
    .to_string();
    let (manifest_hash, manifest_len) = put(manifest.as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hash}"),
            "size": manifest_len,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_pulls_and_runs_an_allowed_image() {
    if skip() {
        return;
    }
    let ci = std::env::var_os("CI").is_some();
    for tool in ["skopeo", "docker-registry", "tar", "gzip"] {
        if !have(tool) {
            assert!(!ci, "{tool} is required under CI");
            eprintln!("skipping: {tool} not found (apt-get install skopeo docker-registry)");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_image(&dir.path().join("src"));
    std::fs::write(rootfs.join("etc/motd"), "pulled by the guest\n").unwrap();
    let layout = dir.path().join("layout");
    oci_layout(&rootfs, &layout, "1");
    let reg = start_registry();
    let image = format!("{}/test/busybox:1", reg.host);
    let status = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{image}"))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy failed");

    let registry = cloister_image::Registry::new(cloister_image::RegistryOptions {
        insecure_http_hosts: vec![reg.host.clone()],
        ..Default::default()
    })
    .unwrap();
    let puller = cloister_image::Puller::new(registry, cloister_image::PullOptions::default());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let runner = Runner::new(RunnerConfig {
        init_binary: PathBuf::from(env!("CARGO_BIN_EXE_cloister-agent")),
        cgroup_root: dir.path().join("no-cgroups"),
        ..Default::default()
    });
    let policy = AgentPolicy::confidential(json!({ "allowed_images": [image], "allowed_env": ["PATH=/bin"] })).unwrap();
    let agent = Arc::new(Agent::new(policy, runner, Box::new(PullerImages::new(puller)), state.clone()));
    let socket = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(cloister_agent::server::serve_unix(agent, listener));
    let c = AgentClient::connect_unix(&socket).await.unwrap().with_timeout(Some(Duration::from_secs(60)));

    c.create_container(&create_req("p1", &image, &["/bin/sh", "-c", "cat /etc/motd; echo $$"], &["PATH=/bin"]))
        .await
        .unwrap();
    // The rootfs is the container's own copy, under the state directory.
    assert!(state.join("containers/p1/rootfs/bin/busybox").is_file());
    c.start_container("p1").await.unwrap();
    assert_eq!(c.wait_process("p1", "").await.unwrap(), 0);
    assert_eq!(output(&c, "p1", "").await.0, "pulled by the guest\n1\n");
    c.remove_container("p1", 10).await.unwrap();
    assert!(!state.join("containers/p1").exists());

    // The same registry, an image the policy does not list: refused before any pull.
    let other = format!("{}/test/busybox:2", reg.host);
    let e = c.create_container(&create_req("p2", &other, &["true"], &["PATH=/bin"])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied.as_i32()), "{e}");
    server.abort();
}
