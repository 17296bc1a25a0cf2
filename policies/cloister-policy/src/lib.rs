//! Cloister's Rego policies and a small wrapper around the regorus engine that evaluates them.
//!
//! Policies are plain Rego (`package policy`) evaluated with [regorus]: attestation-appraisal
//! policies produce AR4SI trust-vector values from TEE claims and reference values; resource
//! policies decide `data.policy.allow` for a resource request exactly as trustee evaluates them
//! (input = the token's claims, data = `{"plugin", "resource-path", "query"}`), so trustee's
//! sample policies run unchanged. The policies shipped with Cloister are embedded ([`builtin`]).
//!
//! **What it trusts:** the policy text it is given (policies are the administrator's decisions).
//! Inputs are untrusted JSON: evaluation is bounded by regorus' execution limits, and anything
//! other than an explicit `true` from an `allow` rule is a denial.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value as Json;

/// Why a policy could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The Rego text does not parse or compile.
    #[error("policy '{id}' does not compile: {message}")]
    Compile {
        /// Policy id.
        id: String,
        /// The engine's message, on one line.
        message: String,
    },
    /// The policy is not in the expected package (`package policy` unless stated otherwise).
    #[error("policy '{id}' must declare `package {package}`")]
    WrongPackage {
        /// Policy id.
        id: String,
        /// The package expected.
        package: String,
    },
    /// Input or data could not be handed to the engine.
    #[error("policy '{id}': invalid {what} JSON: {message}")]
    BadJson {
        /// Policy id.
        id: String,
        /// `input` or `data`.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// Evaluation failed (a builtin error, a conflict, a time limit).
    #[error("policy '{id}' failed evaluating {rule}: {message}")]
    Eval {
        /// Policy id.
        id: String,
        /// The rule.
        rule: String,
        /// The engine's message, on one line.
        message: String,
    },
}

fn one_line(s: impl fmt::Display) -> String {
    s.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An input document converted once to the engine's value type: for evaluating the same input
/// many times (a cached token's claims on every resource request) without converting it again.
#[derive(Clone, Debug)]
pub struct PolicyInput(regorus::Value);

impl PolicyInput {
    /// Converts a JSON input document.
    pub fn new(input: &Json) -> Self {
        Self(regorus::Value::from(input.clone()))
    }
}

/// A compiled-checked Rego policy in `package policy`.
#[derive(Clone)]
pub struct Policy {
    id: String,
    source: String,
    /// The Rego package rules are read from (`policy` unless built with [`Policy::in_package`]).
    package: String,
    engine: regorus::Engine,
    /// Engines already prepared (rule analysis, scheduling) for a given `data` document, keyed
    /// by its exact JSON text: regorus re-analyses the whole policy whenever data changes, which
    /// costs far more than the evaluation itself. Bounded; cleared when full.
    prepared: Arc<Mutex<HashMap<String, regorus::Engine>>>,
    /// Rule paths regorus said the policy does not define. That depends on the policy text
    /// only, so each is learnt once: regorus' error (an `anyhow` error, which captures a
    /// backtrace when `RUST_BACKTRACE` is set) is not built again on every evaluation.
    undefined: Arc<Mutex<HashSet<String>>>,
    /// Whether the policy's decisions depend on its input and data only: no clock, no
    /// randomness, no runtime environment (see [`NONDETERMINISTIC`]).
    deterministic: bool,
    /// Approvals already computed, by the caller's key for (input, data) — see
    /// [`Policy::allows_memo`]. Bounded; cleared when full. Denials are never remembered.
    approved: Arc<Mutex<HashSet<[u8; 32]>>>,
}

/// Most prepared engines kept per policy.
const PREPARED_CAPACITY: usize = 256;

/// Most remembered approvals per policy (32 bytes each).
const APPROVED_CAPACITY: usize = 65_536;

/// Text that makes a policy's decisions depend on more than input and data: Rego builtins
/// reading the clock, randomness or the environment. A policy mentioning any of them
/// (anywhere, comments included: a false alarm only costs speed) is evaluated every time.
pub const NONDETERMINISTIC: &[&str] = &["now_ns", "rand.", "uuid.", "opa.runtime", "http.send", "net."];

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("id", &self.id).field("len", &self.source.len()).finish()
    }
}

impl Policy {
    /// Parses `source`; errors name the policy and the problem.
    pub fn new(id: impl Into<String>, source: impl Into<String>) -> Result<Self, PolicyError> {
        Self::with_modules(id, source, &[])
    }

    /// Parses `source` together with helper modules of the same package (e.g. builtins written
    /// in Rego). Every module must be `package policy`.
    pub fn with_modules(
        id: impl Into<String>,
        source: impl Into<String>,
        helpers: &[(&str, &str)],
    ) -> Result<Self, PolicyError> {
        Self::build(id.into(), "policy", source.into(), helpers)
    }

    /// Parses `source`, which must declare `package <package>` (e.g. `agent_policy` for the
    /// guest agent's Kata-compatible policies); rules are then read from `data.<package>`.
    pub fn in_package(id: impl Into<String>, package: &str, source: impl Into<String>) -> Result<Self, PolicyError> {
        let id = id.into();
        if package.is_empty() || !package.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PolicyError::WrongPackage { id, package: package.to_owned() });
        }
        Self::build(id, package, source.into(), &[])
    }

    fn build(id: String, want: &str, source: String, helpers: &[(&str, &str)]) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        let modules = std::iter::once((format!("{id}.rego"), source.clone()))
            .chain(helpers.iter().map(|(n, s)| (format!("{n}.rego"), (*s).to_owned())));
        for (name, text) in modules {
            let declared = engine
                .add_policy(name, text)
                .map_err(|e| PolicyError::Compile { id: id.clone(), message: one_line(e) })?;
            if declared.strip_prefix("data.") != Some(want) {
                return Err(PolicyError::WrongPackage { id, package: want.to_owned() });
            }
        }
        let deterministic = std::iter::once(source.as_str())
            .chain(helpers.iter().map(|(_, s)| *s))
            .all(|text| !NONDETERMINISTIC.iter().any(|b| text.contains(b)));
        Ok(Policy {
            deterministic,
            approved: Arc::new(Mutex::new(HashSet::new())),
            id,
            source,
            package: want.to_owned(),
            engine,
            prepared: Arc::new(Mutex::new(HashMap::new())),
            undefined: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The policy id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Rego text.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn engine_with_input(&self, input: &PolicyInput, data: &Json) -> Result<regorus::Engine, PolicyError> {
        let bad = |what, e: anyhow_like::E| PolicyError::BadJson { id: self.id.clone(), what, message: e.0 };
        let key = data.to_string();
        let cached = self.prepared.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let mut engine = match cached {
            Some(e) => e,
            None => {
                let mut e = self.engine.clone();
                e.add_data(regorus::Value::from(data.clone())).map_err(|err| bad("data", err.into()))?;
                // Prepare once (a trivial query, no input) and keep that engine for this data.
                e.eval_query("true".to_owned(), false).map_err(|err| bad("data", err.into()))?;
                let mut cache = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= PREPARED_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, e.clone());
                e
            }
        };
        // Setting the input keeps the preparation.
        engine.set_input(input.0.clone());
        Ok(engine)
    }

    /// The value of `data.<package>.<rule>` (JSON `null` when undefined).
    pub fn eval_rule(&self, rule: &str, input: &Json, data: &Json) -> Result<Json, PolicyError> {
        let mut v = self.eval_rules(&[rule.to_owned()], input, data)?;
        Ok(v.pop().unwrap_or(Json::Null))
    }

    /// The values of several rules of `data.<package>` with one input (JSON `null` when undefined).
    pub fn eval_rules(&self, rules: &[String], input: &Json, data: &Json) -> Result<Vec<Json>, PolicyError> {
        self.eval_rules_input(rules, &PolicyInput::new(input), data)
    }

    /// [`Policy::eval_rules`] with an input converted beforehand.
    pub fn eval_rules_input(
        &self,
        rules: &[String],
        input: &PolicyInput,
        data: &Json,
    ) -> Result<Vec<Json>, PolicyError> {
        let mut engine = self.engine_with_input(input, data)?;
        rules
            .iter()
            .map(|rule| {
                let path = format!("data.{}.{rule}", self.package);
                if self.undefined.lock().unwrap_or_else(PoisonError::into_inner).contains(&path) {
                    return Ok(Json::Null);
                }
                let err = |e: String| PolicyError::Eval { id: self.id.clone(), rule: path.clone(), message: e };
                // The rule directly first (about twice as fast as a query: no query to parse).
                // It fails for a rule the policy does not define; the query below then says
                // "undefined" (or gives the evaluation's own error), as it always did.
                match engine.eval_rule(path.clone()) {
                    Ok(regorus::Value::Undefined) => return Ok(Json::Null),
                    Ok(v) => {
                        let text = v.to_json_str().map_err(|e| err(one_line(e)))?;
                        return serde_json::from_str(&text).map_err(|e| err(one_line(e)));
                    }
                    // regorus' word for a rule the policy does not define: undefined, as the
                    // query would say (any other failure takes the query path below).
                    Err(e) if e.to_string().contains("not a valid rule path") => {
                        self.undefined.lock().unwrap_or_else(PoisonError::into_inner).insert(path);
                        return Ok(Json::Null);
                    }
                    Err(_) => {}
                }
                let results = engine.eval_query(path.clone(), false).map_err(|e| err(one_line(e)))?;
                let Some(v) = results.result.first().and_then(|r| r.expressions.first()).map(|e| &e.value) else {
                    return Ok(Json::Null);
                };
                if *v == regorus::Value::Undefined {
                    return Ok(Json::Null);
                }
                let text = v.to_json_str().map_err(|e| err(one_line(e)))?;
                serde_json::from_str(&text).map_err(|e| err(one_line(e)))
            })
            .collect()
    }

    /// `data.<package>.allow`, fail-closed: only an explicit boolean `true` allows.
    pub fn allows(&self, input: &Json, data: &Json) -> Result<bool, PolicyError> {
        self.allows_input(&PolicyInput::new(input), data)
    }

    /// [`Policy::allows`] with an input converted beforehand.
    pub fn allows_input(&self, input: &PolicyInput, data: &Json) -> Result<bool, PolicyError> {
        let mut v = self.eval_rules_input(&["allow".to_owned()], input, data)?;
        Ok(v.pop() == Some(Json::Bool(true)))
    }

    /// [`Policy::allows_input`], remembering approvals under `key`, which the caller derives
    /// from exactly this input and data (e.g. a hash of a verified token and the request): the
    /// same question is then answered without evaluating again. Only for a deterministic policy
    /// (one that uses none of [`NONDETERMINISTIC`]); a denial or an error is never remembered,
    /// so it is re-evaluated (and explained) every time.
    pub fn allows_memo(&self, key: [u8; 32], input: &PolicyInput, data: &Json) -> Result<bool, PolicyError> {
        if !self.deterministic {
            return self.allows_input(input, data);
        }
        if self.approved.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
            return Ok(true);
        }
        let allowed = self.allows_input(input, data)?;
        if allowed {
            let mut approved = self.approved.lock().unwrap_or_else(PoisonError::into_inner);
            if approved.len() >= APPROVED_CAPACITY {
                approved.clear();
            }
            approved.insert(key);
        }
        Ok(allowed)
    }

    /// Whether the policy uses none of [`NONDETERMINISTIC`] (its approvals may be remembered).
    pub fn is_deterministic(&self) -> bool {
        self.deterministic
    }
}

/// Adapter so both regorus' error type and others convert to a one-line message.
mod anyhow_like {
    pub struct E(pub String);
    impl<T: std::fmt::Display> From<T> for E {
        fn from(e: T) -> Self {
            E(super::one_line(e))
        }
    }
}

/// The policies shipped with Cloister, by id.
pub mod builtin {
    /// Resource policy `default`: allow unless the token comes from CoCo's `sample` TEE or from
    /// evidence of no TEE (`none`), or from the emulated TEE.
    pub const RESOURCE_DEFAULT: &str = include_str!("../../resource/default.rego");
    /// Resource policy `allow_all`.
    pub const RESOURCE_ALLOW_ALL: &str = include_str!("../../resource/allow_all.rego");
    /// Resource policy `deny_all`.
    pub const RESOURCE_DENY_ALL: &str = include_str!("../../resource/deny_all.rego");
    /// Resource policy `affirming`: every submodule of the token must be `affirming`.
    pub const RESOURCE_AFFIRMING: &str = include_str!("../../resource/affirming.rego");
    /// Resource policy `degenerate`: the plain-VM (Kata) path for development clusters.
    pub const RESOURCE_DEGENERATE: &str = include_str!("../../resource/degenerate.rego");
    /// Resource policy `emulated`: like `affirming`, accepting the emulated TEE (development only).
    pub const RESOURCE_EMULATED: &str = include_str!("../../resource/emulated.rego");

    /// Attestation policy `default` for CPU TEEs (SNP, TDX, SE): starts pessimistic and affirms
    /// each trust claim only when the claims match the reference values.
    pub const ATTESTATION_DEFAULT_CPU: &str = include_str!("../../attestation/default_cpu.rego");
    /// Attestation policy for the emulated TEE (development only): the same reference values,
    /// applied to `emulated_snp` / `emulated_tdx` claims.
    pub const ATTESTATION_EMULATED_CPU: &str = include_str!("../../attestation/emulated_cpu.rego");

    /// `(id, source)` of every built-in resource policy.
    pub const RESOURCE: &[(&str, &str)] = &[
        ("default", RESOURCE_DEFAULT),
        ("allow_all", RESOURCE_ALLOW_ALL),
        ("deny_all", RESOURCE_DENY_ALL),
        ("affirming", RESOURCE_AFFIRMING),
        ("degenerate", RESOURCE_DEGENERATE),
        ("emulated", RESOURCE_EMULATED),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prepared engines are per exact data document and never carry one evaluation's input or
    /// data into another.
    #[test]
    fn prepared_engine_cache_keeps_data_and_input_apart() {
        let p = Policy::new(
            "t",
            "package policy\nimport rego.v1\ndefault allow := false\nallow if { input.x == data.want }\n",
        )
        .unwrap();
        let (a, b) = (serde_json::json!({"want": 1}), serde_json::json!({"want": 2}));
        for _ in 0..3 {
            assert!(p.allows(&serde_json::json!({"x": 1}), &a).unwrap());
            assert!(!p.allows(&serde_json::json!({"x": 1}), &b).unwrap());
            assert!(p.allows(&serde_json::json!({"x": 2}), &b).unwrap());
            assert!(!p.allows(&serde_json::json!({}), &a).unwrap());
        }
        let q = p.clone();
        assert!(q.allows(&serde_json::json!({"x": 2}), &b).unwrap());
    }
    use serde_json::json;

    /// Rules are evaluated directly, with the query semantics: a rule the policy does not define
    /// and a rule with no default whose bodies all fail are both undefined (`null`), a set rule is
    /// its set, an evaluation error is an error, and `allows` wants an explicit `true`.
    #[test]
    fn direct_rule_evaluation_keeps_query_semantics() {
        let p = Policy::new(
            "t",
            "package policy\nimport rego.v1\nallow if input.x == 1\nreasons contains \"a\" if input.x == 2\n\
             count_ := count(input.x)\nn := 3\n",
        )
        .unwrap();
        let rules: Vec<String> = ["allow", "nosuch", "reasons", "n"].iter().map(|r| (*r).to_owned()).collect();
        let d = json!({});
        assert_eq!(p.eval_rules(&rules, &json!({"x": 1}), &d).unwrap(), [json!(true), Json::Null, json!([]), json!(3)]);
        assert_eq!(
            p.eval_rules(&rules, &json!({"x": 2}), &d).unwrap(),
            [Json::Null, Json::Null, json!(["a"]), json!(3)]
        );
        // The undefined rule was learnt once (the second call did not ask regorus again); the
        // defined ones were not mistaken for undefined.
        assert_eq!(*p.undefined.lock().unwrap(), HashSet::from(["data.policy.nosuch".to_owned()]));
        assert!(p.allows(&json!({"x": 1}), &d).unwrap());
        assert!(!p.allows(&json!({"x": 5}), &d).unwrap());
        assert!(matches!(p.eval_rule("count_", &json!({"x": 5}), &d), Err(PolicyError::Eval { .. })));
        let input = PolicyInput::new(&json!({"x": 1}));
        assert!(p.allows_input(&input, &d).unwrap());
        assert!(p.allows_input(&input, &d).unwrap());
    }

    /// Approvals are remembered per key, denials never; a policy reading the clock is always
    /// evaluated.
    #[test]
    fn approvals_are_memoised_only_for_deterministic_policies() {
        let src = "package policy\nimport rego.v1\ndefault allow := false\nallow if input.x == data.want\n";
        let p = Policy::new("t", src).unwrap();
        assert!(p.is_deterministic());
        let (yes, no) = (PolicyInput::new(&json!({"x": 1})), PolicyInput::new(&json!({"x": 2})));
        let d = json!({"want": 1});
        assert!(p.allows_memo([1; 32], &yes, &d).unwrap());
        assert!(!p.allows_memo([2; 32], &no, &d).unwrap());
        assert_eq!(*p.approved.lock().unwrap(), HashSet::from([[1; 32]]));
        // Remembered: the same key is approved without evaluating (a different input under the
        // same key shows it; callers derive the key from input and data, so this never happens).
        assert!(p.allows_memo([1; 32], &no, &d).unwrap());
        assert!(!p.allows_memo([2; 32], &no, &d).unwrap());
        let clock = Policy::new("c", format!("{src}too_late if time.now_ns() > 0\n")).unwrap();
        assert!(!clock.is_deterministic());
        assert!(clock.allows_memo([1; 32], &yes, &d).unwrap());
        assert!(!clock.allows_memo([1; 32], &no, &d).unwrap());
        assert!(clock.approved.lock().unwrap().is_empty());
    }

    #[test]
    fn builtins_compile() {
        for (id, src) in builtin::RESOURCE {
            Policy::new(*id, *src).unwrap();
        }
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(Policy::new("x", "package policy\nallow := ["), Err(PolicyError::Compile { .. })));
        assert!(matches!(Policy::new("x", "package other\nallow := true"), Err(PolicyError::WrongPackage { .. })));
        assert!(matches!(
            Policy::in_package("x", "agent_policy", "package policy\nallow := true"),
            Err(PolicyError::WrongPackage { .. })
        ));
        assert!(matches!(
            Policy::in_package("x", "a.b", "package a.b\nallow := true"),
            Err(PolicyError::WrongPackage { .. })
        ));
        let p = Policy::in_package("x", "agent_policy", "package agent_policy\nallow := true").unwrap();
        assert!(p.allows(&json!({}), &json!({})).unwrap());
    }

    #[test]
    fn only_true_allows() {
        let data = json!({});
        for (src, want) in [
            ("package policy\nallow := true", true),
            ("package policy\nallow := \"yes\"", false),
            ("package policy\nallow := 1", false),
            ("package policy\nx := 1", false),
        ] {
            assert_eq!(Policy::new("t", src).unwrap().allows(&json!({}), &data).unwrap(), want, "{src}");
        }
    }
}
