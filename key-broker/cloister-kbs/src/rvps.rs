//! Reference values, RVPS-compatible: registration messages `{"version":"0.1.0","type":"sample",
//! "payload":"<base64 of {name: [values]}>"}`, stored as `{"version","name","expiration","value"}`
//! with a 12-month expiry, queried by name while not expired. Also reads the JSON that
//! `cloister measure --output json` prints.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_kbs_protocol::ReferenceValueMessage;
use cloister_verifier::appraisal::ReferenceValues;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::KbsError;
use crate::store::{Durability, Namespace, ResourceStore};

/// Lifetime of a registered value (trustee's sample extractor: 12 months).
pub const DEFAULT_LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// A stored reference value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredValue {
    /// `0.1.0`.
    pub version: String,
    /// The name policies query.
    pub name: String,
    /// RFC 3339 expiry.
    pub expiration: String,
    /// Accepted values.
    pub value: Vec<Value>,
}

impl StoredValue {
    fn expired(&self, now: u64) -> bool {
        match OffsetDateTime::parse(&self.expiration, &Rfc3339) {
            Ok(t) => t.unix_timestamp() <= i64::try_from(now).unwrap_or(i64::MAX),
            Err(_) => true,
        }
    }
}

fn rfc3339(unix: i64) -> Result<String, KbsError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| KbsError::Internal("cannot format a time".into()))
}

/// Turns a registration message into named values.
pub fn parse_message(body: &[u8]) -> Result<Vec<(String, Vec<Value>)>, KbsError> {
    let msg: ReferenceValueMessage =
        serde_json::from_slice(body).map_err(|e| KbsError::InvalidUpload(format!("reference value message: {e}")))?;
    if msg.version != "0.1.0" {
        return Err(KbsError::InvalidUpload(format!("reference value message version {:?} is not 0.1.0", msg.version)));
    }
    if msg.kind != "sample" {
        return Err(KbsError::InvalidUpload(format!("extractor type {:?} is not supported (sample)", msg.kind)));
    }
    let payload = STANDARD
        .decode(msg.payload.trim())
        .map_err(|e| KbsError::InvalidUpload(format!("payload is not standard base64: {e}")))?;
    let v: Value =
        serde_json::from_slice(&payload).map_err(|e| KbsError::InvalidUpload(format!("payload is not JSON: {e}")))?;
    named_values(&v)
}

/// `{name: [values] | value}` or the output of `cloister measure --output json`.
pub fn named_values(v: &Value) -> Result<Vec<(String, Vec<Value>)>, KbsError> {
    let obj = v.as_object().ok_or_else(|| KbsError::InvalidUpload("reference values must be a JSON object".into()))?;
    // `cloister measure --output json`: {"tee", "mode", "algorithm", "measurement", "inputs"}
    // or `measure rtmr`: {"tee": "tdx", "rtmr": [..4]}, or `measure se-header`.
    if let Some(tee) = obj.get("tee").and_then(Value::as_str) {
        let mut out = Vec::new();
        // `cloister measure se-header --output json`: trustee's SE names under reference_values.
        if let Some(Value::Object(rv)) = obj.get("reference_values") {
            for (name, val) in rv {
                let values = match val {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                out.push((name.clone(), values));
            }
        }
        if let Some(m) = obj.get("measurement").and_then(Value::as_str) {
            let name = match tee {
                "snp" => "snp_launch_measurement",
                "tdx" => "mr_td",
                "se" => "se.image_phkh",
                other => {
                    return Err(KbsError::InvalidUpload(format!(
                        "measurement for TEE {other:?} has no reference name"
                    )));
                }
            };
            out.push((name.to_owned(), vec![Value::String(m.to_owned())]));
        }
        if let Some(Value::Array(r)) = obj.get("rtmr") {
            for (i, v) in r.iter().enumerate().skip(1).take(2) {
                out.push((format!("rtmr_{i}"), vec![v.clone()]));
            }
        }
        if out.is_empty() {
            return Err(KbsError::InvalidUpload(
                "measurement JSON has no measurement, rtmr or reference_values".into(),
            ));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (name, val) in obj {
        if name.is_empty() || name.len() > 100 {
            return Err(KbsError::InvalidUpload(format!("reference value name {name:?} is empty or too long")));
        }
        let values = match val {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        out.push((name.clone(), values));
    }
    Ok(out)
}

/// Stores values under their names (replacing older ones), expiring `lifetime` seconds after `now`.
pub fn register(
    store: &dyn ResourceStore,
    values: Vec<(String, Vec<Value>)>,
    now: u64,
    lifetime: i64,
) -> Result<Vec<String>, KbsError> {
    let exp = rfc3339(i64::try_from(now).unwrap_or(i64::MAX).saturating_add(lifetime))?;
    let mut names = Vec::new();
    for (name, value) in values {
        let rec = StoredValue { version: "0.1.0".into(), name: name.clone(), expiration: exp.clone(), value };
        let bytes = serde_json::to_vec(&rec).map_err(|e| KbsError::Internal(e.to_string()))?;
        store.put(Namespace::ReferenceValue, &name, &bytes, Durability::Durable)?;
        names.push(name);
    }
    Ok(names)
}

/// The values under `name`, unless absent or expired.
pub fn query(store: &dyn ResourceStore, name: &str, now: u64) -> Result<Option<Vec<Value>>, KbsError> {
    let Some(bytes) = store.get(Namespace::ReferenceValue, name)? else {
        return Ok(None);
    };
    let rec: StoredValue = serde_json::from_slice(&bytes).map_err(|e| crate::error::StoreError::Corrupt {
        what: format!("reference value {name}"),
        detail: e.to_string(),
    })?;
    Ok((!rec.expired(now)).then_some(rec.value))
}

/// Every unexpired value, for appraisal.
pub fn all(store: &dyn ResourceStore, now: u64) -> Result<ReferenceValues, KbsError> {
    let mut refs = ReferenceValues::default();
    for name in store.list(Namespace::ReferenceValue)? {
        if let Some(v) = query(store, &name, now)? {
            refs.add(name, v);
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;

    #[test]
    fn register_query_expire() {
        let s = MemoryStore::default();
        let payload = STANDARD.encode(r#"{"svn": ["1"], "snp_launch_measurement": "ab"}"#);
        let msg = format!(r#"{{"version":"0.1.0","type":"sample","payload":"{payload}"}}"#);
        let vals = parse_message(msg.as_bytes()).unwrap();
        register(&s, vals, 1_000, 100).unwrap();
        assert_eq!(query(&s, "svn", 1_050).unwrap(), Some(vec![json!("1")]));
        assert_eq!(query(&s, "snp_launch_measurement", 1_050).unwrap(), Some(vec![json!("ab")]));
        assert_eq!(query(&s, "svn", 1_100).unwrap(), None);
        assert_eq!(all(&s, 1_000).unwrap().0.len(), 2);
    }

    #[test]
    fn bad_messages() {
        for m in [
            r#"{"version":"0.2.0","type":"sample","payload":"e30="}"#,
            r#"{"version":"0.1.0","type":"swid","payload":"e30="}"#,
            r#"{"version":"0.1.0","type":"sample","payload":"!!"}"#,
            r#"{"version":"0.1.0","type":"sample","payload":"WzFd"}"#,
            r#"{"version":"0.1.0","type":"sample"}"#,
        ] {
            assert!(matches!(parse_message(m.as_bytes()), Err(KbsError::InvalidUpload(_))), "{m}");
        }
    }

    #[test]
    fn measure_json() {
        let v = json!({"tee": "snp", "mode": "snp", "algorithm": "sha384", "measurement": "abcd", "inputs": {}});
        assert_eq!(named_values(&v).unwrap(), vec![("snp_launch_measurement".to_owned(), vec![json!("abcd")])]);
    }
}
