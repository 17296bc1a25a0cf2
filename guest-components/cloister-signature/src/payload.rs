//! The signed JSON payloads: simple signing ("atomic container signature") and cosign ("cosign
//! container image signature"). Parsed strictly, as containers/image does (`critical` must have
//! exactly `type`, `image`, `identity`), and only after the cryptographic signature verified.

use serde::Deserialize;

use crate::identity::{DockerReference, NameOnlySignature, SignedIdentity};

/// Largest payload accepted (real ones are a few hundred bytes).
pub const MAX_PAYLOAD_SIZE: usize = 64 << 10;

/// Which signature format a payload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Simple signing: `critical.type` = `atomic container signature`, `optional` an object.
    Simple,
    /// Cosign: `critical.type` = `cosign container image signature`, `optional` an object or null.
    Cosign,
}

impl PayloadKind {
    /// The `critical.type` value this kind requires.
    pub fn type_string(self) -> &'static str {
        match self {
            Self::Simple => "atomic container signature",
            Self::Cosign => "cosign container image signature",
        }
    }
}

/// The claims of a payload (untrusted until its signature verified and the claims were checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.image.docker-manifest-digest`.
    pub docker_manifest_digest: String,
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `optional.creator`, if present.
    pub creator: Option<String>,
    /// `optional.timestamp` (seconds), if present.
    pub timestamp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    critical: RawCritical,
    optional: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritical {
    #[serde(rename = "type")]
    typ: String,
    image: RawImage,
    identity: RawIdentity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

/// Parses a payload of the given kind. Errors are human-readable reasons.
pub fn parse_payload(kind: PayloadKind, data: &[u8]) -> Result<Payload, String> {
    if data.len() > MAX_PAYLOAD_SIZE {
        return Err(format!("payload is {} bytes, more than {MAX_PAYLOAD_SIZE}", data.len()));
    }
    let raw: RawTop = serde_json::from_slice(data).map_err(|e| format!("payload JSON: {e}"))?;
    if raw.critical.typ != kind.type_string() {
        return Err(format!(
            "payload type {:?} is not {:?}",
            raw.critical.typ.chars().take(64).collect::<String>(),
            kind.type_string()
        ));
    }
    let (mut creator, mut timestamp) = (None, None);
    match (&raw.optional, kind) {
        (serde_json::Value::Null, PayloadKind::Cosign) => {}
        (serde_json::Value::Object(m), _) => {
            if let Some(c) = m.get("creator") {
                creator = Some(c.as_str().ok_or("payload optional.creator is not a string")?.to_owned());
            }
            if let Some(t) = m.get("timestamp") {
                timestamp = Some(t.as_i64().ok_or("payload optional.timestamp is not an integer")?);
            }
        }
        _ => return Err("payload \"optional\" is not an object".into()),
    }
    Ok(Payload {
        docker_manifest_digest: raw.critical.image.docker_manifest_digest,
        docker_reference: raw.critical.identity.docker_reference,
        creator,
        timestamp,
    })
}

/// Parses a verified payload and checks its claims against the image: the exact manifest digest,
/// then the identity rule. Returns the signed reference on success.
pub(crate) fn check_payload(
    kind: PayloadKind,
    data: &[u8],
    manifest_digest: &str,
    intended: &DockerReference,
    rule: &SignedIdentity,
    name_only: NameOnlySignature,
) -> Result<String, String> {
    let p = parse_payload(kind, data)?;
    if p.docker_manifest_digest != manifest_digest {
        return Err(format!(
            "signed manifest digest {:?} does not match the image's manifest digest {manifest_digest}",
            p.docker_manifest_digest.chars().take(140).collect::<String>()
        ));
    }
    rule.check(intended, &p.docker_reference, name_only)?;
    Ok(p.docker_reference)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::identity::ImageIdentity;

    const D: &str = "sha256:ef3a0b8e1cb2e64f17653d566237f2fc20cf04cece5062b7dd10a78f9def7ee0";

    fn simple(reference: &str, digest: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"atomic container signature"}},"optional":{{"creator":"atomic 5.23.1","timestamp":1795913109}}}}"#
        )
    }

    #[test]
    fn parses_skopeo_and_cosign_payloads() {
        let p = parse_payload(PayloadKind::Simple, simple("a.io/b:1", D).as_bytes()).unwrap();
        assert_eq!(p.docker_reference, "a.io/b:1");
        assert_eq!(p.docker_manifest_digest, D);
        assert_eq!(p.creator.as_deref(), Some("atomic 5.23.1"));
        assert_eq!(p.timestamp, Some(1795913109));
        let c = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"a.io/b"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let p = parse_payload(PayloadKind::Cosign, c.as_bytes()).unwrap();
        assert_eq!(p.docker_reference, "a.io/b");
        // The wrong kind is refused either way.
        assert!(parse_payload(PayloadKind::Simple, c.as_bytes()).unwrap_err().contains("is not"));
        assert!(parse_payload(PayloadKind::Cosign, simple("a.io/b:1", D).as_bytes()).unwrap_err().contains("is not"));
    }

    #[test]
    fn strict_shapes() {
        let t = "\"type\":\"atomic container signature\"";
        let img = format!("\"image\":{{\"docker-manifest-digest\":\"{D}\"}}");
        let id = "\"identity\":{\"docker-reference\":\"a.io/b:1\"}";
        let cases = [
            format!("{{\"critical\":{{{t},{img},{id}}}}}"),
            format!("{{\"critical\":{{{t},{img},{id}}},\"optional\":null}}"),
            format!("{{\"critical\":{{{t},{img},{id}}},\"optional\":{{}},\"x\":1}}"),
            format!("{{\"critical\":{{{t},{img},{id},\"extra\":1}},\"optional\":{{}}}}"),
            format!("{{\"critical\":{{{t},{img}}},\"optional\":{{}}}}"),
            format!("{{\"critical\":{{{t},{t},{img},{id}}},\"optional\":{{}}}}"),
            format!("{{\"critical\":{{{t},\"image\":{{}},{id}}},\"optional\":{{}}}}"),
            format!("{{\"critical\":{{{t},{img},\"identity\":{{\"docker-reference\":1}}}},\"optional\":{{}}}}"),
            format!("{{\"critical\":{{{t},{img},{id}}},\"optional\":{{\"timestamp\":1.5}}}}"),
            format!("{{\"critical\":{{{t},{img},{id}}},\"optional\":{{\"creator\":7}}}}"),
            "not json".to_string(),
            "[]".to_string(),
        ];
        for c in &cases {
            assert!(parse_payload(PayloadKind::Simple, c.as_bytes()).is_err(), "{c}");
        }
        let ok = format!("{{\"critical\":{{{t},{img},{id}}},\"optional\":{{\"anything\":[1]}}}}");
        assert!(parse_payload(PayloadKind::Simple, ok.as_bytes()).is_ok());
        assert!(parse_payload(PayloadKind::Simple, &vec![b' '; MAX_PAYLOAD_SIZE + 1]).is_err());
    }

    #[test]
    fn claims_checked() {
        let intended = ImageIdentity::parse("a.io/b:1").unwrap().reference().unwrap();
        let rule = SignedIdentity::MatchRepoDigestOrExact;
        let ok = check_payload(
            PayloadKind::Simple,
            simple("a.io/b:1", D).as_bytes(),
            D,
            &intended,
            &rule,
            NameOnlySignature::Refuse,
        );
        assert_eq!(ok.unwrap(), "a.io/b:1");
        let other = D.replace("ef3a", "0000");
        let e = check_payload(
            PayloadKind::Simple,
            simple("a.io/b:1", &other).as_bytes(),
            D,
            &intended,
            &rule,
            NameOnlySignature::Refuse,
        )
        .unwrap_err();
        assert!(e.contains("does not match the image's manifest digest"), "{e}");
        // Digests compare exactly: the same hex in upper case is a different claim.
        let upper = format!("sha256:{}", D[7..].to_uppercase());
        assert!(
            check_payload(
                PayloadKind::Simple,
                simple("a.io/b:1", &upper).as_bytes(),
                D,
                &intended,
                &rule,
                NameOnlySignature::Refuse
            )
            .is_err()
        );
        let e = check_payload(
            PayloadKind::Simple,
            simple("a.io/b:2", D).as_bytes(),
            D,
            &intended,
            &rule,
            NameOnlySignature::Refuse,
        )
        .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }
}
