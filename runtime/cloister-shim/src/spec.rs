//! From the OCI bundle containerd gives the shim (`config.json`) to the agent's
//! `CreateContainerRequest`: the process, hostname, kernel-filesystem mounts, annotations and
//! resource limits go to the guest; nothing from the host's filesystem does. Host bind mounts
//! (and the rootfs containerd unpacked on the host) are dropped: the guest pulls the image
//! itself, by reference, and the agent policy decides whether it may.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use cloister_agent::proto::{
    CreateContainerRequest, DRIVER_IMAGE_GUEST_PULL, Linux, LinuxMemory, LinuxNamespace, LinuxPids, LinuxResources,
    Mount, Process, Root, Spec, Storage, User,
};
use serde_json::Value;

/// CRI's annotation naming the container image.
pub const CRI_IMAGE_ANNOTATION: &str = "io.kubernetes.cri.image-name";
/// CRI's annotation naming the container type (`sandbox` or `container`).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod sandbox a container belongs to.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Longest `config.json` read.
pub const MAX_SPEC: u64 = 4 << 20;

/// Why a bundle cannot be turned into a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `config.json` could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// `config.json` is not a usable OCI runtime spec.
    #[error("OCI spec: {0}")]
    Invalid(String),
}

/// Kernel filesystems the guest can provide itself, by type.
const GUEST_FILESYSTEMS: &[&str] = &["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// Reads `<bundle>/config.json`.
pub fn read_bundle_spec(bundle: &std::path::Path) -> Result<Value, SpecError> {
    use std::io::Read;
    let path = bundle.join("config.json");
    let read = |source| SpecError::Read { path: path.display().to_string(), source };
    let f = std::fs::File::open(&path).map_err(read)?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC + 1).read_to_end(&mut buf).map_err(read)?;
    if buf.len() as u64 > MAX_SPEC {
        return Err(SpecError::Invalid(format!("{} is larger than {MAX_SPEC} bytes", path.display())));
    }
    serde_json::from_slice(&buf).map_err(|e| SpecError::Invalid(format!("{}: {e}", path.display())))
}

/// The spec's annotations.
pub fn annotations(spec: &Value) -> BTreeMap<String, String> {
    spec.get("annotations")
        .and_then(Value::as_object)
        .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn u32_of(v: Option<&Value>) -> Result<u32, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| SpecError::Invalid(format!("{v} is not a 32-bit id"))),
    }
}

/// The process of an OCI spec (`process` of `config.json`, or the `spec` of an exec).
pub fn process(p: &Value) -> Result<Process, SpecError> {
    let user = p.get("user");
    let args = strings(p.get("args"));
    if args.is_empty() {
        return Err(SpecError::Invalid("the process has no args".into()));
    }
    Ok(Process {
        terminal: p.get("terminal").and_then(Value::as_bool).unwrap_or(false),
        user: Some(User {
            uid: u32_of(user.and_then(|u| u.get("uid")))?,
            gid: u32_of(user.and_then(|u| u.get("gid")))?,
            additional_gids: user
                .and_then(|u| u.get("additionalGids"))
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|g| u32_of(Some(g))).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default(),
            username: String::new(),
        }),
        args,
        env: strings(p.get("env")),
        cwd: p.get("cwd").and_then(Value::as_str).unwrap_or("/").to_owned(),
        no_new_privileges: p.get("noNewPrivileges").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The agent request creating container `id` from `spec`, with the guest pulling `image`.
/// Returns the request and the destinations of the mounts that were dropped (host paths).
pub fn create_request(id: &str, spec: &Value, image: &str) -> Result<(CreateContainerRequest, Vec<String>), SpecError> {
    let p = spec.get("process").ok_or_else(|| SpecError::Invalid("no process".into()))?;
    let mut dropped = Vec::new();
    let mut mounts = Vec::new();
    for m in spec.get("mounts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let destination = m.get("destination").and_then(Value::as_str).unwrap_or_default().to_owned();
        let fstype = m.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        if GUEST_FILESYSTEMS.contains(&fstype.as_str()) {
            mounts.push(Mount {
                destination,
                source: m.get("source").and_then(Value::as_str).unwrap_or(&fstype).to_owned(),
                r#type: fstype,
                options: strings(m.get("options")),
            });
        } else {
            dropped.push(destination);
        }
    }
    let linux = spec.get("linux");
    let resources = linux.and_then(|l| l.get("resources"));
    let limit = |section: &str| {
        resources.and_then(|r| r.get(section)).and_then(|s| s.get("limit")).and_then(Value::as_i64).unwrap_or(0)
    };
    let oci = Spec {
        version: spec.get("ociVersion").and_then(Value::as_str).unwrap_or("1.0.2").to_owned(),
        process: Some(process(p)?),
        root: Some(Root {
            path: "rootfs".into(),
            readonly: spec.get("root").and_then(|r| r.get("readonly")).and_then(Value::as_bool).unwrap_or(false),
        }),
        hostname: spec.get("hostname").and_then(Value::as_str).unwrap_or_default().to_owned(),
        mounts,
        annotations: annotations(spec),
        linux: Some(Linux {
            resources: Some(LinuxResources {
                memory: Some(LinuxMemory { limit: limit("memory") }).filter(|m| m.limit > 0),
                pids: Some(LinuxPids { limit: limit("pids") }).filter(|p| p.limit > 0),
            }),
            cgroups_path: String::new(),
            // Namespace types only: a host namespace path means nothing inside the guest.
            namespaces: linux
                .and_then(|l| l.get("namespaces"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.get("type").and_then(Value::as_str))
                        .map(|t| LinuxNamespace { r#type: t.to_owned(), path: String::new() })
                        .collect()
                })
                .unwrap_or_default(),
        }),
    };
    let req = CreateContainerRequest {
        container_id: id.to_owned(),
        storages: vec![Storage {
            driver: DRIVER_IMAGE_GUEST_PULL.into(),
            source: image.to_owned(),
            ..Default::default()
        }],
        oci: Some(oci),
        ..Default::default()
    };
    Ok((req, dropped))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// The shape `ctr run` (containerd 1.6's default Unix spec) produces.
    fn ctr_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
                "args": ["/bin/sh", "-c", "echo hi"], "env": ["PATH=/bin"], "cwd": "/",
                "noNewPrivileges": true},
            "root": {"path": "rootfs"},
            "hostname": "h",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts", "options": ["rbind"]}
            ],
            "annotations": {"io.kubernetes.cri.image-name": "r/app:1"},
            "linux": {"resources": {"memory": {"limit": 1048576}}, "cgroupsPath": "/default/x",
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}]}
        })
    }

    #[test]
    fn maps_a_ctr_spec() {
        let (req, dropped) = create_request("c1", &ctr_spec(), "127.0.0.1:5000/app:1").unwrap();
        assert_eq!(dropped, ["/etc/hosts"]);
        assert_eq!(req.storages[0].source, "127.0.0.1:5000/app:1");
        assert_eq!(req.storages[0].driver, DRIVER_IMAGE_GUEST_PULL);
        let oci = req.oci.unwrap();
        let p = oci.process.unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(p.user.unwrap().additional_gids, [10]);
        assert!(p.no_new_privileges);
        assert_eq!(oci.mounts.iter().map(|m| m.destination.as_str()).collect::<Vec<_>>(), ["/proc", "/dev", "/run"]);
        let linux = oci.linux.unwrap();
        assert_eq!(linux.resources.unwrap().memory.unwrap().limit, 1048576);
        assert!(linux.namespaces.iter().all(|n| n.path.is_empty()));
        assert_eq!(oci.annotations[CRI_IMAGE_ANNOTATION], "r/app:1");
    }

    #[test]
    fn refuses_bad_specs() {
        let mut s = ctr_spec();
        s["process"]["args"] = json!([]);
        assert!(create_request("c", &s, "i").is_err());
        let mut s = ctr_spec();
        s["process"]["user"]["uid"] = json!(-1);
        assert!(create_request("c", &s, "i").is_err());
        assert!(create_request("c", &json!({}), "i").is_err());
    }
}
