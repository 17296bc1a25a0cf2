//! Admin API authorisation: `Authorization: Bearer <JWT>` checked against configured identity
//! providers (Ed25519 or P-256 public keys), then a role-based regex ACL over the request path.

use cloister_kbs_protocol::admin::{AdminPublicKey, Expect, verify};
use regex::Regex;

use crate::config::Admin;
use crate::error::{ConfigError, KbsError};

/// How admin requests are authorised.
#[derive(Debug)]
pub enum AdminAuth {
    /// Everyone is admin (development only; named so in the config: `InsecureAllowAll`).
    InsecureAllowAll,
    /// Nobody is.
    DenyAll,
    /// Bearer JWTs.
    Jwt {
        /// Keys and claim requirements.
        providers: Vec<(AdminPublicKey, Expect)>,
        /// (role, path regex).
        acls: Vec<(String, Regex)>,
    },
}

fn uri_path(uri: &str) -> &str {
    uri.strip_prefix("file://").unwrap_or(uri)
}

impl AdminAuth {
    /// From configuration; `default_key` is used when JWT mode has no identity provider.
    pub fn from_config(c: &Admin, default_key: Option<AdminPublicKey>) -> Result<Self, ConfigError> {
        match c.authorization_mode.as_str() {
            "InsecureAllowAll" => {
                tracing::warn!("admin.authorization_mode = InsecureAllowAll: anyone can change resources and policies");
                return Ok(Self::InsecureAllowAll);
            }
            "DenyAll" => return Ok(Self::DenyAll),
            _ => {}
        }
        let mut providers = Vec::new();
        for p in &c.authentication.bearer_jwt.identity_providers {
            if p.public_key_uri.starts_with("http://") || p.public_key_uri.starts_with("https://") {
                return Err(ConfigError::Invalid("remote admin public_key_uri is not supported; use a file".into()));
            }
            let path = uri_path(&p.public_key_uri);
            let bytes = std::fs::read(path).map_err(|e| ConfigError::Io { path: path.into(), error: e.to_string() })?;
            let key = AdminPublicKey::from_spki(&bytes).map_err(|e| ConfigError::Invalid(format!("{path}: {e}")))?;
            providers.push((key, Expect { issuer: p.issuer.clone(), audience: p.audience.clone() }));
        }
        if providers.is_empty() {
            match default_key {
                Some(k) => providers.push((k, Expect::default())),
                None => return Err(ConfigError::Invalid("admin JWT mode without any identity provider".into())),
            }
        }
        let acls = c
            .authorization
            .regex_acl
            .acls
            .iter()
            .map(|a| {
                Ok((a.role.clone(), Regex::new(&a.allowed_endpoints).map_err(|e| ConfigError::Invalid(e.to_string()))?))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self::Jwt { providers, acls })
    }

    /// Checks a request to `path` with the given `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>, path: &str, now: u64) -> Result<(), KbsError> {
        let (providers, acls) = match self {
            Self::InsecureAllowAll => return Ok(()),
            Self::DenyAll => return Err(KbsError::AdminForbidden("admin API disabled (DenyAll)".into())),
            Self::Jwt { providers, acls } => (providers, acls),
        };
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| KbsError::AdminAuth("no Authorization: Bearer admin token".into()))?
            .trim();
        let mut last = None;
        for (key, expect) in providers {
            match verify(token, key, expect, now) {
                Ok(claims) => {
                    let role = claims
                        .get("role")
                        .and_then(serde_json::Value::as_str)
                        .ok_or_else(|| KbsError::AdminForbidden("admin token has no role claim".into()))?;
                    if acls.iter().any(|(r, re)| r == role && re.is_match(path)) {
                        return Ok(());
                    }
                    return Err(KbsError::AdminForbidden(format!("role {role:?} may not call {path}")));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(KbsError::AdminAuth(last.map(|e| e.to_string()).unwrap_or_else(|| "no key".into())))
    }
}
