//! The binary with initdata whose key broker cannot be used as configured: it keeps serving
//! and refuses every request with the reason, instead of exiting (the host would only see a
//! guest that never answers). No root needed: nothing is run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use cloister_agent::ttrpc::Code;
use common::{create_req, spawn_binary};

#[tokio::test]
async fn an_unusable_key_broker_in_initdata_refuses_everything_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("allow_all.rego");
    std::fs::write(&policy, cloister_agent::policy::ALLOW_ALL).unwrap();
    // A certificate to pin, but a plain-http URL: the client refuses to drop TLS.
    let initdata = dir.path().join("initdata.toml");
    std::fs::write(
        &initdata,
        "algorithm = \"sha384\"\nversion = \"0.1.0\"\n\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\n\
         url = \"http://127.0.0.1:9\"\nkbs_cert = \"\"\"\n-----BEGIN CERTIFICATE-----\nAAAA\n\
         -----END CERTIFICATE-----\n\"\"\"\n'''\n",
    )
    .unwrap();
    let socket = dir.path().join("agent.sock");
    let (state, images) = (dir.path().join("state"), dir.path().join("images"));
    let args = [
        "--policy".as_ref(),
        policy.as_os_str(),
        "--initdata".as_ref(),
        initdata.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--local-images".as_ref(),
        images.as_os_str(),
        "--cgroup-root".as_ref(),
        dir.path().as_os_str(),
    ];
    let (mut child, c) = spawn_binary(&socket, &args, std::process::Stdio::null()).await;
    let e = c.create_container(&create_req("c1", "busybox", &["/bin/true"], &[])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied.as_i32()), "{e}");
    let text = e.to_string();
    assert!(text.contains("key broker is unusable") && text.contains("refusing to drop TLS"), "{text}");
    // The sandbox can still be torn down.
    c.destroy_sandbox().await.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(st.success(), "{st}");
}
