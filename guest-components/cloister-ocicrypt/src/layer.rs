//! Putting it together: unwrapping a layer's private options with the configured keys and
//! providers, and encrypting a layer to recipients.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use crate::aa::{WrapKey, wrap_attestation_agent};
use crate::annotations::{
    ENCRYPTED_SUFFIX, EncryptedLayer, KeyScheme, PrivateOptions, PublicOptions, WrappedKeys, build_annotations,
};
use crate::cipher::{LayerDecryptReader, encrypt_stream};
use crate::error::OcicryptError;
use crate::jwe::{self, Jwe, JwePrivateKey, JwePublicKey};
use crate::keyprovider::KeyProvider;

/// The keys and providers a guest may use to decrypt layers.
#[derive(Clone, Default)]
pub struct DecryptConfig {
    /// Private keys for `enc.keys.jwe` recipients.
    pub jwe_keys: Vec<JwePrivateKey>,
    /// Providers for `enc.keys.provider.<name>` annotations (matched by [`KeyProvider::name`]).
    pub providers: Vec<Arc<dyn KeyProvider>>,
}

impl fmt::Debug for DecryptConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl DecryptConfig {
    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.jwe_keys.is_empty() && self.providers.is_empty()
    }

    /// What is configured, without secrets.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.providers.iter().map(|p| format!("provider.{}", p.name())).collect();
        parts.extend(self.jwe_keys.iter().map(|k| format!("jwe key {}", k.description())));
        if parts.is_empty() { "nothing".into() } else { parts.join(", ") }
    }
}

/// Finds the private options of `layer`: first every configured provider whose annotation is
/// present (each comma-separated part), then the JWE recipients with every key.
///
/// Errors: [`OcicryptError::NoKeyForRecipients`] when nothing configured matches any recipient;
/// [`OcicryptError::UnwrapFailed`] (one line per attempt) when something was tried and failed.
pub async fn unwrap_private_options(
    layer: &EncryptedLayer,
    config: &DecryptConfig,
) -> Result<PrivateOptions, OcicryptError> {
    let mut attempts: Vec<String> = Vec::new();
    for provider in &config.providers {
        let scheme = KeyScheme::Provider(provider.name().to_owned());
        let Some(wrapped) = layer.keys_for(&scheme) else { continue };
        for (i, blob) in wrapped.blobs.iter().enumerate() {
            let result = match provider.unwrap_key(blob).await {
                Ok(json) => PrivateOptions::from_json(&json),
                Err(e) => Err(e),
            };
            match result {
                Ok(opts) => {
                    tracing::debug!(provider = provider.name(), part = i, "layer key unwrapped");
                    return Ok(opts);
                }
                Err(e) => {
                    tracing::debug!(provider = provider.name(), part = i, error = %e, "key provider failed");
                    attempts.push(format!("{scheme} part {i}: {e}"));
                }
            }
        }
    }
    if let Some(wrapped) = layer.keys_for(&KeyScheme::Jwe)
        && !config.jwe_keys.is_empty()
    {
        for (i, blob) in wrapped.blobs.iter().enumerate() {
            let result = Jwe::parse(blob).and_then(|j| j.decrypt(&config.jwe_keys));
            match result {
                Ok(json) => match PrivateOptions::from_json(&json) {
                    Ok(opts) => {
                        tracing::debug!(part = i, "layer key unwrapped from JWE");
                        return Ok(opts);
                    }
                    Err(e) => attempts.push(format!("jwe part {i}: {e}")),
                },
                Err(OcicryptError::NoKeyForRecipients { .. }) => {}
                Err(OcicryptError::UnwrapFailed { attempts: a }) => {
                    attempts.extend(a.into_iter().map(|s| format!("jwe part {i} {s}")));
                }
                Err(e) => attempts.push(format!("jwe part {i}: {e}")),
            }
        }
    }
    if attempts.is_empty() {
        return Err(OcicryptError::NoKeyForRecipients {
            recipients: layer.recipients_summary(),
            configured: config.summary(),
        });
    }
    Err(OcicryptError::UnwrapFailed { attempts })
}

/// Unwraps the private options and returns a verifying decrypting reader over `ciphertext`
/// (`size`: the descriptor's size, if known).
pub async fn decrypt_layer<R: Read>(
    layer: &EncryptedLayer,
    config: &DecryptConfig,
    ciphertext: R,
    size: Option<u64>,
) -> Result<LayerDecryptReader<R>, OcicryptError> {
    let opts = unwrap_private_options(layer, config).await?;
    let r = LayerDecryptReader::new(ciphertext, &layer.public_options, &opts)?;
    Ok(match size {
        Some(s) => r.with_expected_size(s),
        None => r,
    })
}

/// The recipients of a layer being encrypted.
#[derive(Debug, Clone, Default)]
pub struct EncryptConfig {
    /// JWE recipients (one JWE with all of them, as ocicrypt does).
    pub jwe_recipients: Vec<JwePublicKey>,
    /// `provider.attestation-agent` recipients (one v1 packet each).
    pub attestation_agent: Vec<WrapKey>,
}

/// An encrypted layer: what to put in its descriptor.
#[derive(Debug)]
pub struct EncryptedLayerOutput {
    /// The descriptor annotations (`enc.pubopts` and `enc.keys.*`).
    pub annotations: BTreeMap<String, String>,
    /// The public options.
    pub public_options: PublicOptions,
    /// The private options (the secrets the annotations wrap; for tests and tools).
    pub private_options: PrivateOptions,
    /// Ciphertext size (the descriptor's `size`).
    pub size: u64,
    /// `sha256:<hex>` of the ciphertext (the descriptor's `digest`).
    pub digest: String,
}

/// The media type of the encrypted form of a layer (`…+encrypted`).
pub fn encrypted_media_type(media_type: &str) -> String {
    format!("{media_type}{ENCRYPTED_SUFFIX}")
}

/// Wraps private options for every recipient of `config`: the `enc.keys.*` entries.
pub fn wrap_private_options(
    private: &PrivateOptions,
    config: &EncryptConfig,
) -> Result<Vec<WrappedKeys>, OcicryptError> {
    let json = private.to_json();
    let mut keys = Vec::new();
    if !config.attestation_agent.is_empty() {
        let blobs = config
            .attestation_agent
            .iter()
            .map(|k| wrap_attestation_agent(k.kek(), k.kid(), &json))
            .collect::<Result<Vec<_>, _>>()?;
        keys.push(WrappedKeys { scheme: KeyScheme::Provider(crate::aa::ATTESTATION_AGENT.into()), blobs });
    }
    if !config.jwe_recipients.is_empty() {
        keys.push(WrappedKeys { scheme: KeyScheme::Jwe, blobs: vec![jwe::encrypt(&json, &config.jwe_recipients)?] });
    }
    if keys.is_empty() {
        return Err(OcicryptError::Key("no recipients to encrypt the layer to".into()));
    }
    Ok(keys)
}

/// Encrypts the (compressed) layer blob `reader` into `writer` with a fresh key, wrapped for each
/// recipient of `config`. The media type of the result is [`encrypted_media_type`] of the input's.
pub fn encrypt_layer<R: Read, W: Write>(
    reader: R,
    writer: W,
    config: &EncryptConfig,
) -> Result<EncryptedLayerOutput, OcicryptError> {
    if config.jwe_recipients.is_empty() && config.attestation_agent.is_empty() {
        return Err(OcicryptError::Key("no recipients to encrypt the layer to".into()));
    }
    let s = encrypt_stream(reader, writer)?;
    let keys = wrap_private_options(&s.private_options, config)?;
    Ok(EncryptedLayerOutput {
        annotations: build_annotations(&s.public_options, &keys),
        public_options: s.public_options,
        private_options: s.private_options,
        size: s.size,
        digest: s.digest,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::aa::{AttestationAgentProvider, OfflineKekSource};
    use crate::jwe::EcCurve;
    use zeroize::Zeroizing;

    fn layer_of(out: &EncryptedLayerOutput) -> EncryptedLayer {
        EncryptedLayer::parse("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", &out.annotations)
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn encrypt_then_unwrap_with_each_recipient() {
        let ec = JwePrivateKey::generate_ec(EcCurve::P256).with_label("ec.pem");
        let ec2 = JwePrivateKey::generate_ec(EcCurve::P521);
        let kek = Zeroizing::new([9u8; 32]);
        let config = EncryptConfig {
            jwe_recipients: vec![ec.public_key(), ec2.public_key()],
            attestation_agent: vec![WrapKey::new("kbs:///default/key/1", kek.clone()).unwrap()],
        };
        let data = b"compressed layer bytes".repeat(100);
        let mut blob = Vec::new();
        let out = encrypt_layer(&data[..], &mut blob, &config).unwrap();
        assert_eq!(out.size, data.len() as u64);
        let layer = layer_of(&out);
        assert_eq!(layer.recipients_summary(), "jwe (1), provider.attestation-agent (1)");

        // JWE key only.
        let cfg = DecryptConfig { jwe_keys: vec![ec2], providers: vec![] };
        let opts = unwrap_private_options(&layer, &cfg).await.unwrap();
        assert_eq!(opts, out.private_options);
        let mut r = decrypt_layer(&layer, &cfg, &blob[..], Some(out.size)).await.unwrap();
        let mut plain = Vec::new();
        r.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, data);

        // Provider only.
        let mut src = OfflineKekSource::new();
        src.insert("default/key/1", Zeroizing::new(kek.to_vec())).unwrap();
        let cfg = DecryptConfig { jwe_keys: vec![], providers: vec![Arc::new(AttestationAgentProvider::new(src))] };
        assert_eq!(unwrap_private_options(&layer, &cfg).await.unwrap(), out.private_options);
    }

    #[tokio::test]
    async fn error_kinds() {
        let ec = JwePrivateKey::generate_ec(EcCurve::P256);
        let config = EncryptConfig { jwe_recipients: vec![ec.public_key()], attestation_agent: vec![] };
        let out = encrypt_layer(&b"x"[..], Vec::new(), &config).unwrap();
        let layer = layer_of(&out);
        // Nothing configured.
        match unwrap_private_options(&layer, &DecryptConfig::default()).await {
            Err(OcicryptError::NoKeyForRecipients { recipients, configured }) => {
                assert_eq!(recipients, "jwe (1)");
                assert_eq!(configured, "nothing");
            }
            other => panic!("{other:?}"),
        }
        // A provider with no annotation on the layer, and a key of another curve: still "no key".
        let src = OfflineKekSource::new();
        let cfg = DecryptConfig {
            jwe_keys: vec![JwePrivateKey::generate_ec(EcCurve::P384)],
            providers: vec![Arc::new(AttestationAgentProvider::new(src))],
        };
        let e = unwrap_private_options(&layer, &cfg).await.unwrap_err();
        assert!(matches!(e, OcicryptError::NoKeyForRecipients { .. }), "{e}");
        assert!(e.to_string().contains("provider.attestation-agent, jwe key EC P-384"), "{e}");
        // Same curve, wrong key: tried.
        let cfg = DecryptConfig {
            jwe_keys: vec![JwePrivateKey::generate_ec(EcCurve::P256).with_label("other.pem")],
            providers: vec![],
        };
        match unwrap_private_options(&layer, &cfg).await {
            Err(OcicryptError::UnwrapFailed { attempts }) => {
                assert_eq!(attempts.len(), 1);
                assert!(
                    attempts[0].starts_with("jwe part 0 recipient 0 (ECDH-ES+A256KW P-256) with other.pem"),
                    "{attempts:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing to encrypt to.
        assert!(encrypt_layer(&b"x"[..], Vec::new(), &EncryptConfig::default()).is_err());
        assert_eq!(encrypted_media_type("a+gzip"), "a+gzip+encrypted");
    }
}
