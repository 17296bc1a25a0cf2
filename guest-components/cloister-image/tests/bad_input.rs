//! Bad input: each case gives a precise error, leaves no rootfs or temporary directory behind and
//! writes nothing outside the destination.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloister_image::{Digest, ImageError, PullOptions, Puller, Reference, Registry, RegistryOptions};
use common::hostile::{Answer, CuttingProxy, Hostile};
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn fast_opts(host: &str) -> RegistryOptions {
    RegistryOptions {
        insecure_http_hosts: vec![host.to_owned()],
        read_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_secs(2),
        retries: 2,
        backoff: Duration::from_millis(20),
        ..RegistryOptions::default()
    }
}

fn pull(host: &str, repo_tag: &str, dest: &Path) -> Result<cloister_image::PulledImage, ImageError> {
    let p = Puller::new(Registry::new(fast_opts(host)).unwrap(), PullOptions::default());
    rt().block_on(p.pull(&Reference::parse(&format!("{host}/{repo_tag}")).unwrap(), dest))
}

/// Nothing but `allowed` exists in `dir` (no rootfs, no `.cloister-*` leftovers).
fn assert_clean(dir: &Path, allowed: &[&str]) {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_577_836_800);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn tampered_blob_and_wrong_diff_id_are_refused() {
    if skip_without(&["skopeo", "docker-registry", "gzip"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start();
    let tar = raw_tar(&[("hello.txt", tar::EntryType::Regular, b"hello\n", None)]);
    let layout = work.path().join("oci");
    write_layout(&layout, "v1", &[(tar.clone(), Comp::Gzip)], "amd64");
    reg.push(&layout, "v1", "demo/t:v1", &[]);

    // Flip one byte of the stored layer blob: the registry serves it, the guest refuses it.
    let gz = compress(&tar, Comp::Gzip);
    let blob = reg.blob_path(&sha256_hex(&gz));
    let mut data = fs::read(&blob).unwrap();
    // In the gzip trailer's CRC: the decompressor notices too, but the digest is the root cause.
    let last = data.len() - 6;
    data[last] ^= 1;
    fs::write(&blob, &data).unwrap();
    let out = work.path().join("rootfs");
    let err = pull(&reg.host, "demo/t:v1", &out).unwrap_err();
    assert!(matches!(&err, ImageError::DigestMismatch { what, .. } if what.starts_with("layer")), "{err}");
    assert_clean(work.path(), &["oci"]);

    // A config whose diff_id does not match the layer's uncompressed content.
    let tar = raw_tar(&[("other.txt", tar::EntryType::Regular, b"other\n", None)]);
    let layout2 = work.path().join("oci2");
    write_layout(&layout2, "v2", &[(tar.clone(), Comp::Gzip)], "amd64");
    let idx: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(layout2.join("index.json")).unwrap()).unwrap();
    let mh = idx["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let manifest = fs::read_to_string(layout2.join("blobs/sha256").join(&mh)).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let ch = m["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let config = fs::read_to_string(layout2.join("blobs/sha256").join(&ch)).unwrap();
    let bad_config = config.replace(&sha256_hex(&tar), &"0".repeat(64));
    let bch = sha256_hex(bad_config.as_bytes());
    fs::write(layout2.join("blobs/sha256").join(&bch), &bad_config).unwrap();
    let bad_manifest = manifest
        .replace(&ch, &bch)
        .replace(&format!("\"size\":{}", config.len()), &format!("\"size\":{}", bad_config.len()));
    let bmh = sha256_hex(bad_manifest.as_bytes());
    fs::write(layout2.join("blobs/sha256").join(&bmh), &bad_manifest).unwrap();
    let index = fs::read_to_string(layout2.join("index.json"))
        .unwrap()
        .replace(&mh, &bmh)
        .replace(&format!("\"size\":{}", manifest.len()), &format!("\"size\":{}", bad_manifest.len()));
    fs::write(layout2.join("index.json"), index).unwrap();
    reg.push(&layout2, "v2", "demo/t:v2", &[]);
    let err = pull(&reg.host, "demo/t:v2", &out).unwrap_err();
    assert!(matches!(&err, ImageError::DigestMismatch { what, .. } if what.contains("diff_id")), "{err}");
    assert_clean(work.path(), &["oci", "oci2"]);
}

#[test]
fn path_escapes_are_refused_and_nothing_is_written_outside() {
    if skip_without(&["skopeo", "docker-registry", "gzip"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_str = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", raw_tar(&[("../../outside/pwned", tar::EntryType::Regular, b"x", None)])),
        (
            "abs-symlink",
            raw_tar(&[
                ("esc", tar::EntryType::Symlink, b"", Some(&outside_str)),
                ("esc/pwned", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        (
            "rel-symlink",
            raw_tar(&[
                ("d/", tar::EntryType::Directory, b"", None),
                ("d/esc", tar::EntryType::Symlink, b"", Some("../../../outside")),
                ("d/esc/pwned", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        ("hardlink", raw_tar(&[("h", tar::EntryType::Link, b"", Some("../../outside/x"))])),
        (
            "overlay-xattr",
            // A PAX header trying to forge an opaque directory marker.
            {
                let mut b = tar::Builder::new(Vec::new());
                b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])]).unwrap();
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_path("etc/").unwrap();
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
                b.into_inner().unwrap()
            },
        ),
    ];
    for (name, tar) in cases {
        let layout = work.path().join(format!("oci-{name}"));
        write_layout(&layout, name, &[(tar, Comp::Gzip)], "amd64");
        reg.push(&layout, name, &format!("demo/esc:{name}"), &[]);
        let out = work.path().join("rootfs");
        let err = pull(&reg.host, &format!("demo/esc:{name}"), &out).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{name}: {err}");
        assert!(!out.exists(), "{name}: partial rootfs left");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{name}: wrote outside");
        fs::remove_dir_all(&layout).unwrap();
        assert_clean(work.path(), &["outside"]);
    }
}

#[test]
fn hostile_registry_errors_are_precise() {
    let work = tempfile::tempdir().unwrap();
    let layer = compress(&raw_tar(&[("a", tar::EntryType::Regular, b"abc", None)]), Comp::Gzip);
    let ld = Digest::of(&layer);
    let tar_digest = Digest::of(&raw_tar(&[("a", tar::EntryType::Regular, b"abc", None)]));
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{tar_digest}"]}}}}"#);
    let cd = Digest::of(config.as_bytes());
    let config_len = config.len();
    let manifest_with = move |size: i64| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{size}}}]}}"#,
            config_len
        )
    };
    let serve = move |size: i64, mode: &'static str| {
        let manifest = manifest_with(size);
        let (layer, config) = (layer.clone(), config.clone());
        Hostile::start(move |path| {
            let ok = |ct, b: &[u8]| Answer::Body(200, ct, b.to_vec());
            if path == "/v2/" {
                return ok("application/json", b"{}");
            }
            if path.contains("/manifests/") {
                return match mode {
                    "500" => Answer::Body(500, "text/plain", b"internal error".to_vec()),
                    "hang" => Answer::Hang,
                    _ => ok("application/vnd.oci.image.manifest.v1+json", manifest.as_bytes()),
                };
            }
            if path.ends_with(&cd.to_string()) {
                return ok("application/octet-stream", config.as_bytes());
            }
            if path.ends_with(&ld.to_string()) {
                return match mode {
                    "blob-hang" => Answer::Hang,
                    _ => ok("application/octet-stream", &layer),
                };
            }
            Answer::Body(404, "application/json", br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec())
        })
    };
    let out = work.path().join("rootfs");
    let true_size =
        i64::try_from(compress(&raw_tar(&[("a", tar::EntryType::Regular, b"abc", None)]), Comp::Gzip).len()).unwrap();

    // 500s: retried, then reported with status and body.
    let h = serve(true_size, "500");
    let err = pull(&h.host, "demo/x:v1", &out).unwrap_err();
    assert!(
        matches!(&err, ImageError::Status { status: 500, detail, .. } if detail.contains("internal error")),
        "{err}"
    );
    assert_eq!(h.requests.lock().unwrap().iter().filter(|l| l.contains("/manifests/")).count(), 3, "1 + 2 retries");

    // A registry that accepts and never answers: a timeout, not a hang.
    let h = serve(true_size, "hang");
    let t = std::time::Instant::now();
    let err = pull(&h.host, "demo/x:v1", &out).unwrap_err();
    assert!(matches!(err, ImageError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15));

    // Hanging mid-pull (the layer): timeout, and no partial rootfs.
    let h = serve(true_size, "blob-hang");
    let err = pull(&h.host, "demo/x:v1", &out).unwrap_err();
    assert!(matches!(err, ImageError::Timeout { .. }), "{err}");
    assert_clean(work.path(), &[]);

    // A manifest that understates the layer size: cut off as soon as the stream passes it.
    let h = serve(true_size - 5, "ok");
    let err = pull(&h.host, "demo/x:v1", &out).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { more: true, .. }), "{err}");
    // ... or overstates it.
    let h = serve(true_size + 5, "ok");
    let err = pull(&h.host, "demo/x:v1", &out).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { more: false, .. }), "{err}");
    assert_clean(work.path(), &[]);

    // The honest version of the same registry works.
    let h = serve(true_size, "ok");
    pull(&h.host, "demo/x:v1", &out).unwrap();
    assert_eq!(fs::read(out.join("a")).unwrap(), b"abc");
}

#[test]
fn a_broken_download_resumes_with_a_range_request() {
    if skip_without(&["skopeo", "docker-registry", "gzip"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start();
    // 2 MiB of incompressible data so the blob response is large.
    let mut big = vec![0u8; 2 << 20];
    let mut x = 0x1234_5678_9abc_def1u64;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let tar = raw_tar(&[("big.bin", tar::EntryType::Regular, &big, None)]);
    let layout = work.path().join("oci");
    write_layout(&layout, "v1", &[(tar, Comp::Gzip)], "amd64");
    reg.push(&layout, "v1", "demo/big:v1", &[]);
    let proxy = CuttingProxy::start(reg.host.clone(), 512 * 1024);
    let out = work.path().join("rootfs");
    pull(&proxy.host, "demo/big:v1", &out).unwrap();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut one response");
    assert!(proxy.saw_range.load(Ordering::SeqCst), "the retry asked for the rest only");
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), big);
}

#[test]
fn one_bad_layer_among_several_leaves_only_verified_layers() {
    if skip_without(&["skopeo", "docker-registry", "gzip", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start();
    let good = raw_tar(&[("good.txt", tar::EntryType::Regular, b"good\n", None)]);
    let mut big = vec![0u8; 1 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let bad = raw_tar(&[("bad.bin", tar::EntryType::Regular, &big, None)]);
    let third = raw_tar(&[("third.txt", tar::EntryType::Regular, b"third\n", None)]);
    let layout = work.path().join("oci");
    write_layout(&layout, "v1", &[(good, Comp::Gzip), (bad.clone(), Comp::Gzip), (third, Comp::Zstd)], "amd64");
    reg.push(&layout, "v1", "demo/three:v1", &[]);
    let blob = reg.blob_path(&sha256_hex(&compress(&bad, Comp::Gzip)));
    let mut data = fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&blob, &data).unwrap();

    let store = work.path().join("store");
    let p = Puller::new(
        Registry::new(fast_opts(&reg.host)).unwrap(),
        PullOptions { layer_store: Some(store.clone()), ..PullOptions::default() },
    );
    let out = work.path().join("rootfs");
    let err =
        rt().block_on(p.pull(&Reference::parse(&format!("{}/demo/three:v1", reg.host)).unwrap(), &out)).unwrap_err();
    assert!(matches!(&err, ImageError::DigestMismatch { what, .. } if what.starts_with("layer")), "{err}");
    assert!(!out.exists());
    // No partial layer anywhere; only layers that verified completely may stay in the store.
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    for e in fs::read_dir(store.join("layers")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert_ne!(name, sha256_hex(&bad), "the tampered layer must not be in the store");
    }
    assert_clean(work.path(), &["oci", "store"]);
}
