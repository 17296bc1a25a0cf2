//! Host-controlled bytes on the agent's channel: a stream of ttRPC frames, the envelope, and
//! every request message the agent decodes (then turned into the policy's JSON input). None
//! may panic, and no frame over the limit may come out.
#![no_main]

use std::sync::OnceLock;

use cloister_agent::proto::*;
use cloister_agent::ttrpc::{FrameError, MAX_FRAME, Request, read_frame};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fn decode_all(b: &[u8]) {
    fn one<M: Message + Default + serde::Serialize>(b: &[u8]) -> Option<M> {
        let m = M::decode(b).ok()?;
        let _ = serde_json::to_value(&m);
        Some(m)
    }
    if let Some(r) = one::<CreateContainerRequest>(b) {
        let _ = image_reference(&r);
        let _ = cloister_agent::agent::valid_id(&r.container_id);
    }
    let _ = one::<StartContainerRequest>(b);
    let _ = one::<ExecProcessRequest>(b);
    let _ = one::<SignalProcessRequest>(b);
    let _ = one::<WaitProcessRequest>(b);
    let _ = one::<ReadStreamRequest>(b);
    let _ = one::<WriteStreamRequest>(b);
    let _ = one::<CloseStdinRequest>(b);
    let _ = one::<RemoveContainerRequest>(b);
    let _ = one::<StatsContainerRequest>(b);
}

fuzz_target!(|data: &[u8]| {
    rt().block_on(async {
        let mut r = data;
        loop {
            match read_frame(&mut r).await {
                Ok(f) => {
                    assert!(f.payload.len() <= MAX_FRAME);
                    if let Ok(req) = Request::decode(&f.payload[..]) {
                        decode_all(&req.payload);
                    }
                }
                Err(e) if e.is_recoverable() => {}
                Err(FrameError::Closed) | Err(_) => break,
            }
        }
    });
    decode_all(data);
});
