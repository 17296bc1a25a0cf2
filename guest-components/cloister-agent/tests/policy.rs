//! Fixture tests of the shipped agent policies: no root, no containers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cloister_agent::AgentPolicy;
use cloister_agent::policy::rule_for;
use cloister_agent::proto::*;
use serde_json::json;

fn create(image: &str, env: &[&str]) -> CreateContainerRequest {
    CreateContainerRequest {
        container_id: "c1".into(),
        storages: vec![Storage { driver: DRIVER_IMAGE_GUEST_PULL.into(), source: image.into(), ..Default::default() }],
        oci: Some(Spec {
            process: Some(Process {
                args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
                env: env.iter().map(|s| s.to_string()).collect(),
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![
                Mount {
                    destination: "/proc".into(),
                    r#type: "proc".into(),
                    source: "proc".into(),
                    ..Default::default()
                },
                Mount { destination: "/dev".into(), r#type: "tmpfs".into(), ..Default::default() },
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn confidential() -> AgentPolicy {
    AgentPolicy::confidential(json!({
        "allowed_images": ["busybox", "registry.example/app@sha256:0123"],
        "allowed_env": ["PATH=/bin:/usr/bin", "GREETING=[a-z]+"],
    }))
    .unwrap()
}

#[test]
fn confidential_allows_the_listed_image_and_env() {
    let p = confidential();
    p.check("CreateContainerRequest", &create("busybox", &["PATH=/bin:/usr/bin", "GREETING=hello"])).unwrap();
    p.check("CreateContainerRequest", &create("registry.example/app@sha256:0123", &[])).unwrap();
    // The image may come from the CRI annotation instead of a storage.
    let mut r = create("busybox", &[]);
    r.storages.clear();
    r.oci.as_mut().unwrap().annotations.insert(ANNOTATION_IMAGE_NAME.into(), "busybox".into());
    p.check("CreateContainerRequest", &r).unwrap();
    for rule in ["StartContainerRequest", "WaitProcessRequest", "SignalProcessRequest", "ReadStreamRequest"] {
        p.check(rule, &StartContainerRequest { container_id: "c1".into() }).unwrap();
    }
}

#[test]
fn confidential_refuses() {
    let p = confidential();
    let deny = |r: &CreateContainerRequest, why: &str| {
        let e = p.check("CreateContainerRequest", r).expect_err(why);
        assert_eq!(e.to_string(), "policy denied CreateContainerRequest", "{why}");
    };
    deny(&create("alpine", &[]), "image not listed");
    deny(&create("busybox:latest", &[]), "references match exactly");
    deny(&create("busybox", &["GREETING=Hello"]), "env value outside the pattern");
    deny(&create("busybox", &["LD_PRELOAD=/x.so"]), "env name not listed");
    deny(&create("busybox", &["PATH=/bin:/usr/bin:/tmp"]), "patterns match whole entries");
    let mut r = create("busybox", &[]);
    r.oci.as_mut().unwrap().mounts.push(Mount {
        destination: "/data".into(),
        r#type: "bind".into(),
        source: "/host".into(),
        ..Default::default()
    });
    deny(&r, "bind mount");
    let mut r = create("busybox", &[]);
    r.storages.push(Storage { driver: "virtio-fs".into(), source: "x".into(), ..Default::default() });
    deny(&r, "host storage");
    let mut r = create("busybox", &[]);
    r.storages.push(Storage { driver: DRIVER_IMAGE_GUEST_PULL.into(), source: "busybox".into(), ..Default::default() });
    deny(&r, "two images");
    let mut r = create("busybox", &[]);
    r.oci.as_mut().unwrap().process.as_mut().unwrap().terminal = true;
    deny(&r, "terminal");
    let mut r = create("busybox", &[]);
    r.sandbox_pidns = true;
    deny(&r, "sandbox pidns");
    let mut r = create("busybox", &[]);
    r.container_id = "../x".into();
    deny(&r, "bad id");
    let mut r = create("busybox", &[]);
    r.oci = None;
    deny(&r, "no spec");

    let e = p.check("ExecProcessRequest", &ExecProcessRequest { container_id: "c1".into(), ..Default::default() });
    assert_eq!(e.unwrap_err().to_string(), "policy denied ExecProcessRequest");
    // A rule the policy does not define refuses.
    assert!(p.check("SetPolicyRequest", &Empty {}).is_err());
}

#[test]
fn confidential_can_pin_commands() {
    let p = AgentPolicy::confidential(json!({
        "allowed_images": ["busybox"],
        "allowed_commands": [["/bin/sh", "-c", "true"], ["/bin/server"]],
    }))
    .unwrap();
    p.check("CreateContainerRequest", &create("busybox", &[])).unwrap();
    let mut r = create("busybox", &[]);
    r.oci.as_mut().unwrap().process.as_mut().unwrap().args = vec!["/bin/sh".into(), "-c".into(), "id".into()];
    assert!(p.check("CreateContainerRequest", &r).is_err());
    r.oci.as_mut().unwrap().process.as_mut().unwrap().args = vec!["/bin/server".into()];
    p.check("CreateContainerRequest", &r).unwrap();
}

#[test]
fn confidential_without_data_refuses_every_image() {
    let p = AgentPolicy::confidential(json!({})).unwrap();
    assert!(p.check("CreateContainerRequest", &create("busybox", &[])).is_err());
}

#[test]
fn allow_all_allows_every_implemented_method() {
    let p = AgentPolicy::allow_all().unwrap();
    for m in [
        "CreateContainer",
        "StartContainer",
        "ExecProcess",
        "WaitProcess",
        "SignalProcess",
        "ReadStdout",
        "ReadStderr",
        "WriteStdin",
        "CloseStdin",
        "RemoveContainer",
        "StatsContainer",
        "DestroySandbox",
    ] {
        let rule = rule_for(m).unwrap();
        p.check(rule, &create("anything", &["LD_PRELOAD=x"])).unwrap();
    }
    assert!(p.check("SetPolicyRequest", &Empty {}).is_err());
}

#[test]
fn broken_policies_are_refused_at_load() {
    assert!(AgentPolicy::new("x", "package policy\ndefault CreateContainerRequest := true", json!({})).is_err());
    assert!(AgentPolicy::new("x", "package agent_policy\nCreateContainerRequest := [", json!({})).is_err());
}
