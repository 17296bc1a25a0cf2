//! How long the guest's steps take: attestation, key release, image pull (download, digest
//! checks, decryption, unpack) and container creation. Served by `GetMetrics` in the Prometheus
//! text format, so the shim can log a pod's step timings and operators can scrape them as they
//! scrape Kata's agent metrics. Durations and counts only: no names, images or secrets.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// A step the agent times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Attestation to the key broker (evidence, `/auth`, `/attest`), cached tokens excluded.
    Attestation,
    /// One key-encryption key fetched from the key broker (an image layer key's KEK).
    KeyRelease,
    /// One image pull: manifest, layers, digests, decryption, unpack.
    ImagePull,
    /// Rootfs plus the container's namespaces and init process, from the request.
    ContainerCreate,
}

impl Step {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Step::Attestation => "attestation",
            Step::KeyRelease => "key_release",
            Step::ImagePull => "image_pull",
            Step::ContainerCreate => "container_create",
        }
    }

    /// Every step, in label order.
    pub const ALL: [Step; 4] = [Step::Attestation, Step::KeyRelease, Step::ImagePull, Step::ContainerCreate];

    fn from_label(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.label() == s)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    last: f64,
    total: f64,
    count: u64,
}

/// Step timings of this agent (shared by the image providers and the service).
#[derive(Debug, Default)]
pub struct StepMetrics {
    steps: Mutex<BTreeMap<Step, Record>>,
}

impl StepMetrics {
    /// Records one run of `step`.
    pub fn record(&self, step: Step, took: Duration) {
        let mut steps = self.steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = steps.entry(step).or_default();
        r.last = took.as_secs_f64();
        r.total += r.last;
        r.count += 1;
    }

    /// The Prometheus text: `cloister_agent_step_last_seconds`, `…_seconds_total` and
    /// `…_count_total`, labelled by step.
    pub fn prometheus(&self) -> String {
        let steps = self.steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        type Family = (&'static str, &'static str, &'static str, fn(&Record) -> String);
        let families: [Family; 3] = [
            ("cloister_agent_step_last_seconds", "gauge", "Duration of the last run of each step.", |r| {
                r.last.to_string()
            }),
            ("cloister_agent_step_seconds_total", "counter", "Time spent in each step.", |r| r.total.to_string()),
            ("cloister_agent_step_count_total", "counter", "Runs of each step.", |r| r.count.to_string()),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (step, r) in steps.iter() {
                let _ = writeln!(out, "{name}{{step=\"{}\"}} {}", step.label(), value(r));
            }
        }
        out
    }
}

/// The last duration of each step in a metrics text from [`StepMetrics::prometheus`] (what the
/// shim reads back); lines it does not know are skipped.
pub fn last_seconds(text: &str) -> BTreeMap<&'static str, f64> {
    let prefix = "cloister_agent_step_last_seconds{step=\"";
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (label, value) = rest.split_once("\"} ")?;
            let step = Step::from_label(label)?;
            let v: f64 = value.trim().parse().ok()?;
            v.is_finite().then_some((step.label(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn text_round_trip() {
        let m = StepMetrics::default();
        assert_eq!(last_seconds(&m.prometheus()), BTreeMap::new());
        m.record(Step::Attestation, Duration::from_millis(250));
        m.record(Step::ImagePull, Duration::from_millis(100));
        m.record(Step::ImagePull, Duration::from_millis(300));
        let text = m.prometheus();
        assert!(text.contains("# TYPE cloister_agent_step_last_seconds gauge"), "{text}");
        assert!(text.contains("cloister_agent_step_count_total{step=\"image_pull\"} 2"), "{text}");
        assert!(text.contains("cloister_agent_step_seconds_total{step=\"image_pull\"} 0.4"), "{text}");
        let last = last_seconds(&text);
        assert_eq!(last.get("attestation"), Some(&0.25));
        assert_eq!(last.get("image_pull"), Some(&0.3));
        assert_eq!(last.get("key_release"), None);
        // Garbage and unknown steps are skipped.
        assert!(last_seconds("cloister_agent_step_last_seconds{step=\"x\"} 1\nnonsense\n{step=\"").is_empty());
        assert!(last_seconds("cloister_agent_step_last_seconds{step=\"attestation\"} NaN").is_empty());
    }
}
