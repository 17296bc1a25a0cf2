//! The subset of Kata's `grpc.AgentService` messages (`agent.proto`, `oci.proto`) the agent
//! implements, written by hand with `prost` derives. Tags equal Kata's field numbers, so a Kata
//! runtime's encoding decodes here and the other way round; fields Kata has and Cloister does
//! not act on are left out and skipped by the decoder (the agent never acts on a field it has
//! not decoded, so a policy that sees the decoded request sees everything the agent will use).
//!
//! Every message also serialises to JSON with Kata's proto field names (`container_id`, `OCI`,
//! `Process`, `Args`, …): that JSON is the policy `input`, so Kata-style policies that read
//! `input.OCI.Process.Args` work unchanged. `bytes` fields appear as base64 strings.
//!
//! There are no Cloister-specific fields: the image to run travels as Kata's guest-pull storage
//! (`Storage{driver: "image_guest_pull", source: <image reference>}`), or failing that as the
//! CRI annotation `io.kubernetes.cri.image-name` of the OCI spec (see [`image_reference`]).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use prost::Message;
use serde::Serialize;

/// The ttRPC service name.
pub const SERVICE: &str = "grpc.AgentService";

/// The storage driver naming an image the guest pulls itself (Kata's guest pull).
pub const DRIVER_IMAGE_GUEST_PULL: &str = "image_guest_pull";
/// The CRI annotation naming a container's image.
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

fn as_base64<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Empty {}

/// `grpc.StringUser` (agent.proto: uid=1, gid=2, additionalGids=3).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct StringUser {
    /// User name or id.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// Group name or id.
    #[prost(string, tag = "2")]
    pub gid: String,
    /// Supplementary groups.
    #[prost(string, repeated, tag = "3")]
    #[serde(rename = "additionalGids")]
    pub additional_gids: Vec<String>,
}

/// `grpc.Storage` (agent.proto).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Storage {
    /// Driver, e.g. `image_guest_pull`.
    #[prost(string, tag = "1")]
    pub driver: String,
    /// Driver options.
    #[prost(string, repeated, tag = "2")]
    pub driver_options: Vec<String>,
    /// Source (for guest pull: the image reference).
    #[prost(string, tag = "3")]
    pub source: String,
    /// Filesystem type.
    #[prost(string, tag = "4")]
    pub fstype: String,
    /// Mount options.
    #[prost(string, repeated, tag = "5")]
    pub options: Vec<String>,
    /// Where the storage is mounted in the guest (ignored: the agent chooses).
    #[prost(string, tag = "6")]
    pub mount_point: String,
}

/// `grpc.User` (oci.proto).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    /// User id.
    #[prost(uint32, tag = "1")]
    #[serde(rename = "UID")]
    pub uid: u32,
    /// Group id.
    #[prost(uint32, tag = "2")]
    #[serde(rename = "GID")]
    pub gid: u32,
    /// Supplementary group ids.
    #[prost(uint32, repeated, tag = "3")]
    pub additional_gids: Vec<u32>,
    /// User name (informational).
    #[prost(string, tag = "4")]
    pub username: String,
}

/// `grpc.Process` (oci.proto; Terminal=1, User=3, Args=4, Env=5, Cwd=6, NoNewPrivileges=9).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Process {
    /// A terminal (not supported: must be false).
    #[prost(bool, tag = "1")]
    pub terminal: bool,
    /// User and groups.
    #[prost(message, optional, tag = "3")]
    pub user: Option<User>,
    /// Program and arguments.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    /// `NAME=value` environment.
    #[prost(string, repeated, tag = "5")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[prost(string, tag = "6")]
    pub cwd: String,
    /// `PR_SET_NO_NEW_PRIVS`.
    #[prost(bool, tag = "9")]
    pub no_new_privileges: bool,
}

/// `grpc.Root` (oci.proto).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Root {
    /// Path (ignored: the agent places the rootfs itself).
    #[prost(string, tag = "1")]
    pub path: String,
    /// Mount the rootfs read-only.
    #[prost(bool, tag = "2")]
    pub readonly: bool,
}

/// `grpc.Mount` (oci.proto).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Mount {
    /// Path inside the container.
    #[prost(string, tag = "1")]
    pub destination: String,
    /// Source.
    #[prost(string, tag = "2")]
    pub source: String,
    /// Filesystem type.
    #[prost(string, tag = "3")]
    #[serde(rename = "type")]
    pub r#type: String,
    /// Options.
    #[prost(string, repeated, tag = "4")]
    pub options: Vec<String>,
}

/// `grpc.LinuxMemory` (Limit=1).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxMemory {
    /// Bytes; ≤ 0: none.
    #[prost(int64, tag = "1")]
    pub limit: i64,
}

/// `grpc.LinuxPids` (Limit=1).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxPids {
    /// Processes; ≤ 0: none.
    #[prost(int64, tag = "1")]
    pub limit: i64,
}

/// `grpc.LinuxResources` (Memory=2, Pids=4).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxResources {
    /// Memory limit.
    #[prost(message, optional, tag = "2")]
    pub memory: Option<LinuxMemory>,
    /// Pids limit.
    #[prost(message, optional, tag = "4")]
    pub pids: Option<LinuxPids>,
}

/// `grpc.LinuxNamespace`.
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxNamespace {
    /// Type (`pid`, `network`, …).
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Path of a namespace to join.
    #[prost(string, tag = "2")]
    pub path: String,
}

/// `grpc.Linux` (Resources=4, CgroupsPath=5, Namespaces=6). The agent always creates its own
/// mount/UTS/IPC/PID namespaces and shares the VM's network namespace, whatever `Namespaces`
/// says; the field is decoded so that policies can see it.
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Linux {
    /// cgroup limits.
    #[prost(message, optional, tag = "4")]
    pub resources: Option<LinuxResources>,
    /// cgroup path (ignored: the agent chooses).
    #[prost(string, tag = "5")]
    pub cgroups_path: String,
    /// Namespaces.
    #[prost(message, repeated, tag = "6")]
    pub namespaces: Vec<LinuxNamespace>,
}

/// `grpc.Spec` (oci.proto: Version=1, Process=2, Root=3, Hostname=4, Mounts=5, Annotations=7,
/// Linux=8).
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Spec {
    /// OCI version.
    #[prost(string, tag = "1")]
    pub version: String,
    /// The process.
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
    /// Root.
    #[prost(message, optional, tag = "3")]
    pub root: Option<Root>,
    /// Hostname (UTS namespace).
    #[prost(string, tag = "4")]
    pub hostname: String,
    /// Mounts.
    #[prost(message, repeated, tag = "5")]
    pub mounts: Vec<Mount>,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "7")]
    pub annotations: BTreeMap<String, String>,
    /// Linux settings.
    #[prost(message, optional, tag = "8")]
    pub linux: Option<Linux>,
}

/// `CreateContainerRequest` (container_id=1, exec_id=2, string_user=3, storages=5, OCI=6,
/// sandbox_pidns=7).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct CreateContainerRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id of the init process (defaults to the container id).
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// User by name.
    #[prost(message, optional, tag = "3")]
    pub string_user: Option<StringUser>,
    /// Storages (guest pull carries the image here).
    #[prost(message, repeated, tag = "5")]
    pub storages: Vec<Storage>,
    /// The OCI spec.
    #[prost(message, optional, tag = "6")]
    #[serde(rename = "OCI")]
    pub oci: Option<Spec>,
    /// Join a sandbox-wide PID namespace (not supported: must be false).
    #[prost(bool, tag = "7")]
    pub sandbox_pidns: bool,
}

/// `StartContainerRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct StartContainerRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `RemoveContainerRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct RemoveContainerRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Seconds to wait for the processes to die (0: a default).
    #[prost(uint32, tag = "2")]
    pub timeout: u32,
}

/// `ExecProcessRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct ExecProcessRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// New exec id.
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// User by name.
    #[prost(message, optional, tag = "3")]
    pub string_user: Option<StringUser>,
    /// The process.
    #[prost(message, optional, tag = "4")]
    pub process: Option<Process>,
}

/// `SignalProcessRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct SignalProcessRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id; empty: every process of the container.
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// Signal number.
    #[prost(uint32, tag = "3")]
    pub signal: u32,
}

/// `WaitProcessRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct WaitProcessRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id (empty: the init process).
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `WaitProcessResponse`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct WaitProcessResponse {
    /// Exit code, or 128 + signal.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `StatsContainerRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct StatsContainerRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `CpuUsage` (total_usage=1, usage_in_kernelmode=3, usage_in_usermode=4; nanoseconds).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct CpuUsage {
    /// Total.
    #[prost(uint64, tag = "1")]
    pub total_usage: u64,
    /// System.
    #[prost(uint64, tag = "3")]
    pub usage_in_kernelmode: u64,
    /// User.
    #[prost(uint64, tag = "4")]
    pub usage_in_usermode: u64,
}

/// `CpuStats` (cpu_usage=1).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct CpuStats {
    /// Usage.
    #[prost(message, optional, tag = "1")]
    pub cpu_usage: Option<CpuUsage>,
}

/// `MemoryData`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct MemoryData {
    /// Current usage.
    #[prost(uint64, tag = "1")]
    pub usage: u64,
    /// Peak usage.
    #[prost(uint64, tag = "2")]
    pub max_usage: u64,
    /// Limit hits.
    #[prost(uint64, tag = "3")]
    pub failcnt: u64,
    /// Limit.
    #[prost(uint64, tag = "4")]
    pub limit: u64,
}

/// `MemoryStats` (usage=2).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct MemoryStats {
    /// Usage.
    #[prost(message, optional, tag = "2")]
    pub usage: Option<MemoryData>,
}

/// `PidsStats`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct PidsStats {
    /// Processes now.
    #[prost(uint64, tag = "1")]
    pub current: u64,
    /// Limit (0: none).
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

/// `CgroupStats` (cpu_stats=1, memory_stats=2, pids_stats=3).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct CgroupStats {
    /// CPU.
    #[prost(message, optional, tag = "1")]
    pub cpu_stats: Option<CpuStats>,
    /// Memory.
    #[prost(message, optional, tag = "2")]
    pub memory_stats: Option<MemoryStats>,
    /// Pids.
    #[prost(message, optional, tag = "3")]
    pub pids_stats: Option<PidsStats>,
}

/// `StatsContainerResponse` (cgroup_stats=1; network_stats=2 not sent: the VM's network is
/// shared by all containers).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct StatsContainerResponse {
    /// cgroup statistics (zero when the guest has no cgroup v2).
    #[prost(message, optional, tag = "1")]
    pub cgroup_stats: Option<CgroupStats>,
}

/// `WriteStreamRequest` (WriteStdin).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct WriteStreamRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id (empty: the init process).
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// Bytes for stdin.
    #[prost(bytes = "vec", tag = "3")]
    #[serde(serialize_with = "as_base64")]
    pub data: Vec<u8>,
}

/// `WriteStreamResponse`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct WriteStreamResponse {
    /// Bytes written.
    #[prost(uint32, tag = "1")]
    pub len: u32,
}

/// `ReadStreamRequest` (ReadStdout, ReadStderr).
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct ReadStreamRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id (empty: the init process).
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// Most bytes wanted.
    #[prost(uint32, tag = "3")]
    pub len: u32,
}

/// `ReadStreamResponse`: empty `data` means end of stream.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct ReadStreamResponse {
    /// Output bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(serialize_with = "as_base64")]
    pub data: Vec<u8>,
}

/// `CloseStdinRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct CloseStdinRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Exec id (empty: the init process).
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `DestroySandboxRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct DestroySandboxRequest {}

/// `GetMetricsRequest`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct GetMetricsRequest {}

/// `Metrics`: the agent's metrics in the Prometheus text format.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Metrics {
    /// The exposition text.
    #[prost(string, tag = "1")]
    pub metrics: String,
}

/// The image a `CreateContainerRequest` asks for: the `source` of its `image_guest_pull`
/// storage (exactly one allowed), else the CRI image-name annotation. `Err` names the problem.
pub fn image_reference(req: &CreateContainerRequest) -> Result<&str, String> {
    let mut pulls = req.storages.iter().filter(|s| s.driver == DRIVER_IMAGE_GUEST_PULL);
    match (pulls.next(), pulls.next()) {
        (Some(_), Some(_)) => Err("more than one image_guest_pull storage".into()),
        (Some(s), None) if s.source.is_empty() => Err("an image_guest_pull storage without a source".into()),
        (Some(s), None) => Ok(&s.source),
        (None, _) => req
            .oci
            .as_ref()
            .and_then(|o| o.annotations.get(ANNOTATION_IMAGE_NAME))
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .ok_or_else(|| "no image: neither an image_guest_pull storage nor an image-name annotation".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kata_field_numbers() {
        // CreateContainerRequest{container_id=1, OCI=6{Process=2{Args=4}}}, hand-encoded.
        let r = CreateContainerRequest {
            container_id: "c".into(),
            oci: Some(Spec {
                process: Some(Process { args: vec!["a".into()], ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(r.encode_to_vec(), [0x0a, 1, b'c', 0x32, 5, 0x12, 3, 0x22, 1, b'a']);
        let s = SignalProcessRequest { container_id: "c".into(), exec_id: String::new(), signal: 9 };
        assert_eq!(s.encode_to_vec(), [0x0a, 1, b'c', 0x18, 9]);
        // Unknown fields (e.g. Kata's devices=4) are skipped.
        let mut with_device = vec![0x22, 2, 0x0a, 0];
        with_device.extend_from_slice(&r.encode_to_vec());
        assert_eq!(CreateContainerRequest::decode(&with_device[..]).unwrap(), r);
    }

    #[test]
    fn policy_json_uses_kata_names() {
        let r = CreateContainerRequest {
            container_id: "c".into(),
            oci: Some(Spec {
                process: Some(Process {
                    args: vec!["sh".into()],
                    user: Some(User { uid: 1, ..Default::default() }),
                    ..Default::default()
                }),
                mounts: vec![Mount { destination: "/proc".into(), r#type: "proc".into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["OCI"]["Process"]["Args"][0], "sh");
        assert_eq!(j["OCI"]["Process"]["User"]["UID"], 1);
        assert_eq!(j["OCI"]["Mounts"][0]["type"], "proc");
        let w = serde_json::to_value(WriteStreamRequest { data: b"hi".to_vec(), ..Default::default() }).unwrap();
        assert_eq!(w["data"], "aGk=");
    }

    #[test]
    fn image_reference_sources() {
        let mut r = CreateContainerRequest::default();
        assert!(image_reference(&r).is_err());
        r.oci = Some(Spec::default());
        r.oci.as_mut().unwrap().annotations.insert(ANNOTATION_IMAGE_NAME.into(), "busybox".into());
        assert_eq!(image_reference(&r).unwrap(), "busybox");
        let pull = Storage { driver: DRIVER_IMAGE_GUEST_PULL.into(), source: "alpine".into(), ..Default::default() };
        r.storages.push(pull.clone());
        assert_eq!(image_reference(&r).unwrap(), "alpine");
        r.storages.push(pull);
        assert!(image_reference(&r).is_err());
    }
}
