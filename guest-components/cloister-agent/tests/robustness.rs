//! Hostile input on the wire: the agent answers with an error status and keeps serving. No
//! containers are created, so this runs without root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use cloister_agent::proto::*;
use cloister_agent::ttrpc::{self, Code, Request, Response, TYPE_REQUEST, TYPE_RESPONSE};
use cloister_agent::{AgentClient, AgentPolicy};
use common::*;
use prost::Message;
use tokio::io::AsyncWriteExt;

async fn raw_call(s: &mut tokio::net::UnixStream, id: u32, kind: u8, payload: &[u8]) -> Response {
    ttrpc::write_frame(s, id, kind, payload).await.unwrap();
    let f = tokio::time::timeout(Duration::from_secs(10), ttrpc::read_frame(s)).await.unwrap().unwrap();
    assert_eq!((f.header.stream_id, f.header.kind), (id, TYPE_RESPONSE));
    Response::decode(&f.payload[..]).unwrap()
}

fn envelope(service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    Request { service: service.into(), method: method.into(), payload, timeout_nano: 0, metadata: vec![] }
        .encode_to_vec()
}

fn code(r: &Response) -> i32 {
    r.status.as_ref().map_or(0, |s| s.code)
}

#[tokio::test]
async fn bad_requests_get_error_statuses() {
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let mut s = tokio::net::UnixStream::connect(&agent.socket).await.unwrap();
    let r = raw_call(&mut s, 1, TYPE_REQUEST, b"\xff\xff\xff\xff").await;
    assert_eq!(code(&r), Code::InvalidArgument.as_i32());
    let r = raw_call(&mut s, 3, TYPE_REQUEST, &envelope("other.Service", "X", vec![])).await;
    assert_eq!(code(&r), Code::Unimplemented.as_i32());
    let r = raw_call(&mut s, 5, TYPE_REQUEST, &envelope(SERVICE, "SetPolicy", vec![])).await;
    assert_eq!(code(&r), Code::Unimplemented.as_i32());
    let r = raw_call(&mut s, 7, TYPE_REQUEST, &envelope(SERVICE, "CreateContainer", vec![0x0a, 0xff])).await;
    assert_eq!(code(&r), Code::InvalidArgument.as_i32());
    // Path traversal in ids never reaches the filesystem.
    let bad = CreateContainerRequest { container_id: "../../etc".into(), ..create_req("x", "busybox", &["true"], &[]) };
    let r = raw_call(&mut s, 9, TYPE_REQUEST, &envelope(SERVICE, "CreateContainer", bad.encode_to_vec())).await;
    assert_eq!(code(&r), Code::InvalidArgument.as_i32());
    let r = raw_call(
        &mut s,
        11,
        TYPE_REQUEST,
        &envelope(
            SERVICE,
            "WaitProcess",
            WaitProcessRequest { container_id: "nope".into(), exec_id: String::new() }.encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(code(&r), Code::NotFound.as_i32());
    // An oversized frame is skipped and answered, and the connection stays usable.
    let mut big = ttrpc::Header { length: (ttrpc::MAX_FRAME + 10) as u32, stream_id: 13, kind: TYPE_REQUEST, flags: 0 }
        .encode()
        .to_vec();
    big.resize(ttrpc::HEADER_LEN + ttrpc::MAX_FRAME + 10, 0);
    s.write_all(&big).await.unwrap();
    let f = ttrpc::read_frame(&mut s).await.unwrap();
    assert_eq!(f.header.stream_id, 13);
    assert_eq!(code(&Response::decode(&f.payload[..]).unwrap()), Code::ResourceExhausted.as_i32());
    // Frames of unknown type are ignored.
    ttrpc::write_frame(&mut s, 15, 9, b"junk").await.unwrap();
    let r = raw_call(
        &mut s,
        17,
        TYPE_REQUEST,
        &envelope(SERVICE, "StatsContainer", StatsContainerRequest { container_id: "nope".into() }.encode_to_vec()),
    )
    .await;
    assert_eq!(code(&r), Code::NotFound.as_i32());
    // A connection cut mid-frame does not disturb the agent.
    s.write_all(&[0, 0, 0, 50, 0, 0, 0, 19, 1, 0, 1, 2]).await.unwrap();
    drop(s);
    let c = agent.client().await;
    assert_eq!(c.wait_process("nope", "").await.unwrap_err().code(), Some(Code::NotFound.as_i32()));
}

#[tokio::test]
async fn confidential_denials_come_before_validation() {
    let agent = TestAgent::start(AgentPolicy::confidential(serde_json::json!({})).unwrap()).await;
    let c = agent.client().await;
    let e = c.exec_process(&exec_req("any", "e", &["sh"])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied.as_i32()));
    assert_eq!(e.to_string(), "agent returned PERMISSION_DENIED (7): policy denied ExecProcessRequest");
    let e = c.create_container(&create_req("c", "busybox", &["true"], &[])).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied.as_i32()));
}

#[tokio::test]
async fn concurrent_calls_are_multiplexed() {
    let agent = TestAgent::start(AgentPolicy::allow_all().unwrap()).await;
    let c = std::sync::Arc::new(agent.client().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.spawn(async move {
            let e = c.stats_container(&format!("c{i}")).await.unwrap_err();
            assert!(e.to_string().contains(&format!("container c{i} not found")), "{e}");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn a_closed_connection_fails_pending_calls() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let c = AgentClient::new(a);
    let call = tokio::spawn(async move { c.wait_process("x", "").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(b);
    let e = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(e, cloister_agent::ClientError::Closed), "{e}");
}
