//! The binary serving a serial port: a pseudo-terminal stands in for the virtio-serial or
//! `/dev/ttyS1` device (the agent puts a terminal in raw mode). No root needed. (Reopening after
//! the host side closes is not covered: closing a pty's master destroys it.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use cloister_agent::AgentClient;
use cloister_agent::transport::FdStream;
use cloister_agent::ttrpc::Code;
use rustix::pty::OpenptFlags;

fn master() -> (OwnedFd, String) {
    let m = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    rustix::pty::grantpt(&m).unwrap();
    rustix::pty::unlockpt(&m).unwrap();
    let name = rustix::pty::ptsname(&m, Vec::new()).unwrap().into_string().unwrap();
    let flags = rustix::fs::fcntl_getfl(&m).unwrap();
    rustix::fs::fcntl_setfl(&m, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    (m, name)
}

async fn not_found(c: &AgentClient) {
    let e = c.stats_container("nope").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound.as_i32()), "{e}");
}

#[tokio::test]
async fn the_binary_serves_a_serial_port() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("allow_all.rego");
    std::fs::write(&policy, cloister_agent::policy::ALLOW_ALL).unwrap();
    let (m, slave) = master();
    // Keep a slave descriptor open so the pty survives between the agent's reopenings.
    let keep = std::fs::OpenOptions::new().read(true).write(true).open(&slave).unwrap();
    // Raw before anything is written: a terminal in its default mode would echo the request
    // back to the host before the agent has opened the port (the agent also sets raw mode).
    let mut t = rustix::termios::tcgetattr(&keep).unwrap();
    t.make_raw();
    rustix::termios::tcsetattr(&keep, rustix::termios::OptionalActions::Now, &t).unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloister-agent"))
        .args(["--serial", &slave, "--policy"])
        .arg(&policy)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--local-images")
        .arg(dir.path())
        .arg("--cgroup-root")
        .arg(dir.path())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = AgentClient::new(FdStream::new(m).unwrap()).with_timeout(Some(Duration::from_secs(20)));
    // The agent may not have opened the port yet: the first answer can take a moment.
    not_found(&c).await;
    // Many calls in a row, and large ones, through the 4 KiB pty buffer.
    for _ in 0..20 {
        not_found(&c).await;
    }
    let big = c.write_stdin("nope", "", &vec![0xAB; 1 << 20]).await.unwrap_err();
    assert_eq!(big.code(), Some(Code::NotFound.as_i32()), "{big}");
    assert!(agent.try_wait().unwrap().is_none(), "the agent is still running");
}
