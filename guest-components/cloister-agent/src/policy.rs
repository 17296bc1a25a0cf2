//! The agent policy: a Rego document in `package agent_policy` with one rule per request type
//! (Kata's names: `CreateContainerRequest`, `ExecProcessRequest`, `ReadStreamRequest`, …),
//! evaluated with the decoded request as `input` before the agent acts on it. Only an explicit
//! `true` allows; an undefined rule, any other value or an evaluation error refuses.
//!
//! `data.policy_data` holds the policy's parameters (allow-lists), from the agent's
//! `--policy-data` JSON (later: initdata). Two policies ship with Cloister:
//! `policies/agent/confidential.rego` (default deny) and `policies/agent/allow_all.rego` (the
//! degenerate, non-confidential path).

#![forbid(unsafe_code)]

use serde::Serialize;
use serde_json::Value as Json;

use cloister_policy::{Policy, PolicyError};

/// The Rego package of agent policies.
pub const PACKAGE: &str = "agent_policy";

/// The shipped confidential policy (default deny, allow-lists in `data.policy_data`).
pub const CONFIDENTIAL: &str = include_str!("../../../policies/agent/confidential.rego");
/// The shipped permissive policy (degenerate, non-confidential path).
pub const ALLOW_ALL: &str = include_str!("../../../policies/agent/allow_all.rego");

/// A refusal, with the rule that refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy denied {rule}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct Denied {
    /// The rule, e.g. `ExecProcessRequest`.
    pub rule: String,
    /// Why, when the policy could not be evaluated.
    pub detail: Option<String>,
}

/// A loaded agent policy and its data.
#[derive(Debug, Clone)]
pub struct AgentPolicy {
    policy: Policy,
    data: Json,
    refusal: Option<String>,
}

impl AgentPolicy {
    /// Loads Rego `source` (which must be `package agent_policy`) with `policy_data` as
    /// `data.policy_data`.
    pub fn new(id: &str, source: &str, policy_data: Json) -> Result<Self, PolicyError> {
        let policy = Policy::in_package(id, PACKAGE, source)?;
        Ok(AgentPolicy { policy, data: serde_json::json!({ "policy_data": policy_data }), refusal: None })
    }

    /// Refuses every request but `DestroySandbox`, each with `reason` (e.g. initdata that does
    /// not match the TEE evidence: the guest must not run anything the host chose).
    pub fn refuse_all(reason: impl Into<String>) -> Result<Self, PolicyError> {
        let source = "package agent_policy\n\ndefault DestroySandboxRequest := true\n";
        let mut p = Self::new("refuse_all", source, Json::Object(Default::default()))?;
        p.refusal = Some(reason.into());
        Ok(p)
    }

    /// The shipped `allow_all` policy.
    pub fn allow_all() -> Result<Self, PolicyError> {
        Self::new("allow_all", ALLOW_ALL, Json::Object(Default::default()))
    }

    /// The shipped `confidential` policy with its allow-lists.
    pub fn confidential(policy_data: Json) -> Result<Self, PolicyError> {
        Self::new("confidential", CONFIDENTIAL, policy_data)
    }

    /// The policy id.
    pub fn id(&self) -> &str {
        self.policy.id()
    }

    /// Evaluates `data.agent_policy.<rule>` on `request`.
    pub fn check<T: Serialize>(&self, rule: &str, request: &T) -> Result<(), Denied> {
        let denied = |detail: Option<String>| Denied { rule: rule.to_owned(), detail };
        if rule.is_empty() || !rule.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(denied(Some("not a rule name".into())));
        }
        if let Some(reason) = &self.refusal
            && rule != "DestroySandboxRequest"
        {
            return Err(denied(Some(reason.clone())));
        }
        let input =
            serde_json::to_value(request).map_err(|e| denied(Some(format!("request not serialisable: {e}"))))?;
        match self.policy.eval_rule(rule, &input, &self.data) {
            Ok(Json::Bool(true)) => Ok(()),
            Ok(other) => {
                tracing::warn!(policy = self.id(), rule, value = %other, "agent policy refused a request");
                Err(denied(None))
            }
            Err(e) => {
                tracing::warn!(policy = self.id(), rule, error = %e, "agent policy failed: refusing");
                Err(denied(Some(e.to_string())))
            }
        }
    }
}

/// The policy rule guarding a `grpc.AgentService` method (Kata's request-type names).
pub fn rule_for(method: &str) -> Option<&'static str> {
    Some(match method {
        "CreateContainer" => "CreateContainerRequest",
        "StartContainer" => "StartContainerRequest",
        "ExecProcess" => "ExecProcessRequest",
        "WaitProcess" => "WaitProcessRequest",
        "SignalProcess" => "SignalProcessRequest",
        "ReadStdout" | "ReadStderr" => "ReadStreamRequest",
        "WriteStdin" => "WriteStreamRequest",
        "CloseStdin" => "CloseStdinRequest",
        "RemoveContainer" => "RemoveContainerRequest",
        "StatsContainer" => "StatsContainerRequest",
        "DestroySandbox" => "DestroySandboxRequest",
        "GetMetrics" => "GetMetricsRequest",
        _ => return None,
    })
}
