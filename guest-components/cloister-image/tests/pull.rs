//! Pulls from a real `docker-registry` on loopback, images pushed by real `skopeo`, layers made
//! by GNU tar/gzip/zstd; the unpacked rootfs is compared entry by entry (content, type, mode,
//! owner, xattrs, hard links, mtimes) with the expected tree, and with `umoci unpack`'s result.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use cloister_image::{ImageError, PullOptions, Puller, Reference, Registry, RegistryOptions};
use common::fixture::fixture;
use common::*;

pub fn puller(reg: &TestRegistry, opts: PullOptions) -> Puller {
    let mut ro = RegistryOptions { insecure_http_hosts: vec![reg.host.clone()], ..RegistryOptions::default() };
    if let Some(t) = &reg.tls {
        ro.insecure_http_hosts.clear();
        ro.extra_ca_der.push(t.ca_der.clone());
    }
    Puller::new(Registry::new(ro).unwrap(), opts)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn assert_same_tree(expected: &Path, got: &Path) {
    let d = diff(&describe(expected), &describe(got));
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

#[test]
fn gzip_zstd_and_plain_layers_unpack_to_the_source_tree() {
    if skip_without(&["skopeo", "docker-registry", "zstd", "gzip", "tar"]) {
        return;
    }
    let fx = fixture();
    let reg = TestRegistry::start();
    let rt = rt();
    let none: &[&str] = &[];
    for (tag, comps, extra) in [
        ("gz", [Comp::Gzip, Comp::Gzip], none),
        ("zst", [Comp::Zstd, Comp::Zstd], none),
        ("mixed", [Comp::None, Comp::Zstd], none),
        // Docker schema 2 media types (manifest and rootfs.diff.tar.gzip layers).
        ("docker", [Comp::Gzip, Comp::Gzip], &["--format", "v2s2"][..]),
    ] {
        let layout = fx.dir.path().join(format!("oci-{tag}"));
        write_layout(&layout, tag, &[(tar_dir(&fx.l1), comps[0]), (tar_dir(&fx.l2), comps[1])], "amd64");
        reg.push(&layout, tag, &format!("demo/img:{tag}"), extra);
        let p = puller(&reg, PullOptions::default());
        let out = fx.dir.path().join(format!("rootfs-{tag}"));
        let r = Reference::parse(&format!("docker://{}/demo/img:{tag}", reg.host)).unwrap();
        let pulled = rt.block_on(p.pull(&r, &out)).unwrap();
        assert_eq!(pulled.layers.len(), 2);
        assert!(pulled.layers.iter().all(|l| !l.encrypted && !l.reused));
        assert_same_tree(&fx.expected, &out);
        // No temporary directories left beside the rootfs.
        let leftovers: Vec<_> = fs::read_dir(fx.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cloister"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn agrees_with_umoci() {
    if skip_without(&["skopeo", "docker-registry", "umoci", "gzip", "tar"]) {
        return;
    }
    let fx = fixture();
    let reg = TestRegistry::start();
    let layout = fx.dir.path().join("oci");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    reg.push(&layout, "v1", "demo/umoci:v1", &[]);
    let bundle = fx.dir.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:v1", layout.display())).arg(&bundle));
    let out = fx.dir.path().join("ours");
    let r = Reference::parse(&format!("{}/demo/umoci:v1", reg.host)).unwrap();
    rt().block_on(puller(&reg, PullOptions::default()).pull(&r, &out)).unwrap();
    assert_same_tree(&bundle.join("rootfs"), &out);
}

#[test]
fn index_selects_the_platform_and_tls_basic_auth_works() {
    if skip_without(&["skopeo", "docker-registry", "htpasswd", "gzip", "tar"]) {
        return;
    }
    let fx = fixture();
    let reg = TestRegistry::start_tls_basic("alice", "s3cret");
    let layout = fx.dir.path().join("multi");
    // An arm64 image with only layer 2, and the amd64 image with both.
    write_layout(&layout, "arm", &[(tar_dir(&fx.l2), Comp::Gzip)], "arm64");
    write_layout(&layout, "amd", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    // A multi-platform index referencing both manifests.
    let idx: serde_json::Value = serde_json::from_str(&fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let mut ms = idx["manifests"].as_array().unwrap().clone();
    ms[0]["platform"] = serde_json::json!({"architecture":"arm64","os":"linux"});
    ms[1]["platform"] = serde_json::json!({"architecture":"amd64","os":"linux"});
    for m in ms.iter_mut() {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let index =
        serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":ms})
            .to_string();
    let ih = sha256_hex(index.as_bytes());
    fs::write(layout.join("blobs/sha256").join(&ih), &index).unwrap();
    let top = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":format!("sha256:{ih}"),"size":index.len(),"annotations":{"org.opencontainers.image.ref.name":"multi"}}]});
    fs::write(layout.join("index.json"), top.to_string()).unwrap();
    reg.push(&layout, "multi", "demo/multi:v1", &["--all", "--dest-creds", "alice:s3cret"]);

    let r = Reference::parse(&format!("{}/demo/multi:v1", reg.host)).unwrap();
    // Without credentials: a precise authentication error.
    let out = fx.dir.path().join("noauth");
    let err = rt().block_on(puller(&reg, PullOptions::default()).pull(&r, &out)).unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    assert!(!out.exists());

    let mut ro = RegistryOptions::default();
    ro.extra_ca_der.push(reg.tls.as_ref().unwrap().ca_der.clone());
    ro.credentials.insert(&reg.host, "alice", "s3cret");
    let p = Puller::new(Registry::new(ro).unwrap(), PullOptions::default());
    let out = fx.dir.path().join("amd64");
    let pulled = rt().block_on(p.pull(&r, &out)).unwrap();
    assert_eq!(pulled.manifest_digest.hex(), ih);
    assert_ne!(pulled.image_manifest_digest, pulled.manifest_digest);
    assert_same_tree(&fx.expected, &out);

    // Without the extra CA the certificate is not trusted.
    let mut ro = RegistryOptions { retries: 0, ..RegistryOptions::default() };
    ro.credentials.insert(&reg.host, "alice", "s3cret");
    let p = Puller::new(Registry::new(ro).unwrap(), PullOptions::default());
    let err = rt().block_on(p.pull(&r, &fx.dir.path().join("untrusted"))).unwrap_err();
    assert!(matches!(err, ImageError::Transport { .. }), "{err}");
}

#[test]
fn layer_store_reuses_unpacked_layers() {
    if skip_without(&["skopeo", "docker-registry", "gzip", "tar"]) {
        return;
    }
    let fx = fixture();
    let reg = TestRegistry::start();
    let layout = fx.dir.path().join("oci");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    write_layout(&layout, "v2", &[(tar_dir(&fx.l1), Comp::Gzip)], "amd64");
    reg.push(&layout, "v1", "demo/a:v1", &[]);
    reg.push(&layout, "v2", "demo/b:v2", &[]);
    let store = fx.dir.path().join("store");
    let opts = || PullOptions { layer_store: Some(store.clone()), ..PullOptions::default() };
    let rt = rt();
    let a = rt
        .block_on(
            puller(&reg, opts())
                .pull(&Reference::parse(&format!("{}/demo/a:v1", reg.host)).unwrap(), &fx.dir.path().join("a")),
        )
        .unwrap();
    assert!(a.layers.iter().all(|l| !l.reused));
    let b = rt
        .block_on(
            puller(&reg, opts())
                .pull(&Reference::parse(&format!("{}/demo/b:v2", reg.host)).unwrap(), &fx.dir.path().join("b")),
        )
        .unwrap();
    assert!(b.layers[0].reused, "the base layer comes from the store");
    assert_same_tree(&fx.expected, &fx.dir.path().join("a"));
    assert_same_tree(&fx.l1, &fx.dir.path().join("b"));
    // The store still holds both layers, unchanged by the copies.
    assert_eq!(fs::read_dir(store.join("layers")).unwrap().count(), 2);
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn overlay_mount_of_the_layer_store_matches_the_flat_rootfs() {
    if skip_without(&["skopeo", "docker-registry", "gzip", "tar"]) {
        return;
    }
    let fx = fixture();
    let reg = TestRegistry::start();
    let layout = fx.dir.path().join("oci");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    reg.push(&layout, "v1", "demo/ovl:v1", &[]);
    let store = fx.dir.path().join("store");
    let p = puller(&reg, PullOptions { layer_store: Some(store.clone()), ..PullOptions::default() });
    let r = Reference::parse(&format!("{}/demo/ovl:v1", reg.host)).unwrap();
    let (_, reports, dirs) = rt().block_on(p.pull_layers(&r)).unwrap();
    assert_eq!((reports.len(), dirs.len()), (2, 2));
    let (upper, work, target) = (fx.dir.path().join("upper"), fx.dir.path().join("work"), fx.dir.path().join("merged"));
    for d in [&upper, &work, &target] {
        fs::create_dir(d).unwrap();
    }
    // The kernel's overlayfs is the oracle for the layer format (whiteouts, opaque directories).
    if let Err(e) = cloister_image::overlay::mount_overlay(&dirs, &upper, &work, &target) {
        // Mounting needs CAP_SYS_ADMIN and overlayfs, which a container may not grant.
        eprintln!("skipping: cannot mount overlayfs here: {e}");
        return;
    }
    let got = describe(&target);
    cloister_image::overlay::unmount(&target).unwrap();
    let d = diff(&describe(&fx.expected), &got);
    assert!(d.is_empty(), "overlay view differs:\n{}", d.join("\n"));
}
