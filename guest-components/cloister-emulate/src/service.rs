//! The emulated platform-security-processor endpoint (`cloister emulate serve`): the host side
//! of the emulated TEE. It knows what the VM was launched with (the launch measurement computed
//! by the measurements crate, the initdata digest for HOST_DATA) and answers each guest request
//! for a report with exactly those values plus the guest's report data — the guest chooses only
//! REPORT_DATA, as with real hardware.
//!
//! Wire format: one JSON object per line over a byte stream (a unix socket, or the host end of a
//! virtio-serial port). Request `{"report_data": "<hex, ≤ 64 bytes>"}`; reply, as the KBS evidence
//! of the TEE: SNP `{"report": "<base64>", "cert_table": "<base64>"}`, TDX `{"quote": "<base64>"}`;
//! or `{"error": "<why>"}`. Lines longer than [`MAX_LINE`] close the connection.
//!
//! The emulated IBM SE machine answers the Ultravisor's `UVIO_IOCTL_ATT` instead, since SE evidence
//! answers the verifier's encrypted attestation request rather than bare report data: request
//! `{"uv_attest": {"arcb": "<base64>", "user_data": "<hex, ≤ 256 bytes>", "measurement_len": n,
//! "additional_len": m}}`, reply `{"uv": {"measurement": "<base64>", "additional_data": "<base64>",
//! "cuid": "<hex>"}}`. The measured image is the SE header fixed at `emulate init`.
//!
//! The emulated TDX platform reports MRTD (the reference TDVF's build-time measurement) and
//! MRCONFIGID (the initdata digest); it does not model the RTMR extensions TDVF makes for a kernel
//! and command line, so RTMR0..3 are zero.

use std::io::{BufRead, BufReader, Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::snp::{EmulatedSnp, SnpReportRequest};

/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;

/// What the emulated platform reports besides the guest's report data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchState {
    /// MEASUREMENT (the launch digest of what was started).
    pub measurement: [u8; 48],
    /// HOST_DATA (the initdata digest, truncated to 32 bytes).
    pub host_data: [u8; 32],
    /// Guest policy.
    pub policy: u64,
}

/// What the emulated TDX platform reports besides the guest's report data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxLaunchState {
    /// MRTD (the reference TDVF's measurement).
    pub mr_td: [u8; 48],
    /// MRCONFIGID (the initdata digest, fitted to 48 bytes).
    pub mr_config_id: [u8; 48],
}

/// One emulated platform with its launch state: evidence JSON for the guest's report data.
pub trait Endpoint: Send + Sync {
    /// The evidence (`{"report","cert_table"}` or `{"quote"}`), or why not.
    fn evidence(&self, report_data: [u8; 64]) -> Result<Value, String>;

    /// The Ultravisor's answer (`{"uv": …}`) to an SE attestation request; only an SE machine
    /// has one.
    fn uv_attest(&self, request: &UvRequest) -> Result<Value, String> {
        let _ = request;
        Err("this emulated platform is not an IBM SE machine: ask with report_data".into())
    }
}

/// Largest SE attestation request (ARCB) accepted on the wire.
pub const MAX_ARCB: usize = 32 * 1024;

/// One `UVIO_IOCTL_ATT` call, as the guest passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UvRequest {
    /// The attestation request control block, opaque to the guest.
    pub arcb: Vec<u8>,
    /// User data bound into the measurement (the runtime-data digest).
    pub user_data: Vec<u8>,
    /// Size of the measurement buffer.
    pub measurement_len: u32,
    /// Size of the additional-data buffer.
    pub additional_len: u32,
}

impl UvRequest {
    fn to_json(&self) -> Value {
        json!({"uv_attest": {
            "arcb": STANDARD.encode(&self.arcb),
            "user_data": hex::encode(&self.user_data),
            "measurement_len": self.measurement_len,
            "additional_len": self.additional_len,
        }})
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let field = |k: &str| v.get(k).ok_or_else(|| format!("uv_attest has no {k}"));
        let text = |k: &str| field(k)?.as_str().ok_or_else(|| format!("uv_attest {k} is not a string"));
        let len = |k: &str| -> Result<u32, String> {
            field(k)?.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("uv_attest {k} is not a size"))
        };
        let arcb = STANDARD.decode(text("arcb")?).map_err(|e| format!("uv_attest arcb is not base64: {e}"))?;
        if arcb.len() > MAX_ARCB {
            return Err(format!("uv_attest arcb is {} bytes, at most {MAX_ARCB}", arcb.len()));
        }
        let user_data = hex::decode(text("user_data")?).map_err(|e| format!("uv_attest user_data is not hex: {e}"))?;
        Ok(Self { arcb, user_data, measurement_len: len("measurement_len")?, additional_len: len("additional_len")? })
    }
}

/// The emulated IBM SE machine running the image whose header `emulate init` made.
pub struct SeEndpoint {
    /// The machine.
    pub platform: std::sync::Arc<crate::se::EmulatedSe>,
}

impl Endpoint for SeEndpoint {
    fn evidence(&self, _report_data: [u8; 64]) -> Result<Value, String> {
        Err("this emulated platform is an IBM SE machine: it answers the key broker's attestation request (uv_attest), not bare report data".into())
    }

    fn uv_attest(&self, r: &UvRequest) -> Result<Value, String> {
        let a = self
            .platform
            .attest(&r.arcb, &r.user_data, r.measurement_len, r.additional_len)
            .map_err(|e| e.to_string())?;
        Ok(json!({"uv": {
            "measurement": STANDARD.encode(&a.measurement),
            "additional_data": STANDARD.encode(&a.additional_data),
            "cuid": hex::encode(a.config_uid),
        }}))
    }
}

/// The emulated SEV-SNP platform launched with `LaunchState`.
pub struct SnpEndpoint {
    /// The platform.
    pub platform: std::sync::Arc<EmulatedSnp>,
    /// What it reports.
    pub launch: LaunchState,
}

impl Endpoint for SnpEndpoint {
    fn evidence(&self, report_data: [u8; 64]) -> Result<Value, String> {
        let req = SnpReportRequest::new(report_data)
            .with_measurement(self.launch.measurement)
            .with_host_data(self.launch.host_data)
            .with_policy(self.launch.policy);
        let r = self.platform.report(&req).map_err(|e| e.to_string())?;
        Ok(json!({"report": STANDARD.encode(r), "cert_table": STANDARD.encode(self.platform.cert_table())}))
    }
}

/// The emulated TDX platform launched with `TdxLaunchState`.
pub struct TdxEndpoint {
    /// The platform.
    pub platform: std::sync::Arc<crate::tdx::EmulatedTdx>,
    /// What it reports.
    pub launch: TdxLaunchState,
}

impl Endpoint for TdxEndpoint {
    fn evidence(&self, report_data: [u8; 64]) -> Result<Value, String> {
        let mut req = crate::tdx::TdxQuoteRequest::new(report_data);
        req.mr_td = cloister_evidence::tdx::Bytes(self.launch.mr_td);
        req.mr_config_id = cloister_evidence::tdx::Bytes(self.launch.mr_config_id);
        let q = self.platform.quote(&req).map_err(|e| e.to_string())?;
        Ok(json!({"quote": STANDARD.encode(q)}))
    }
}

/// Answers one request line for `endpoint`.
pub fn answer_with(endpoint: &dyn Endpoint, line: &str) -> Value {
    let reply = serde_json::from_str::<Value>(line).map_err(|e| format!("request is not JSON: {e}")).and_then(|v| {
        match v.get("uv_attest") {
            Some(uv) => UvRequest::from_json(uv).and_then(|r| endpoint.uv_attest(&r)),
            None => report_data(&v).and_then(|rd| endpoint.evidence(rd)),
        }
    });
    match reply {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    }
}

fn report_data(v: &Value) -> Result<[u8; 64], String> {
    let hex_rd = v.get("report_data").and_then(Value::as_str).ok_or("request has no report_data string")?;
    let b = hex::decode(hex_rd).map_err(|e| format!("report_data is not hex: {e}"))?;
    if b.len() > 64 {
        return Err(format!("report_data is {} bytes, at most 64", b.len()));
    }
    let mut rd = [0u8; 64];
    rd[..b.len()].copy_from_slice(&b);
    Ok(rd)
}

/// Serves one connection for `endpoint` until it closes or sends an oversized line.
pub fn serve_endpoint<S: Read + Write>(endpoint: &dyn Endpoint, stream: S) -> std::io::Result<()> {
    serve_lines(stream, |line| answer_with(endpoint, line))
}

fn serve_lines<S: Read + Write>(stream: S, answer: impl Fn(&str) -> Value) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request line too long"));
        }
        let reply = answer(String::from_utf8_lossy(&line).trim());
        let w = reader.get_mut();
        w.write_all(reply.to_string().as_bytes())?;
        w.write_all(b"\n")?;
        w.flush()?;
    }
}

/// The guest side: asks an endpoint for a report with `report_data`.
pub fn request<S: Read + Write>(stream: S, report_data: &[u8; 64]) -> Result<Value, String> {
    let v = exchange(stream, &json!({"report_data": hex::encode(report_data)}))?;
    if v.get("report").and_then(Value::as_str).is_none() && v.get("quote").and_then(Value::as_str).is_none() {
        return Err("reply has neither a report nor a quote".into());
    }
    Ok(v)
}

/// The guest side of an SE machine: the Ultravisor's answer to `request`, sizes checked
/// against the buffers the request names.
pub fn uv_request<S: Read + Write>(stream: S, request: &UvRequest) -> Result<crate::se::UvResponse, String> {
    let v = exchange(stream, &request.to_json())?;
    let uv = v.get("uv").ok_or("reply has no uv answer")?;
    let b64 = |k: &str| -> Result<Vec<u8>, String> {
        let t = uv.get(k).and_then(Value::as_str).ok_or_else(|| format!("uv answer has no {k}"))?;
        STANDARD.decode(t).map_err(|e| format!("uv answer {k} is not base64: {e}"))
    };
    let measurement = b64("measurement")?;
    let additional_data = b64("additional_data")?;
    if measurement.len() != request.measurement_len as usize {
        return Err(format!(
            "uv answer has a {}-byte measurement, {} asked",
            measurement.len(),
            request.measurement_len
        ));
    }
    if additional_data.len() > request.additional_len as usize {
        return Err("uv answer has more additional data than asked".into());
    }
    let mut config_uid = cloister_evidence::se::ConfigUid::default();
    let cuid = uv.get("cuid").and_then(Value::as_str).ok_or("uv answer has no cuid")?;
    hex::decode_to_slice(cuid, &mut config_uid).map_err(|e| format!("uv answer cuid: {e}"))?;
    Ok(crate::se::UvResponse { measurement, additional_data, config_uid })
}

/// One request line out, one reply line in; an `{"error"}` reply is the error.
fn exchange<S: Read + Write>(stream: S, request: &Value) -> Result<Value, String> {
    let mut reader = BufReader::new(stream);
    let req = request.to_string();
    let w = reader.get_mut();
    w.write_all(req.as_bytes()).and_then(|()| w.write_all(b"\n")).map_err(|e| format!("sending: {e}"))?;
    let mut line = Vec::new();
    reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(|e| format!("reading: {e}"))?;
    if line.len() > MAX_LINE {
        return Err("reply line too long".into());
    }
    let v: Value = serde_json::from_slice(&line).map_err(|e| format!("reply is not JSON: {e}"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(format!("emulated platform refused: {e}"));
    }
    Ok(v)
}
