//! End to end through `AgentClient` over a UNIX socket: real containers from a busybox rootfs
//! (root and namespaces needed: skipped otherwise, but required under CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use cloister_agent::AgentPolicy;
use cloister_agent::ttrpc::Code;
use common::*;
use serde_json::json;

const PATH: &str = "PATH=/bin";

fn confidential() -> AgentPolicy {
    AgentPolicy::confidential(json!({ "allowed_images": ["busybox"], "allowed_env": ["PATH=/bin", "GREETING=[a-z]+"] }))
        .unwrap()
}

#[tokio::test]
async fn runs_a_container_with_stdout_stderr_and_exit_code() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = agent.client().await;
    let req = create_req("c1", "busybox", &["/bin/sh", "-c", "echo hello; echo err >&2; exit 3"], &[PATH]);
    c.create_container(&req).await.unwrap();
    c.start_container("c1").await.unwrap();
    assert_eq!(c.wait_process("c1", "").await.unwrap(), 3);
    assert_eq!(output(&c, "c1", "").await, ("hello\n".into(), "err\n".into()));
    // Starting twice is refused; removing works once.
    assert_eq!(c.start_container("c1").await.unwrap_err().code(), Some(Code::FailedPrecondition.as_i32()));
    c.remove_container("c1", 10).await.unwrap();
    assert_eq!(c.remove_container("c1", 10).await.unwrap_err().code(), Some(Code::NotFound.as_i32()));
    assert!(!agent.dir.path().join("state/containers/c1").exists());
}

#[tokio::test]
async fn the_container_is_isolated() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = agent.client().await;
    let script = "echo pid=$$; hostname; test -c /dev/null && echo null-ok; \
                  test -e /bin/busybox && echo root-ok; test -e /images || echo no-host-tree; \
                  touch /sys/x 2>/dev/null || echo sys-ro; test -r /proc/self/status && echo proc-ok; \
                  echo $GREETING; cat /proc/1/cmdline | wc -c >/dev/null && echo done";
    let mut req = create_req("iso", "busybox", &["/bin/sh", "-c", script], &[PATH, "GREETING=hi"]);
    req.oci.as_mut().unwrap().hostname = "box".into();
    c.create_container(&req).await.unwrap();
    c.start_container("iso").await.unwrap();
    assert_eq!(c.wait_process("iso", "").await.unwrap(), 0);
    let (out, err) = output(&c, "iso", "").await;
    assert_eq!(out, "pid=1\nbox\nnull-ok\nroot-ok\nno-host-tree\nsys-ro\nproc-ok\nhi\ndone\n", "stderr: {err}");
    c.remove_container("iso", 10).await.unwrap();
}

#[tokio::test]
async fn sigkill_gives_137_and_stdin_works() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = agent.client().await;
    c.create_container(&create_req("sleeper", "busybox", &["sleep", "100"], &[PATH])).await.unwrap();
    c.start_container("sleeper").await.unwrap();
    c.signal_process("sleeper", "", 9).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), c.wait_process("sleeper", "")).await.unwrap().unwrap();
    assert_eq!(status, 137);
    c.remove_container("sleeper", 10).await.unwrap();

    c.create_container(&create_req("cat", "busybox", &["cat"], &[PATH])).await.unwrap();
    c.start_container("cat").await.unwrap();
    assert_eq!(c.write_stdin("cat", "", b"abc").await.unwrap(), 3);
    c.close_stdin("cat", "").await.unwrap();
    assert_eq!(c.wait_process("cat", "").await.unwrap(), 0);
    assert_eq!(output(&c, "cat", "").await.0, "abc");
    let stats = c.stats_container("cat").await.unwrap();
    assert!(stats.cgroup_stats.is_some());
    c.remove_container("cat", 10).await.unwrap();
}

#[tokio::test]
async fn exec_works_under_allow_all() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = agent.client().await;
    c.create_container(&create_req("host", "busybox", &["sleep", "100"], &[PATH])).await.unwrap();
    // Exec before start: the container is not running.
    let early = c.exec_process(&exec_req("host", "e0", &["true"])).await.unwrap_err();
    assert_eq!(early.code(), Some(Code::FailedPrecondition.as_i32()));
    c.start_container("host").await.unwrap();
    let script = "echo in-$(hostname); readlink /proc/1/exe; echo err >&2; exit 5";
    c.exec_process(&exec_req("host", "e1", &["/bin/sh", "-c", script])).await.unwrap();
    assert_eq!(c.wait_process("host", "e1").await.unwrap(), 5);
    let (out, err) = output(&c, "host", "e1").await;
    assert_eq!((out.as_str(), err.as_str()), ("in-host\n/bin/busybox\n", "err\n"));
    // The same exec id cannot be reused while known.
    let dup = c.exec_process(&exec_req("host", "e1", &["true"])).await.unwrap_err();
    assert_eq!(dup.code(), Some(Code::AlreadyExists.as_i32()));
    // An exec that cannot start reports why.
    let missing = c.exec_process(&exec_req("host", "e2", &["/nonexistent"])).await.unwrap_err();
    assert!(missing.to_string().contains("nonexistent"), "{missing}");
    // Removing kills the running container.
    c.remove_container("host", 10).await.unwrap();
}

#[tokio::test]
async fn confidential_policy_refuses_exec_images_and_env() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(confidential()).await;
    let c = agent.client().await;
    let denied = |e: cloister_agent::ClientError, rule: &str| {
        assert_eq!(e.code(), Some(Code::PermissionDenied.as_i32()), "{e}");
        assert!(e.to_string().contains(&format!("policy denied {rule}")), "{e}");
    };
    // Allowed: the listed image and env.
    c.create_container(&create_req("ok", "busybox", &["sleep", "100"], &[PATH, "GREETING=hi"])).await.unwrap();
    c.start_container("ok").await.unwrap();
    denied(c.exec_process(&exec_req("ok", "e1", &["/bin/sh", "-c", "id"])).await.unwrap_err(), "ExecProcessRequest");
    c.signal_process("ok", "", 9).await.unwrap();
    assert_eq!(c.wait_process("ok", "").await.unwrap(), 137);
    c.remove_container("ok", 10).await.unwrap();

    // Refused: an image not listed (even though the guest has it under another name), bad env.
    denied(
        c.create_container(&create_req("img", "busybox:latest", &["true"], &[PATH])).await.unwrap_err(),
        "CreateContainerRequest",
    );
    denied(
        c.create_container(&create_req("env", "busybox", &["true"], &[PATH, "LD_PRELOAD=/tmp/x.so"]))
            .await
            .unwrap_err(),
        "CreateContainerRequest",
    );
    // Nothing was created for the refused requests.
    assert!(!agent.dir.path().join("state/containers/img").exists());
    assert_eq!(c.start_container("env").await.unwrap_err().code(), Some(Code::NotFound.as_i32()));
}

#[tokio::test]
async fn setup_failures_are_reported_and_cleaned_up() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = agent.client().await;
    // A missing program: creation succeeds (exec happens at start), start reports the error.
    c.create_container(&create_req("noprog", "busybox", &["/no/such/program"], &[PATH])).await.unwrap();
    let e = c.start_container("noprog").await.unwrap_err();
    assert!(e.to_string().contains("/no/such/program"), "{e}");
    assert_eq!(c.wait_process("noprog", "").await.unwrap(), 127);
    c.remove_container("noprog", 10).await.unwrap();
    // A missing working directory fails at start too.
    let mut req = create_req("nocwd", "busybox", &["true"], &[PATH]);
    req.oci.as_mut().unwrap().process.as_mut().unwrap().cwd = "/missing".into();
    c.create_container(&req).await.unwrap();
    assert!(c.start_container("nocwd").await.unwrap_err().to_string().contains("chdir"));
    c.remove_container("nocwd", 10).await.unwrap();
    // An unknown image fails creation.
    let e = c.create_container(&create_req("noimg", "nosuchimage", &["true"], &[PATH])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument.as_i32()), "{e}");
    // The id is free again afterwards.
    c.create_container(&create_req("noimg", "busybox", &["true"], &[PATH])).await.unwrap();
    c.remove_container("noimg", 10).await.unwrap();
}

#[tokio::test]
async fn containers_get_a_cgroup_when_there_is_cgroup2() {
    if skip() {
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("skipping: no cgroup v2 hierarchy on this machine");
        return;
    };
    let agent = TestAgent::start_with(AgentPolicy::allow_all().unwrap(), &root).await;
    let parent = agent.cgroup_parent.clone().expect("cgroups in use");
    let c = agent.client().await;
    let mut req = create_req("cg1", "busybox", &["sleep", "100"], &[PATH]);
    let linux = cloister_agent::proto::Linux {
        resources: Some(cloister_agent::proto::LinuxResources {
            pids: Some(cloister_agent::proto::LinuxPids { limit: 50 }),
            memory: None,
        }),
        ..Default::default()
    };
    req.oci.as_mut().unwrap().linux = Some(linux);
    c.create_container(&req).await.unwrap();
    c.start_container("cg1").await.unwrap();
    let cg = parent.join("cg1");
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(!procs.trim().is_empty(), "the container's processes are in its cgroup");
    if cg.join("pids.max").exists() {
        assert_eq!(std::fs::read_to_string(cg.join("pids.max")).unwrap().trim(), "50");
        let stats = c.stats_container("cg1").await.unwrap();
        assert!(stats.cgroup_stats.unwrap().pids_stats.unwrap().current >= 1);
    } else {
        eprintln!("note: the pids controller is not available under {}", root.display());
    }
    c.remove_container("cg1", 10).await.unwrap();
    assert!(!cg.exists(), "the cgroup is removed with the container");
}

#[tokio::test]
async fn a_host_hanging_up_mid_create_leaves_nothing_stuck() {
    if skip() {
        return;
    }
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let req = create_req("hang", "busybox", &["/bin/sh", "-c", "echo again"], &[PATH]);
    for delay_ms in [0, 2, 5, 20] {
        let c = agent.client().await;
        let _ = tokio::time::timeout(Duration::from_millis(delay_ms), c.create_container(&req)).await;
        drop(c);
        // The request is cancelled with the connection (or finished first): either way the id
        // is usable again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = agent.client().await;
        if let Err(e) = c.create_container(&req).await {
            assert_eq!(e.code(), Some(Code::AlreadyExists.as_i32()), "{e}");
            c.remove_container("hang", 10).await.unwrap();
            c.create_container(&req).await.unwrap();
        }
        c.start_container("hang").await.unwrap();
        assert_eq!(c.wait_process("hang", "").await.unwrap(), 0);
        assert_eq!(output(&c, "hang", "").await.0, "again\n");
        c.remove_container("hang", 10).await.unwrap();
    }
}

#[tokio::test]
async fn the_binary_serves_a_unix_socket() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_image(&dir.path().join("images"));
    let policy = dir.path().join("allow_all.rego");
    std::fs::write(&policy, cloister_agent::policy::ALLOW_ALL).unwrap();
    let socket = dir.path().join("agent.sock");
    let state = dir.path().join("state");
    let images = dir.path().join("images");
    let (mut child, c) = spawn_binary(
        &socket,
        &[
            "--policy".as_ref(),
            policy.as_ref(),
            "--state-dir".as_ref(),
            state.as_ref(),
            "--local-images".as_ref(),
            images.as_ref(),
        ],
        std::process::Stdio::inherit(),
    )
    .await;
    c.create_container(&create_req("b1", "busybox", &["/bin/sh", "-c", "echo via-binary"], &[PATH])).await.unwrap();
    c.start_container("b1").await.unwrap();
    assert_eq!(c.wait_process("b1", "").await.unwrap(), 0);
    assert_eq!(output(&c, "b1", "").await.0, "via-binary\n");
    // DestroySandbox removes everything and ends the agent.
    c.destroy_sandbox().await.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(st.success(), "{st}");
}
