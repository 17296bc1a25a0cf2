//! Fixture tests of every shipped resource policy: token claims (EAR, trustee shape) × resource
//! request → the decision each policy must take.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use cloister_policy::{Policy, builtin};
use serde_json::{Value, json};

fn token(tee: &str, status: &str) -> Value {
    json!({
        "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
        "iat": 1, "exp": 2,
        "submods": {"cpu0": {
            "ear.status": status,
            "ear.trustworthiness-vector": {"executables": 3, "hardware": 2, "configuration": 2},
            "ear.appraisal-policy-id": "default",
            "ear.veraison.annotated-evidence": { tee: {"measurement": "aa"}, "report_data": "AA==" }
        }}
    })
}

fn request(repo: &str) -> Value {
    json!({"plugin": "resource", "resource-path": [repo, "key", "1"], "query": {}})
}

fn decide(policy: &str, input: &Value, data: &Value) -> bool {
    let src = builtin::RESOURCE.iter().find(|(id, _)| *id == policy).map(|(_, s)| *s).expect("policy");
    Policy::new(policy, src).expect("compiles").allows(input, data).expect("evaluates")
}

#[test]
fn default_policy() {
    let r = request("default");
    assert!(decide("default", &token("snp", "affirming"), &r));
    assert!(decide("default", &token("tdx", "affirming"), &r));
    assert!(!decide("default", &token("snp", "warning"), &r), "not affirming");
    assert!(!decide("default", &token("snp", "contraindicated"), &r));
    for tee in ["sample", "none", "emulated_snp", "emulated_tdx", "emulated_se"] {
        assert!(!decide("default", &token(tee, "affirming"), &r), "{tee} must be denied");
    }
    assert!(!decide("default", &json!({"submods": {}}), &r), "no submodules");
    assert!(!decide("default", &json!({}), &r), "not a token");
    let other_plugin = json!({"plugin": "other", "resource-path": ["a", "b", "c"], "query": {}});
    assert!(!decide("default", &token("snp", "affirming"), &other_plugin));
}

#[test]
fn allow_all_and_deny_all() {
    for t in [token("snp", "affirming"), token("sample", "contraindicated"), json!({})] {
        assert!(decide("allow_all", &t, &request("x")));
        assert!(!decide("deny_all", &t, &request("x")));
    }
}

#[test]
fn affirming_policy() {
    let r = request("default");
    assert!(decide("affirming", &token("snp", "affirming"), &r));
    assert!(decide("affirming", &token("sample", "affirming"), &r), "affirming only looks at status");
    assert!(!decide("affirming", &token("snp", "warning"), &r));
    assert!(!decide("affirming", &token("snp", "none"), &r));
    assert!(!decide("affirming", &json!({"submods": {}}), &r));
    let mut two = token("snp", "affirming");
    two["submods"]["gpu0"] = json!({"ear.status": "warning"});
    assert!(!decide("affirming", &two, &r), "every submodule must affirm");
}

#[test]
fn degenerate_policy_releases_only_dev_resources() {
    for tee in ["none", "sample", "snp"] {
        assert!(decide("degenerate", &token(tee, "none"), &request("dev")), "{tee}");
        assert!(!decide("degenerate", &token(tee, "none"), &request("default")), "{tee}: keys stay closed");
    }
    assert!(!decide("degenerate", &json!({"submods": {}}), &request("dev")));
}
