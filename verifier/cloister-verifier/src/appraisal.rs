//! Appraisal: verified TEE claims + reference values + a Rego attestation policy → an EAR
//! submodule with an AR4SI trustworthiness vector.
//!
//! Policy input is nested as trustee nests it: `input.<tee>` holds the TEE's claims (`input.snp`,
//! `input.tdx`, …) beside `input.report_data`, `input.init_data`, `input.runtime_data_claims`.
//! Reference values are `data.reference.<name>` (lists, RVPS names such as
//! `snp_launch_measurement`), also reachable through trustee's `query_reference_value(name)`, so
//! trustee-style policies run. The policy sets any of the eight trust claims as rules named with
//! underscores (`instance_identity`, `configuration`, `executables`, `file_system`, `hardware`,
//! `runtime_opaque`, `storage_opaque`, `sourced_data`); undefined rules are 0 ("no claim").
//!
//! **What it trusts:** the policy and the reference values (the tenant's decisions) and the claims
//! it is given, which must come from evidence the verifier has already checked.

use std::collections::BTreeMap;

use cloister_policy::{Policy, PolicyError};
use serde_json::{Value, json};

use crate::ear::{Submod, TRUST_CLAIMS, TrustVector};

/// Rego helpers made available to every attestation policy (same package).
const PRELUDE: &str = r#"package policy

# trustee's RVPS builtin, answered from data.reference.
query_reference_value(name) := v if {
	v := data.reference[name]
}
"#;

/// Why an appraisal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppraisalError {
    /// The policy could not be evaluated.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A trust rule produced something other than a small integer.
    #[error("attestation policy '{policy}' set {claim} to {value}, which is not an integer in -128..=127")]
    BadClaimValue {
        /// Policy id.
        policy: String,
        /// The claim.
        claim: &'static str,
        /// What it produced.
        value: String,
    },
}

/// Named lists of accepted values (RVPS form: `{"snp_launch_measurement": ["…"], …}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceValues(pub BTreeMap<String, Vec<Value>>);

impl ReferenceValues {
    /// Adds accepted values under `name`.
    pub fn add(&mut self, name: impl Into<String>, values: impl IntoIterator<Item = Value>) {
        self.0.entry(name.into()).or_default().extend(values);
    }

    fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), Value::Array(v.clone()))).collect())
    }
}

/// An attestation (appraisal) policy.
#[derive(Debug, Clone)]
pub struct AttestationPolicy {
    policy: Policy,
}

impl AttestationPolicy {
    /// Compiles a policy (with the prelude).
    pub fn new(id: &str, rego: &str) -> Result<Self, AppraisalError> {
        let policy = Policy::with_modules(id, rego, &[("prelude", PRELUDE)])?;
        Ok(AttestationPolicy { policy })
    }

    /// The default policy shipped in `policies/attestation/default_cpu.rego`.
    pub fn default_cpu() -> Result<Self, AppraisalError> {
        Self::new("default", cloister_policy::builtin::ATTESTATION_DEFAULT_CPU)
    }

    /// The policy id.
    pub fn id(&self) -> &str {
        self.policy.id()
    }
}

/// What an attester's evidence says, ready for appraisal.
#[derive(Debug, Clone, PartialEq)]
pub struct AppraisalInput {
    /// The TEE class key (`snp`, `tdx`, `se`, `sample`, `none`, `emulated_snp`, `emulated_tdx`).
    pub tee: String,
    /// The TEE's verified claims.
    pub claims: Value,
    /// Base64 of the report data the evidence carried.
    pub report_data: Option<String>,
    /// Hex digest of the initdata the evidence is bound to.
    pub init_data: Option<String>,
    /// Parsed initdata claims.
    pub init_data_claims: Option<Value>,
    /// Runtime data the guest sent (`nonce`, `tee-pubkey`).
    pub runtime_data_claims: Option<Value>,
}

impl AppraisalInput {
    /// The annotated evidence as it appears in the EAR and in policy input.
    pub fn annotated_evidence(&self) -> Value {
        let mut v = json!({ &self.tee: self.claims });
        let put = |v: &mut Value, k: &str, x: &Option<Value>| {
            if let (Some(x), Some(o)) = (x, v.as_object_mut()) {
                o.insert(k.to_owned(), x.clone());
            }
        };
        put(&mut v, "report_data", &self.report_data.clone().map(Value::String));
        put(&mut v, "init_data", &self.init_data.clone().map(Value::String));
        put(&mut v, "init_data_claims", &self.init_data_claims);
        put(&mut v, "runtime_data_claims", &self.runtime_data_claims);
        v
    }
}

/// Runs the policy and builds the submodule (status = worst tier of the vector).
pub fn appraise(
    policy: &AttestationPolicy,
    input: &AppraisalInput,
    reference: &ReferenceValues,
) -> Result<Submod, AppraisalError> {
    let evidence = input.annotated_evidence();
    let data = json!({ "reference": reference.to_json() });
    let mut tv = TrustVector::default();
    let names: Vec<String> = TRUST_CLAIMS.iter().map(|n| n.replace('-', "_")).collect();
    let results = policy.policy.eval_rules(&names, &evidence, &data)?;
    for (name, value) in TRUST_CLAIMS.iter().zip(results) {
        let v = match value {
            Value::Null => 0,
            Value::Number(n) => n.as_i64().and_then(|n| i8::try_from(n).ok()).ok_or_else(|| {
                AppraisalError::BadClaimValue { policy: policy.id().to_owned(), claim: name, value: n.to_string() }
            })?,
            other => {
                return Err(AppraisalError::BadClaimValue {
                    policy: policy.id().to_owned(),
                    claim: name,
                    value: other.to_string(),
                });
            }
        };
        tv.set(name, v);
    }
    tracing::debug!(policy = policy.id(), tee = %input.tee, status = tv.status().as_str(), "appraised");
    Ok(Submod {
        status: tv.status(),
        trust_vector: tv,
        policy_id: policy.id().to_owned(),
        annotated_evidence: evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ear::Status;

    fn input(measurement: &str, debug: bool) -> AppraisalInput {
        AppraisalInput {
            tee: "snp".into(),
            claims: json!({"measurement": measurement, "policy_debug_allowed": debug}),
            report_data: Some("AA==".into()),
            init_data: None,
            init_data_claims: None,
            runtime_data_claims: None,
        }
    }

    #[test]
    fn trustee_style_policy_with_reference_values() {
        let rego = r#"package policy
import rego.v1
default executables := 33
default hardware := 97
executables := 3 if { input.snp.measurement in query_reference_value("snp_launch_measurement") }
hardware := 2 if { input.snp }
"#;
        let p = AttestationPolicy::new("t", rego).unwrap();
        let mut refs = ReferenceValues::default();
        refs.add("snp_launch_measurement", [json!("aa")]);
        let good = appraise(&p, &input("aa", false), &refs).unwrap();
        assert_eq!(good.status, Status::Affirming);
        assert_eq!(good.trust_vector.get("executables"), Some(3));
        assert_eq!(good.annotated_evidence["snp"]["measurement"], "aa");
        let bad = appraise(&p, &input("bb", false), &refs).unwrap();
        assert_eq!(bad.status, Status::Warning);
        let none = appraise(&p, &input("aa", false), &ReferenceValues::default()).unwrap();
        assert_eq!(none.trust_vector.get("executables"), Some(33));
    }

    #[test]
    fn listed_initdata_digests_are_required() {
        let digest = "ab".repeat(48);
        let emulated = |init: Option<&str>, host_data: &str| AppraisalInput {
            tee: "emulated_snp".into(),
            claims: json!({"measurement": "aa", "policy_debug_allowed": false, "host_data": host_data}),
            report_data: None,
            init_data: init.map(str::to_owned),
            init_data_claims: None,
            runtime_data_claims: None,
        };
        let p = AttestationPolicy::new("emulated", cloister_policy::builtin::ATTESTATION_EMULATED_CPU).unwrap();
        let mut refs = ReferenceValues::default();
        refs.add("snp_launch_measurement", [json!("aa")]);
        // Nothing listed: any initdata the evidence is bound to.
        let any = appraise(&p, &emulated(Some(&digest), &"ab".repeat(32)), &refs).unwrap();
        assert_eq!(any.status, Status::Affirming, "{:?}", any.trust_vector);
        refs.add("init_data", [json!(digest.clone())]);
        let tenant = appraise(&p, &emulated(Some(&digest), &"ab".repeat(32)), &refs).unwrap();
        assert_eq!(tenant.status, Status::Affirming);
        // The host's own initdata (bound, but not the tenant's), or none at all: configuration 36.
        let other = "cd".repeat(48);
        let swapped = appraise(&p, &emulated(Some(&other), &"cd".repeat(32)), &refs).unwrap();
        assert_eq!(swapped.trust_vector.get("configuration"), Some(36));
        assert_ne!(swapped.status, Status::Affirming);
        let missing = appraise(&p, &emulated(None, &"00".repeat(32)), &refs).unwrap();
        assert_eq!(missing.trust_vector.get("configuration"), Some(36));
        // The tenant's digest presented, but HOST_DATA is another: not bound.
        let unbound = appraise(&p, &emulated(Some(&digest), &"cd".repeat(32)), &refs).unwrap();
        assert_eq!(unbound.trust_vector.get("configuration"), Some(36));
    }

    #[test]
    fn non_integer_claims_are_errors() {
        let p = AttestationPolicy::new("t", "package policy\nhardware := \"two\"").unwrap();
        assert!(matches!(
            appraise(&p, &input("aa", false), &ReferenceValues::default()),
            Err(AppraisalError::BadClaimValue { claim: "hardware", .. })
        ));
        let p = AttestationPolicy::new("t", "package policy\nhardware := 1000").unwrap();
        assert!(appraise(&p, &input("aa", false), &ReferenceValues::default()).is_err());
    }
}
