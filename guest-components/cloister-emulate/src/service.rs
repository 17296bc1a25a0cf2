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
        snp_evidence(&self.platform, &self.launch, report_data)
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
    match parse_request(line).and_then(|rd| endpoint.evidence(rd)) {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    }
}

fn parse_request(line: &str) -> Result<[u8; 64], String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("request is not JSON: {e}"))?;
    let hex_rd = v.get("report_data").and_then(Value::as_str).ok_or("request has no report_data string")?;
    let b = hex::decode(hex_rd).map_err(|e| format!("report_data is not hex: {e}"))?;
    if b.len() > 64 {
        return Err(format!("report_data is {} bytes, at most 64", b.len()));
    }
    let mut rd = [0u8; 64];
    rd[..b.len()].copy_from_slice(&b);
    Ok(rd)
}

/// Answers one request line (SNP).
pub fn answer(platform: &EmulatedSnp, launch: &LaunchState, line: &str) -> Value {
    match parse_request(line).and_then(|rd| snp_evidence(platform, launch, rd)) {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    }
}

fn snp_evidence(platform: &EmulatedSnp, launch: &LaunchState, report_data: [u8; 64]) -> Result<Value, String> {
    let req = SnpReportRequest::new(report_data)
        .with_measurement(launch.measurement)
        .with_host_data(launch.host_data)
        .with_policy(launch.policy);
    let r = platform.report(&req).map_err(|e| e.to_string())?;
    Ok(json!({"report": STANDARD.encode(r), "cert_table": STANDARD.encode(platform.cert_table())}))
}

/// Serves one connection (SNP) until it closes or sends an oversized line.
pub fn serve_connection<S: Read + Write>(
    platform: &EmulatedSnp,
    launch: &LaunchState,
    stream: S,
) -> std::io::Result<()> {
    serve_lines(stream, |line| answer(platform, launch, line))
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
    let mut reader = BufReader::new(stream);
    let req = json!({"report_data": hex::encode(report_data)}).to_string();
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
    if v.get("report").and_then(Value::as_str).is_none() && v.get("quote").and_then(Value::as_str).is_none() {
        return Err("reply has neither a report nor a quote".into());
    }
    Ok(v)
}
