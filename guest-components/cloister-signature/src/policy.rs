//! containers-policy.json: strict parsing into typed requirements, and scope lookup.
//!
//! Parsing is as strict as containers/image: unknown fields, duplicate keys, unknown transports,
//! unknown requirement or identity types and empty requirement lists are errors. Features this
//! guest cannot verify (Fulcio, Rekor, PKI, X.509 key types) parse, and deny when evaluated.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::error::{MatchedScope, PolicyError};
use crate::identity::{ImageIdentity, SignedIdentity};

/// Transport names containers/image knows; anything else is an error (as there).
const KNOWN_TRANSPORTS: &[&str] = &[
    "atomic",
    "containers-storage",
    "dir",
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

/// Largest policy document accepted (policies are a few KiB; this bounds the work on garbage).
pub const MAX_POLICY_SIZE: usize = 4 << 20;

/// A parsed containers-policy.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Requirements for images no transport scope matches.
    pub default: Vec<Requirement>,
    /// `transports`: transport name → scope → requirements. Only `docker` is evaluated here.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One policy requirement; all requirements of the applicable scope must accept (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `insecureAcceptAnything`: accepts without any check.
    InsecureAcceptAnything,
    /// `reject`: refuses.
    Reject,
    /// `signedBy`: a simple-signing (OpenPGP) signature by one of the keys.
    SignedBy(SignedBy),
    /// `sigstoreSigned`: a cosign signature by the key.
    SigstoreSigned(SigstoreSigned),
}

impl Requirement {
    /// The JSON `type` of this requirement.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InsecureAcceptAnything => "insecureAcceptAnything",
            Self::Reject => "reject",
            Self::SignedBy(_) => "signedBy",
            Self::SigstoreSigned(_) => "sigstoreSigned",
        }
    }
}

/// `signedBy` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// `keyType`. Only [`GpgKeyType::GpgKeys`] is implemented; the others deny as unsupported.
    pub key_type: GpgKeyType,
    /// `keyPath` | `keyPaths` | `keyData`.
    pub keys: KeySpec,
    /// `signedIdentity` (default `matchRepoDigestOrExact`).
    pub signed_identity: SignedIdentity,
}

/// `keyType` of `signedBy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpgKeyType {
    /// `GPGKeys`: the keys are an OpenPGP keyring.
    GpgKeys,
    /// `signedByGPGKeys` (not implemented anywhere; denies).
    SignedByGpgKeys,
    /// `X509Certificates` (denies).
    X509Certificates,
    /// `signedByX509CAs` (denies).
    SignedByX509Cas,
}

impl GpgKeyType {
    fn name(self) -> &'static str {
        match self {
            Self::GpgKeys => "GPGKeys",
            Self::SignedByGpgKeys => "signedByGPGKeys",
            Self::X509Certificates => "X509Certificates",
            Self::SignedByX509Cas => "signedByX509CAs",
        }
    }
}

impl fmt::Display for GpgKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where trusted keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// `keyPath`: a file path, or (CoCo extension) a `kbs:///repo/type/tag` resource URI.
    Path(String),
    /// `keyPaths`: several of the above (all keys are trusted).
    Paths(Vec<String>),
    /// `keyData`: the key material inline (base64 in the JSON).
    Data(Vec<u8>),
    /// `keyDatas` (sigstoreSigned only): several inline keys.
    Datas(Vec<Vec<u8>>),
}

/// `sigstoreSigned` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigstoreSigned {
    /// The trust root.
    pub trust: SigstoreTrust,
    /// `rekorPublicKeyPath(s)` / `rekorPublicKeyData(s)`: Rekor inclusion is required (denies:
    /// unsupported in the guest).
    pub rekor_public_key: Option<KeySpec>,
    /// `signedIdentity` (default `matchRepoDigestOrExact`).
    pub signed_identity: SignedIdentity,
}

/// The trust root of a `sigstoreSigned` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigstoreTrust {
    /// `keyPath` | `keyPaths` | `keyData` | `keyDatas`: ECDSA P-256 public keys (PEM).
    Keys(KeySpec),
    /// `fulcio`: certificate-based (denies: unsupported in the guest). The object as written.
    Fulcio(serde_json::Value),
    /// `pki`: X.509 PKI (denies: unsupported in the guest). The object as written.
    Pki(serde_json::Value),
}

impl Policy {
    /// Parses a containers-policy.json document.
    pub fn from_json(data: &[u8]) -> Result<Self, PolicyError> {
        if data.len() > MAX_POLICY_SIZE {
            return Err(PolicyError::Parse(format!("policy is {} bytes, more than {MAX_POLICY_SIZE}", data.len())));
        }
        let raw: RawPolicy = serde_json::from_slice(data).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let Some(default) = raw.default else {
            return Err(PolicyError::Invalid("the \"default\" requirement list is missing".into()));
        };
        let default = convert_list(default, "default")?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in raw.transports.map(|m| m.0).unwrap_or_default() {
            if !KNOWN_TRANSPORTS.contains(&transport.as_str()) {
                return Err(PolicyError::Invalid(format!("unknown transport {transport:?}")));
            }
            let mut out = BTreeMap::new();
            for (scope, reqs) in scopes.0 {
                if transport == "docker" {
                    validate_docker_scope(&scope)?;
                }
                let list = convert_list(reqs, &format!("transports.{transport}[{scope:?}]"))?;
                out.insert(scope, list);
            }
            transports.insert(transport, out);
        }
        Ok(Self { default, transports })
    }

    /// The requirements that apply to a `docker` image, and which scope they came from: the most
    /// specific matching scope of `transports.docker` (see [`ImageIdentity::policy_scopes`]), then
    /// `transports.docker[""]`, then `default`.
    pub fn requirements_for(&self, image: &ImageIdentity) -> Result<(MatchedScope, &[Requirement]), PolicyError> {
        if let Some(scopes) = self.transports.get("docker") {
            for s in image.policy_scopes()? {
                if let Some(reqs) = scopes.get(&s) {
                    return Ok((MatchedScope::Docker(s), reqs));
                }
            }
            if let Some(reqs) = scopes.get("") {
                return Ok((MatchedScope::DockerDefault, reqs));
            }
        }
        Ok((MatchedScope::Default, &self.default))
    }
}

/// Docker scopes: `host[:port][/namespace…[/repo[:tag|@digest]]]` or `*.domain`; we reject what
/// can never match (whitespace, a scheme, misplaced wildcards) so typos do not silently fall
/// through to a more permissive default.
fn validate_docker_scope(scope: &str) -> Result<(), PolicyError> {
    let bad = |why: &str| Err(PolicyError::Invalid(format!("docker scope {scope:?}: {why}")));
    if scope.is_empty() {
        return Ok(());
    }
    if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace");
    }
    if scope.contains("://") {
        return bad("must not contain a URL scheme");
    }
    if scope.starts_with('/') || scope.ends_with('/') {
        return bad("must not start or end with '/'");
    }
    if let Some(rest) = scope.strip_prefix("*.") {
        if rest.is_empty() || rest.contains(['*', '/', ':', '@']) {
            return bad("a wildcard scope is \"*.\" followed by a domain");
        }
    } else if scope.contains('*') {
        return bad("'*' is only allowed as a leading \"*.\"");
    }
    Ok(())
}

fn convert_list(raw: Vec<RawRequirement>, scope: &str) -> Result<Vec<Requirement>, PolicyError> {
    if raw.is_empty() {
        return Err(PolicyError::Invalid(format!(
            "{scope}: empty requirement list (use \"reject\" or \"insecureAcceptAnything\" explicitly)"
        )));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| r.convert().map_err(|e| PolicyError::Invalid(format!("{scope}, requirement #{i}: {e}"))))
        .collect()
}

/// A map that rejects duplicate keys (serde_json keeps the last one silently).
struct StrictMap<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StrictMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = StrictMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.iter().any(|(existing, _)| *existing == k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(StrictMap(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Vec<RawRequirement>>,
    transports: Option<StrictMap<StrictMap<Vec<RawRequirement>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequirement {
    #[serde(rename = "type")]
    typ: String,
    key_type: Option<String>,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    signed_identity: Option<RawIdentity>,
    fulcio: Option<serde_json::Value>,
    pki: Option<serde_json::Value>,
    rekor_public_key_path: Option<String>,
    rekor_public_key_paths: Option<Vec<String>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    #[serde(rename = "type")]
    typ: String,
    docker_reference: Option<String>,
    docker_repository: Option<String>,
    prefix: Option<String>,
    signed_prefix: Option<String>,
}

impl RawRequirement {
    fn present(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut f = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        f(self.key_type.is_some(), "keyType");
        f(self.key_path.is_some(), "keyPath");
        f(self.key_paths.is_some(), "keyPaths");
        f(self.key_data.is_some(), "keyData");
        f(self.key_datas.is_some(), "keyDatas");
        f(self.signed_identity.is_some(), "signedIdentity");
        f(self.fulcio.is_some(), "fulcio");
        f(self.pki.is_some(), "pki");
        f(self.rekor_public_key_path.is_some(), "rekorPublicKeyPath");
        f(self.rekor_public_key_paths.is_some(), "rekorPublicKeyPaths");
        f(self.rekor_public_key_data.is_some(), "rekorPublicKeyData");
        f(self.rekor_public_key_datas.is_some(), "rekorPublicKeyDatas");
        v
    }

    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        match self.present().into_iter().find(|p| !allowed.contains(p)) {
            Some(p) => Err(format!("field {p:?} is not allowed in a {:?} requirement", self.typ)),
            None => Ok(()),
        }
    }

    fn convert(self) -> Result<Requirement, String> {
        match self.typ.as_str() {
            "insecureAcceptAnything" => {
                self.only(&[])?;
                Ok(Requirement::InsecureAcceptAnything)
            }
            "reject" => {
                self.only(&[])?;
                Ok(Requirement::Reject)
            }
            "signedBy" => {
                self.only(&["keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"])?;
                let key_type = match self.key_type.as_deref() {
                    Some("GPGKeys") => GpgKeyType::GpgKeys,
                    Some("signedByGPGKeys") => GpgKeyType::SignedByGpgKeys,
                    Some("X509Certificates") => GpgKeyType::X509Certificates,
                    Some("signedByX509CAs") => GpgKeyType::SignedByX509Cas,
                    Some(other) => return Err(format!("unknown keyType {other:?}")),
                    None => return Err("signedBy requires \"keyType\"".into()),
                };
                let keys = key_spec(self.key_path, self.key_paths, self.key_data, None, "keyPath, keyPaths, keyData")?
                    .ok_or("signedBy requires exactly one of keyPath, keyPaths, keyData")?;
                let signed_identity = convert_identity(self.signed_identity)?;
                Ok(Requirement::SignedBy(SignedBy { key_type, keys, signed_identity }))
            }
            "sigstoreSigned" => {
                self.only(&[
                    "keyPath",
                    "keyPaths",
                    "keyData",
                    "keyDatas",
                    "fulcio",
                    "pki",
                    "rekorPublicKeyPath",
                    "rekorPublicKeyPaths",
                    "rekorPublicKeyData",
                    "rekorPublicKeyDatas",
                    "signedIdentity",
                ])?;
                let keys = key_spec(
                    self.key_path,
                    self.key_paths,
                    self.key_data,
                    self.key_datas,
                    "keyPath, keyPaths, keyData, keyDatas",
                )?;
                let trust = match (keys, self.fulcio, self.pki) {
                    (Some(k), None, None) => SigstoreTrust::Keys(k),
                    (None, Some(f), None) => SigstoreTrust::Fulcio(require_object(f, "fulcio")?),
                    (None, None, Some(p)) => SigstoreTrust::Pki(require_object(p, "pki")?),
                    _ => {
                        return Err(
                            "sigstoreSigned requires exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio, pki"
                                .into(),
                        );
                    }
                };
                let rekor_public_key = key_spec(
                    self.rekor_public_key_path,
                    self.rekor_public_key_paths,
                    self.rekor_public_key_data,
                    self.rekor_public_key_datas,
                    "rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData, rekorPublicKeyDatas",
                )?;
                if matches!(trust, SigstoreTrust::Fulcio(_)) && rekor_public_key.is_none() {
                    return Err("sigstoreSigned with fulcio requires a Rekor public key".into());
                }
                let signed_identity = convert_identity(self.signed_identity)?;
                Ok(Requirement::SigstoreSigned(SigstoreSigned { trust, rekor_public_key, signed_identity }))
            }
            other => Err(format!("unknown or unsupported requirement type {other:?}")),
        }
    }
}

fn require_object(v: serde_json::Value, field: &str) -> Result<serde_json::Value, String> {
    if v.is_object() { Ok(v) } else { Err(format!("{field:?} must be an object")) }
}

fn decode_key_data(s: &str, field: &str) -> Result<Vec<u8>, String> {
    // Go's encoding/json []byte: standard base64, CR/LF ignored.
    let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let data = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| format!("{field} is not valid base64: {e}"))?;
    if data.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(data)
}

fn validate_key_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty key path".into());
    }
    if p.starts_with("kbs:") {
        crate::source::validate_kbs_uri(p)?;
    }
    Ok(())
}

fn key_spec(
    path: Option<String>,
    paths: Option<Vec<String>>,
    data: Option<String>,
    datas: Option<Vec<String>>,
    names: &str,
) -> Result<Option<KeySpec>, String> {
    let count = usize::from(path.is_some())
        + usize::from(paths.is_some())
        + usize::from(data.is_some())
        + usize::from(datas.is_some());
    if count > 1 {
        return Err(format!("only one of {names} may be given"));
    }
    if let Some(p) = path {
        validate_key_path(&p)?;
        return Ok(Some(KeySpec::Path(p)));
    }
    if let Some(ps) = paths {
        if ps.is_empty() {
            return Err("empty key path list".into());
        }
        for p in &ps {
            validate_key_path(p)?;
        }
        return Ok(Some(KeySpec::Paths(ps)));
    }
    if let Some(d) = data {
        return Ok(Some(KeySpec::Data(decode_key_data(&d, "key data")?)));
    }
    if let Some(ds) = datas {
        if ds.is_empty() {
            return Err("empty key data list".into());
        }
        let decoded = ds.iter().map(|d| decode_key_data(d, "key data")).collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(KeySpec::Datas(decoded)));
    }
    Ok(None)
}

fn convert_identity(raw: Option<RawIdentity>) -> Result<SignedIdentity, String> {
    let Some(raw) = raw else { return Ok(SignedIdentity::MatchRepoDigestOrExact) };
    let fields = [
        (raw.docker_reference.is_some(), "dockerReference"),
        (raw.docker_repository.is_some(), "dockerRepository"),
        (raw.prefix.is_some(), "prefix"),
        (raw.signed_prefix.is_some(), "signedPrefix"),
    ];
    let only = |allowed: &[&str]| -> Result<(), String> {
        match fields.iter().find(|(set, name)| *set && !allowed.contains(name)) {
            Some((_, name)) => Err(format!("signedIdentity field {name:?} is not allowed for type {:?}", raw.typ)),
            None => Ok(()),
        }
    };
    let missing = |name: &str| format!("signedIdentity {:?} requires {name:?}", raw.typ);
    let id = match raw.typ.as_str() {
        "matchExact" => {
            only(&[])?;
            SignedIdentity::MatchExact
        }
        "matchRepoDigestOrExact" => {
            only(&[])?;
            SignedIdentity::MatchRepoDigestOrExact
        }
        "matchRepository" => {
            only(&[])?;
            SignedIdentity::MatchRepository
        }
        "exactReference" => {
            only(&["dockerReference"])?;
            SignedIdentity::ExactReference {
                docker_reference: raw.docker_reference.clone().ok_or_else(|| missing("dockerReference"))?,
            }
        }
        "exactRepository" => {
            only(&["dockerRepository"])?;
            SignedIdentity::ExactRepository {
                docker_repository: raw.docker_repository.clone().ok_or_else(|| missing("dockerRepository"))?,
            }
        }
        "remapIdentity" => {
            only(&["prefix", "signedPrefix"])?;
            SignedIdentity::RemapIdentity {
                prefix: raw.prefix.clone().ok_or_else(|| missing("prefix"))?,
                signed_prefix: raw.signed_prefix.clone().ok_or_else(|| missing("signedPrefix"))?,
            }
        }
        other => return Err(format!("unknown signedIdentity type {other:?}")),
    };
    id.validate()?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Policy, PolicyError> {
        Policy::from_json(s.as_bytes())
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_reference_example() {
        let p = parse(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"127.0.0.1:5055/demo/signed":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k/signer.gpg"}]}}}"#,
        )
        .unwrap();
        assert_eq!(p.default, [Requirement::Reject]);
        let reqs = &p.transports["docker"]["127.0.0.1:5055/demo/signed"];
        assert_eq!(
            reqs[..],
            [Requirement::SignedBy(SignedBy {
                key_type: GpgKeyType::GpgKeys,
                keys: KeySpec::Path("/k/signer.gpg".into()),
                signed_identity: SignedIdentity::MatchRepoDigestOrExact,
            })]
        );
    }

    #[test]
    fn parses_every_requirement_and_identity() {
        let p = parse(
            r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{
              "a.io/x":[{"type":"signedBy","keyType":"GPGKeys","keyPaths":["/a","kbs:///default/keys/gpg"],"signedIdentity":{"type":"matchExact"}}],
              "a.io/y":[{"type":"signedBy","keyType":"GPGKeys","keyData":"aGVsbG8=","signedIdentity":{"type":"exactReference","dockerReference":"a.io/y:1"}}],
              "a.io/z":[{"type":"sigstoreSigned","keyPath":"kbs://kbs.example/default/cosign/pub","signedIdentity":{"type":"matchRepository"}}],
              "b.io":[{"type":"sigstoreSigned","keyDatas":["aGVsbG8=","d29ybGQ="],"signedIdentity":{"type":"exactRepository","dockerRepository":"b.io/r"}}],
              "c.io":[{"type":"sigstoreSigned","keyData":"aGVs\nbG8=","signedIdentity":{"type":"remapIdentity","prefix":"c.io","signedPrefix":"d.io/ns"}}],
              "*.e.io":[{"type":"sigstoreSigned","fulcio":{"caPath":"/ca","oidcIssuer":"https://x","subjectEmail":"a@b"},"rekorPublicKeyPath":"/r"}],
              "f.io":[{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyData":"aGVsbG8="}],
              "g.io":[{"type":"sigstoreSigned","pki":{"caRootsPath":"/x"}},{"type":"signedBy","keyType":"X509Certificates","keyPath":"/x"}],
              "":[{"type":"reject"}]
            },"oci":{"":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        let d = &p.transports["docker"];
        assert_eq!(d.len(), 9);
        match &d["c.io"][0] {
            Requirement::SigstoreSigned(s) => {
                assert_eq!(s.trust, SigstoreTrust::Keys(KeySpec::Data(b"hello".to_vec())));
                assert!(matches!(s.signed_identity, SignedIdentity::RemapIdentity { .. }));
            }
            other => panic!("{other:?}"),
        }
        match &d["b.io"][0] {
            Requirement::SigstoreSigned(s) => {
                assert_eq!(s.trust, SigstoreTrust::Keys(KeySpec::Datas(vec![b"hello".to_vec(), b"world".to_vec()])))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &d["*.e.io"][0],
            Requirement::SigstoreSigned(SigstoreSigned {
                trust: SigstoreTrust::Fulcio(_),
                rekor_public_key: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn strictness() {
        let cases: &[(&str, &str)] = &[
            ("", "cannot parse"),
            ("[]", "cannot parse"),
            (r#"{}"#, "\"default\" requirement list is missing"),
            (r#"{"default":[]}"#, "empty requirement list"),
            (r#"{"default":[{"type":"reject"}],"extra":1}"#, "unknown field"),
            (r#"{"default":[{"type":"nope"}]}"#, "unknown or unsupported requirement type \"nope\""),
            (r#"{"default":[{"type":"signedBaseLayer"}]}"#, "unsupported requirement type"),
            (r#"{"default":[{}]}"#, "missing field `type`"),
            (r#"{"default":[{"type":"reject","keyPath":"/x"}]}"#, "not allowed in a \"reject\""),
            (r#"{"default":[{"type":"reject","bogus":1}]}"#, "unknown field `bogus`"),
            (r#"{"default":[{"type":"reject","type":"reject"}]}"#, "duplicate field"),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a":[{"type":"reject"}],"a":[{"type":"reject"}]}}}"#,
                "duplicate key \"a\"",
            ),
            (r#"{"default":[{"type":"reject"}],"transports":{"dockr":{}}}"#, "unknown transport \"dockr\""),
            (r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io":[]}}}"#, "empty requirement list"),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io/*":[{"type":"reject"}]}}}"#,
                "only allowed as a leading",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"https://a.io":[{"type":"reject"}]}}}"#,
                "URL scheme",
            ),
            (r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io ":[{"type":"reject"}]}}}"#, "whitespace"),
            (r#"{"default":[{"type":"signedBy","keyPath":"/k"}]}"#, "requires \"keyType\""),
            (r#"{"default":[{"type":"signedBy","keyType":"PGP","keyPath":"/k"}]}"#, "unknown keyType"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}"#, "exactly one of keyPath"),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","keyData":"aGVsbG8="}]}"#,
                "only one of",
            ),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyDatas":["aGVsbG8="]}]}"#, "not allowed"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPaths":[]}]}"#, "empty key path list"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":""}]}"#, "empty key path"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"!!"}]}"#, "not valid base64"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":""}]}"#, "key data is empty"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"kbs:///a/b"}]}"#, "kbs"),
            (r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","fulcio":{}}]}"#, "not allowed"),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"matchAll"}}]}"#,
                "unknown signedIdentity type",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"matchExact","prefix":"a"}}]}"#,
                "not allowed for type",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"exactReference"}}]}"#,
                "requires \"dockerReference\"",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"a.io/b"}}]}"#,
                "neither a tag nor a digest",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"exactRepository","dockerRepository":"a.io/b:1"}}]}"#,
                "must not have a tag",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"remapIdentity","prefix":"a.io"}}]}"#,
                "requires \"signedPrefix\"",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"remapIdentity","prefix":"a.io/X","signedPrefix":"b.io"}}]}"#,
                "is not a host",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"matchExact","extra":1}}]}"#,
                "unknown field `extra`",
            ),
            (r#"{"default":[{"type":"sigstoreSigned"}]}"#, "exactly one of keyPath"),
            (r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","fulcio":{"caPath":"/c"}}]}"#, "exactly one of"),
            (r#"{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/c"}}]}"#, "requires a Rekor public key"),
            (r#"{"default":[{"type":"sigstoreSigned","fulcio":"x","rekorPublicKeyPath":"/r"}]}"#, "must be an object"),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyPath":"/r","rekorPublicKeyData":"aGVsbG8="}]}"#,
                "only one of rekor",
            ),
            (r#"{"default":[{"type":"sigstoreSigned","keyType":"GPGKeys","keyPath":"/k"}]}"#, "not allowed"),
            (r#"{"default":[{"type":"sigstoreSigned","keyDatas":[]}]}"#, "empty key data list"),
        ];
        for (doc, want) in cases {
            let e = err(doc);
            assert!(e.contains(want), "{doc}\n  got: {e}\n  want: {want}");
        }
    }

    #[test]
    fn scope_lookup() {
        let p = parse(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
              "reg.example.com:5000/ns/app:v1":[{"type":"insecureAcceptAnything"}],
              "reg.example.com:5000/ns/app":[{"type":"reject"}],
              "reg.example.com:5000/ns":[{"type":"reject"}],
              "reg.example.com:5000":[{"type":"reject"}],
              "*.example.com":[{"type":"reject"}],
              "other.io/app@sha256:1111111111111111111111111111111111111111111111111111111111111111":[{"type":"reject"}]
            }}}"#,
        )
        .unwrap();
        let scope = |s: &str| p.requirements_for(&ImageIdentity::parse(s).unwrap()).unwrap().0;
        assert_eq!(
            scope("reg.example.com:5000/ns/app:v1"),
            MatchedScope::Docker("reg.example.com:5000/ns/app:v1".into())
        );
        assert_eq!(scope("reg.example.com:5000/ns/app:v2"), MatchedScope::Docker("reg.example.com:5000/ns/app".into()));
        assert_eq!(scope("reg.example.com:5000/ns/other:v1"), MatchedScope::Docker("reg.example.com:5000/ns".into()));
        assert_eq!(scope("reg.example.com:5000/x/y"), MatchedScope::Docker("reg.example.com:5000".into()));
        assert_eq!(scope("reg.example.com/x/y"), MatchedScope::Docker("*.example.com".into()));
        assert_eq!(scope("a.b.example.com/x"), MatchedScope::Docker("*.example.com".into()));
        assert_eq!(scope("example.com/x"), MatchedScope::Default);
        assert_eq!(scope("busybox"), MatchedScope::Default);
        let d = "other.io/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";
        assert_eq!(scope(d), MatchedScope::Docker(d.into()));
        // A tag given together with the digest also selects the tag scope when no digest scope matches.
        let both =
            "reg.example.com:5000/ns/app:v1@sha256:2222222222222222222222222222222222222222222222222222222222222222";
        assert_eq!(scope(both), MatchedScope::Docker("reg.example.com:5000/ns/app:v1".into()));

        let p = parse(r#"{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"insecureAcceptAnything"}],"a.io":[{"type":"reject"}]}}}"#).unwrap();
        assert_eq!(
            p.requirements_for(&ImageIdentity::parse("b.io/x").unwrap()).unwrap().0,
            MatchedScope::DockerDefault
        );
        assert_eq!(
            p.requirements_for(&ImageIdentity::parse("a.io/x").unwrap()).unwrap().0,
            MatchedScope::Docker("a.io".into())
        );
        // Other transports' scopes never apply to docker images.
        let p =
            parse(r#"{"default":[{"type":"reject"}],"transports":{"oci":{"":[{"type":"insecureAcceptAnything"}]}}}"#)
                .unwrap();
        assert_eq!(p.requirements_for(&ImageIdentity::parse("b.io/x").unwrap()).unwrap().0, MatchedScope::Default);
    }

    #[test]
    fn oversized_policy_is_refused() {
        let big = vec![b' '; MAX_POLICY_SIZE + 1];
        assert!(Policy::from_json(&big).unwrap_err().to_string().contains("more than"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("type".to_string()),
                Just("default".to_string()),
                Just("transports".to_string()),
                Just("docker".to_string()),
                Just("keyType".to_string()),
                Just("keyPath".to_string()),
                Just("keyPaths".to_string()),
                Just("keyData".to_string()),
                Just("keyDatas".to_string()),
                Just("signedIdentity".to_string()),
                Just("dockerReference".to_string()),
                Just("dockerRepository".to_string()),
                Just("prefix".to_string()),
                Just("signedPrefix".to_string()),
                Just("fulcio".to_string()),
                Just("".to_string()),
                "[a-zA-Z.:/*@]{0,12}",
            ]
        }

        fn leaf() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("reject".to_string()),
                    Just("insecureAcceptAnything".to_string()),
                    Just("signedBy".to_string()),
                    Just("sigstoreSigned".to_string()),
                    Just("GPGKeys".to_string()),
                    Just("matchExact".to_string()),
                    Just("remapIdentity".to_string()),
                    Just("exactReference".to_string()),
                    Just("kbs:///a/b/c".to_string()),
                    Just("aGVsbG8=".to_string()),
                    ".{0,20}",
                ]
                .prop_map(serde_json::Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = serde_json::Value> {
            leaf().prop_recursive(5, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    proptest::collection::vec((key(), inner), 0..6)
                        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]
            #[test]
            fn parser_never_panics_on_json(v in value()) {
                let bytes = serde_json::to_vec(&v).unwrap();
                let _ = Policy::from_json(&bytes);
            }

            #[test]
            fn parser_never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = Policy::from_json(&b);
            }
        }
    }
}
