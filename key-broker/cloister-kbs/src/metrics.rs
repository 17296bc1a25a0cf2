//! Prometheus counters with trustee's `kbs_*` names, rendered in the text exposition format.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency histogram bucket bounds, seconds (trustee: 0.5 ms … 1 s).
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, f64::INFINITY];

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `kbs_http_requests_total`.
    pub http_requests: AtomicU64,
    /// `kbs_auth_requests_total`.
    pub auth_requests: AtomicU64,
    /// `kbs_auth_successes_total`.
    pub auth_successes: AtomicU64,
    /// `kbs_auth_errors_total`.
    pub auth_errors: AtomicU64,
    /// `kbs_attestation_requests_total`.
    pub attestation_requests: AtomicU64,
    /// `kbs_attestation_successes_total`.
    pub attestation_successes: AtomicU64,
    /// `kbs_attestation_failures_total`.
    pub attestation_failures: AtomicU64,
    /// `kbs_resource_reads_total`.
    pub resource_reads: AtomicU64,
    /// `kbs_resource_writes_total`.
    pub resource_writes: AtomicU64,
    /// `kbs_resource_deletes_total`.
    pub resource_deletes: AtomicU64,
    /// `kbs_policy_evaluations_total`.
    pub policy_evaluations: AtomicU64,
    /// `kbs_policy_approvals_total`.
    pub policy_approvals: AtomicU64,
    /// `kbs_policy_violations_total`.
    pub policy_violations: AtomicU64,
    /// `kbs_policy_errors_total`.
    pub policy_errors: AtomicU64,
    durations: Mutex<([u64; BUCKETS.len()], f64, u64)>,
}

impl Metrics {
    /// Adds one.
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request duration.
    pub fn observe(&self, secs: f64) {
        let mut d = self.durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            d.0[i] += 1;
        }
        d.1 += secs;
        d.2 += 1;
    }

    /// Seconds and number of the request durations observed so far (the histogram's sum and
    /// count): the server's own handling time, without the client and the network.
    pub fn request_durations(&self) -> (f64, u64) {
        let d = self.durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (d.1, d.2)
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# TYPE kbs_build_info gauge");
        let _ = writeln!(
            s,
            "kbs_build_info{{version=\"{}\",implementation=\"cloister-kbs\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let counters: [(&str, &AtomicU64); 14] = [
            ("kbs_http_requests_total", &self.http_requests),
            ("kbs_auth_requests_total", &self.auth_requests),
            ("kbs_auth_successes_total", &self.auth_successes),
            ("kbs_auth_errors_total", &self.auth_errors),
            ("kbs_attestation_requests_total", &self.attestation_requests),
            ("kbs_attestation_successes_total", &self.attestation_successes),
            ("kbs_attestation_failures_total", &self.attestation_failures),
            ("kbs_resource_reads_total", &self.resource_reads),
            ("kbs_resource_writes_total", &self.resource_writes),
            ("kbs_resource_deletes_total", &self.resource_deletes),
            ("kbs_policy_evaluations_total", &self.policy_evaluations),
            ("kbs_policy_approvals_total", &self.policy_approvals),
            ("kbs_policy_violations_total", &self.policy_violations),
            ("kbs_policy_errors_total", &self.policy_errors),
        ];
        for (name, c) in counters {
            let _ = writeln!(s, "# TYPE {name} counter\n{name} {}", c.load(Ordering::Relaxed));
        }
        let d = self.durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(s, "# TYPE kbs_http_request_duration_seconds histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += d.0[i];
            let le = if b.is_infinite() { "+Inf".to_owned() } else { b.to_string() };
            let _ = writeln!(s, "kbs_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(s, "kbs_http_request_duration_seconds_sum {}", d.1);
        let _ = writeln!(s, "kbs_http_request_duration_seconds_count {}", d.2);
        s
    }
}
