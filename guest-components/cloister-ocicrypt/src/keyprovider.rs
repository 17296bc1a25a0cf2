//! The ocicrypt keyprovider protocol: the JSON messages (as Go's `encoding/json` writes them), the
//! [`KeyProvider`] trait, the `cmd` transport ([`CmdKeyProvider`]), the
//! `OCICRYPT_KEYPROVIDER_CONFIG` file, and the provider side ([`handle_keyprovider_request`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::error::OcicryptError;
use crate::util::GoBytes;

/// A boxed, sendable future (what [`KeyProvider`] and [`crate::KekSource`] methods return, so the
/// traits stay object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The environment variable naming the key provider configuration file.
pub const KEYPROVIDER_CONFIG_ENV: &str = "OCICRYPT_KEYPROVIDER_CONFIG";
/// `op` of a wrap request.
pub const OP_KEYWRAP: &str = "keywrap";
/// `op` of an unwrap request.
pub const OP_KEYUNWRAP: &str = "keyunwrap";
/// The most a `cmd` provider may write to stdout.
pub const MAX_PROVIDER_OUTPUT: usize = 1 << 20;
/// The default time a `cmd` provider may take.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that unwraps (and possibly wraps) layer keys for annotations
/// `org.opencontainers.image.enc.keys.provider.<name>`.
pub trait KeyProvider: Send + Sync {
    /// The provider name (the annotation suffix after `provider.`).
    fn name(&self) -> &str;

    /// Unwraps one annotation blob (the base64-decoded annotation part) into the private options
    /// JSON.
    fn unwrap_key<'a>(&'a self, annotation: &'a [u8]) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, OcicryptError>>;

    /// Wraps private options JSON into an annotation blob, given the encryption parameters for this
    /// provider (`--encryption-key provider:<name>:<params>`). Unsupported by default.
    fn wrap_key<'a>(
        &'a self,
        params: &'a [Vec<u8>],
        private_options: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, OcicryptError>> {
        let _ = (params, private_options);
        Box::pin(async move {
            Err(OcicryptError::KeyProvider { provider: self.name().to_owned(), reason: "cannot wrap keys".into() })
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Messages

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Parameters by provider name (`map[string][][]byte` in Go).
pub type Parameters = BTreeMap<String, Vec<GoBytes>>;

/// Go's `config.DecryptConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptConfigJson {
    /// Decryption parameters by provider or scheme name.
    #[serde(rename = "Parameters", default, deserialize_with = "null_as_default")]
    pub parameters: Parameters,
}

/// Go's `config.EncryptConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptConfigJson {
    /// Encryption parameters by provider or scheme name.
    #[serde(rename = "Parameters", default, deserialize_with = "null_as_default")]
    pub parameters: Parameters,
    /// The embedded decrypt configuration (`{}` or `null` accepted).
    #[serde(rename = "DecryptConfig", default, deserialize_with = "null_as_default")]
    pub decrypt_config: DecryptConfigJson,
}

/// `keywrapparams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWrapParams {
    /// The encrypt configuration.
    #[serde(default)]
    pub ec: Option<EncryptConfigJson>,
    /// The private options to wrap.
    #[serde(default)]
    pub optsdata: Option<GoBytes>,
}

/// `keyunwrapparams`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUnwrapParams {
    /// The decrypt configuration.
    #[serde(default)]
    pub dc: Option<DecryptConfigJson>,
    /// The annotation blob to unwrap.
    #[serde(default)]
    pub annotation: Option<GoBytes>,
}

/// The request ocicrypt writes to a provider. Both parameter objects are always emitted, as Go does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProviderInput {
    /// `keywrap` or `keyunwrap`.
    #[serde(default)]
    pub op: String,
    /// Wrap parameters (`{"ec":null,"optsdata":null}` for unwrap).
    #[serde(default)]
    pub keywrapparams: KeyWrapParams,
    /// Unwrap parameters (`{"dc":null,"annotation":null}` for wrap).
    #[serde(default)]
    pub keyunwrapparams: KeyUnwrapParams,
}

impl KeyProviderInput {
    /// An unwrap request.
    pub fn unwrap_request(annotation: &[u8], dc: DecryptConfigJson) -> Self {
        KeyProviderInput {
            op: OP_KEYUNWRAP.into(),
            keywrapparams: KeyWrapParams::default(),
            keyunwrapparams: KeyUnwrapParams { dc: Some(dc), annotation: Some(GoBytes::new(annotation.to_vec())) },
        }
    }

    /// A wrap request.
    pub fn wrap_request(private_options: &[u8], ec: EncryptConfigJson) -> Self {
        KeyProviderInput {
            op: OP_KEYWRAP.into(),
            keywrapparams: KeyWrapParams { ec: Some(ec), optsdata: Some(GoBytes::new(private_options.to_vec())) },
            keyunwrapparams: KeyUnwrapParams::default(),
        }
    }

    /// Parses a request.
    pub fn parse(json: &[u8]) -> Result<Self, OcicryptError> {
        serde_json::from_slice(json).map_err(|e| OcicryptError::Protocol(format!("request: {}", redact(&e))))
    }

    /// The request JSON (contains private options for `keywrap`: zeroized on drop).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// `keywrapresults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWrapResults {
    /// The annotation blob.
    #[serde(default)]
    pub annotation: Option<GoBytes>,
}

/// `keyunwrapresults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUnwrapResults {
    /// The private options JSON.
    #[serde(default)]
    pub optsdata: Option<GoBytes>,
}

/// A provider's answer. Byte fields are accepted as base64 strings or integer arrays, and emitted
/// as base64; an absent result object is not emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProviderOutput {
    /// Set for `keywrap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywrapresults: Option<KeyWrapResults>,
    /// Set for `keyunwrap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyunwrapresults: Option<KeyUnwrapResults>,
}

/// serde_json messages can quote input; the protocol carries secrets, so keep only the position.
fn redact(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected member types",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

impl KeyProviderOutput {
    /// Parses a provider's stdout.
    pub fn parse(json: &[u8]) -> Result<Self, OcicryptError> {
        serde_json::from_slice(json).map_err(|e| OcicryptError::Protocol(format!("response: {}", redact(&e))))
    }

    /// The private options of an unwrap answer.
    pub fn into_optsdata(self) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let d = self
            .keyunwrapresults
            .and_then(|r| r.optsdata)
            .ok_or_else(|| OcicryptError::Protocol("response has no keyunwrapresults.optsdata".into()))?;
        Ok(d.0)
    }

    /// The annotation of a wrap answer.
    pub fn into_annotation(self) -> Result<Vec<u8>, OcicryptError> {
        let a = self
            .keywrapresults
            .and_then(|r| r.annotation)
            .ok_or_else(|| OcicryptError::Protocol("response has no keywrapresults.annotation".into()))?;
        Ok(a.0.to_vec())
    }

    /// The JSON (may contain private options: zeroized on drop).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }
}

// ------------------------------------------------------------------------------------------------
// cmd transport

/// A key provider run as a program: request JSON on stdin, answer JSON on stdout.
#[derive(Debug, Clone)]
pub struct CmdKeyProvider {
    name: String,
    path: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    decrypt_parameters: Vec<Vec<u8>>,
}

impl CmdKeyProvider {
    /// A provider `name` running `path args…`. Unwrap requests carry
    /// `dc.Parameters = {name: ["Enabled"]}`, as Go ocicrypt sends for
    /// `--decryption-key provider:<name>`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, args: Vec<String>) -> Self {
        CmdKeyProvider {
            name: name.into(),
            path: path.into(),
            args,
            timeout: DEFAULT_PROVIDER_TIMEOUT,
            decrypt_parameters: vec![b"Enabled".to_vec()],
        }
    }

    /// Changes the time limit per call (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Changes the parameters sent as `dc.Parameters[name]` with unwrap requests.
    pub fn with_decrypt_parameters(mut self, params: Vec<Vec<u8>>) -> Self {
        self.decrypt_parameters = params;
        self
    }

    /// The program.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl Into<String>) -> OcicryptError {
        OcicryptError::KeyProvider { provider: self.name.clone(), reason: reason.into() }
    }

    /// Runs the program once with `input` on stdin; returns its stdout (at most
    /// [`MAX_PROVIDER_OUTPUT`] bytes), failing on a non-zero exit or the timeout.
    pub async fn run(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let mut child = tokio::process::Command::new(&self.path)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.err(format!("cannot run {}: {e}", self.path.display())))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(self.err("no pipes to the child"));
        };
        let work = async {
            let write = async {
                let r = stdin.write_all(input).await;
                drop(stdin);
                r
            };
            let read_out = async {
                let mut out = Zeroizing::new(Vec::new());
                let r = stdout.take(MAX_PROVIDER_OUTPUT as u64 + 1).read_to_end(&mut out).await;
                r.map(|_| out)
            };
            let read_err = async {
                // Keep the first 4 KiB, drain the rest so the child never blocks on a full pipe.
                let mut stderr = stderr;
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = 4096usize.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
                kept
            };
            let (w, out, err) = tokio::join!(write, read_out, read_err);
            (w, out, err)
        };
        let (w, out, err_text) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                let _ = child.start_kill();
                return Err(self.err(format!("no answer within {:?}", self.timeout)));
            }
        };
        let out = out.map_err(|e| self.err(format!("reading stdout: {e}")))?;
        if out.len() > MAX_PROVIDER_OUTPUT {
            let _ = child.start_kill();
            return Err(self.err(format!("wrote more than {MAX_PROVIDER_OUTPUT} bytes")));
        }
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(s) => s.map_err(|e| self.err(format!("waiting: {e}")))?,
            Err(_) => {
                let _ = child.start_kill();
                return Err(self.err(format!("did not exit within {:?}", self.timeout)));
            }
        };
        let stderr_text = String::from_utf8_lossy(&err_text);
        let stderr_text: String = stderr_text.trim().chars().take(512).collect();
        if !status.success() {
            return Err(self.err(format!("exited with {status}; stderr: {stderr_text:?}")));
        }
        if let Err(e) = w {
            // A provider that answers without reading all of stdin is tolerated.
            tracing::debug!(provider = %self.name, error = %e, "writing the request");
        }
        Ok(out)
    }
}

impl KeyProvider for CmdKeyProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn unwrap_key<'a>(&'a self, annotation: &'a [u8]) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, OcicryptError>> {
        Box::pin(async move {
            let dc = DecryptConfigJson {
                parameters: BTreeMap::from([(
                    self.name.clone(),
                    self.decrypt_parameters.iter().map(|p| GoBytes::new(p.clone())).collect(),
                )]),
            };
            let input = KeyProviderInput::unwrap_request(annotation, dc).to_json();
            tracing::debug!(provider = %self.name, path = %self.path.display(), "keyunwrap");
            let out = self.run(&input).await?;
            KeyProviderOutput::parse(&out)
                .and_then(KeyProviderOutput::into_optsdata)
                .map_err(|e| self.err(e.to_string()))
        })
    }

    fn wrap_key<'a>(
        &'a self,
        params: &'a [Vec<u8>],
        private_options: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, OcicryptError>> {
        Box::pin(async move {
            let ec = EncryptConfigJson {
                parameters: BTreeMap::from([(
                    self.name.clone(),
                    params.iter().map(|p| GoBytes::new(p.clone())).collect(),
                )]),
                decrypt_config: DecryptConfigJson::default(),
            };
            let input = KeyProviderInput::wrap_request(private_options, ec).to_json();
            let out = self.run(&input).await?;
            KeyProviderOutput::parse(&out)
                .and_then(KeyProviderOutput::into_annotation)
                .map_err(|e| self.err(e.to_string()))
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Configuration

/// `cmd` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandConfig {
    /// The program.
    pub path: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<String>,
}

/// One provider's entry: the transports it names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProviderAttrs {
    /// Run a program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CommandConfig>,
    /// gRPC address (not supported by this crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// ttRPC address (Rust ocicrypt only; not supported by this crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttrpc: Option<String>,
    /// In-process provider (Rust ocicrypt only; not supported by this crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<String>,
}

/// The transport a configured provider uses (`cmd` wins when several are set, as in Go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A program.
    Cmd(CommandConfig),
    /// A gRPC `KeyProviderService` address.
    Grpc(String),
    /// A ttRPC address.
    Ttrpc(String),
    /// A named in-process provider.
    Native(String),
}

/// The `OCICRYPT_KEYPROVIDER_CONFIG` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProviderConfig {
    /// Providers by name.
    #[serde(rename = "key-providers", default, deserialize_with = "null_as_default")]
    pub key_providers: BTreeMap<String, KeyProviderAttrs>,
}

impl KeyProviderConfig {
    /// Parses the configuration JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, OcicryptError> {
        serde_json::from_slice(json).map_err(|e| OcicryptError::Config(e.to_string()))
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, OcicryptError> {
        let data = std::fs::read(path).map_err(|e| OcicryptError::Config(format!("{}: {e}", path.display())))?;
        Self::from_json(&data).map_err(|e| OcicryptError::Config(format!("{}: {e}", path.display())))
    }

    /// The file named by `OCICRYPT_KEYPROVIDER_CONFIG`, or `None` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, OcicryptError> {
        match std::env::var_os(KEYPROVIDER_CONFIG_ENV) {
            Some(p) if !p.is_empty() => Self::from_file(Path::new(&p)).map(Some),
            _ => Ok(None),
        }
    }

    /// The transport of provider `name`.
    pub fn transport(&self, name: &str) -> Option<Transport> {
        let a = self.key_providers.get(name)?;
        if let Some(c) = &a.cmd {
            Some(Transport::Cmd(c.clone()))
        } else if let Some(g) = &a.grpc {
            Some(Transport::Grpc(g.clone()))
        } else if let Some(t) = &a.ttrpc {
            Some(Transport::Ttrpc(t.clone()))
        } else {
            a.native.as_ref().map(|n| Transport::Native(n.clone()))
        }
    }

    /// A `cmd` provider for `name`; [`OcicryptError::UnsupportedTransport`] for the others.
    pub fn cmd_provider(&self, name: &str) -> Result<CmdKeyProvider, OcicryptError> {
        let unsupported =
            |t: &str| OcicryptError::UnsupportedTransport { provider: name.to_owned(), transport: t.to_owned() };
        match self.transport(name) {
            Some(Transport::Cmd(c)) => Ok(CmdKeyProvider::new(name, c.path, c.args)),
            Some(Transport::Grpc(_)) => Err(unsupported("grpc")),
            Some(Transport::Ttrpc(_)) => Err(unsupported("ttrpc")),
            Some(Transport::Native(_)) => Err(unsupported("native")),
            None => Err(OcicryptError::Config(format!("provider {name:?} is not configured (or names no transport)"))),
        }
    }

    /// Every `cmd` provider, plus one error per provider whose transport is not supported (also
    /// logged as warnings).
    pub fn cmd_providers(&self) -> (Vec<Arc<dyn KeyProvider>>, Vec<OcicryptError>) {
        let mut ok: Vec<Arc<dyn KeyProvider>> = Vec::new();
        let mut errors = Vec::new();
        for name in self.key_providers.keys() {
            match self.cmd_provider(name) {
                Ok(p) => ok.push(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "key provider skipped");
                    errors.push(e);
                }
            }
        }
        (ok, errors)
    }
}

// ------------------------------------------------------------------------------------------------
// Provider side

/// Answers one keyprovider request (the JSON a `cmd` provider reads on stdin) with `provider`:
/// `keyunwrap` → [`KeyProvider::unwrap_key`] on the annotation, `keywrap` →
/// [`KeyProvider::wrap_key`] with `ec.Parameters[provider.name()]`. Returns the answer JSON
/// (zeroized on drop: it may hold private options).
pub async fn handle_keyprovider_request(
    input: &[u8],
    provider: &dyn KeyProvider,
) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    let req = KeyProviderInput::parse(input)?;
    match req.op.as_str() {
        OP_KEYUNWRAP => {
            let annotation = req
                .keyunwrapparams
                .annotation
                .ok_or_else(|| OcicryptError::Protocol("keyunwrap without keyunwrapparams.annotation".into()))?;
            let opts = provider.unwrap_key(annotation.as_bytes()).await?;
            let out = KeyProviderOutput {
                keywrapresults: None,
                keyunwrapresults: Some(KeyUnwrapResults { optsdata: Some(GoBytes(opts)) }),
            };
            Ok(out.to_json())
        }
        OP_KEYWRAP => {
            let opts = req
                .keywrapparams
                .optsdata
                .ok_or_else(|| OcicryptError::Protocol("keywrap without keywrapparams.optsdata".into()))?;
            let params: Vec<Vec<u8>> = req
                .keywrapparams
                .ec
                .as_ref()
                .and_then(|ec| ec.parameters.get(provider.name()))
                .map(|v| v.iter().map(|p| p.as_bytes().to_vec()).collect())
                .unwrap_or_default();
            let annotation = provider.wrap_key(&params, opts.as_bytes()).await?;
            let out = KeyProviderOutput {
                keywrapresults: Some(KeyWrapResults { annotation: Some(GoBytes::new(annotation)) }),
                keyunwrapresults: None,
            };
            Ok(out.to_json())
        }
        other => Err(OcicryptError::Protocol(format!("unknown op {:?}", other.chars().take(40).collect::<String>()))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::util::STD;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn unwrap_request_is_what_go_emits() {
        let dc = DecryptConfigJson {
            parameters: BTreeMap::from([("attestation-agent".to_owned(), vec![GoBytes::new(b"Enabled".to_vec())])]),
        };
        let j = KeyProviderInput::unwrap_request(b"{\"kid\":1}", dc).to_json();
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":["RW5hYmxlZA=="]}},"annotation":"eyJraWQiOjF9"}}"#
        );
        let back = KeyProviderInput::parse(&j).unwrap();
        assert_eq!(back.keyunwrapparams.annotation.unwrap().as_bytes(), b"{\"kid\":1}");
    }

    #[test]
    fn wrap_request_shape() {
        let ec = EncryptConfigJson {
            parameters: BTreeMap::from([(
                "attestation-agent".to_owned(),
                vec![GoBytes::new(b"keyid=kbs:///default/key/1::algorithm=A256GCM".to_vec())],
            )]),
            decrypt_config: DecryptConfigJson::default(),
        };
        let j = KeyProviderInput::wrap_request(b"{}", ec).to_json();
        let text = std::str::from_utf8(&j).unwrap();
        assert!(text.starts_with(r#"{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":[""#));
        assert!(text.ends_with(r#""DecryptConfig":{"Parameters":{}}},"optsdata":"e30="},"keyunwrapparams":{"dc":null,"annotation":null}}"#), "{text}");
        // Go variants: DecryptConfig null / Parameters null.
        let go = r#"{"op":"keywrap","keywrapparams":{"ec":{"Parameters":null,"DecryptConfig":null},"optsdata":"e30="},"keyunwrapparams":{"dc":null,"annotation":null}}"#;
        let r = KeyProviderInput::parse(go.as_bytes()).unwrap();
        assert!(r.keywrapparams.ec.unwrap().parameters.is_empty());
    }

    #[test]
    fn output_in_both_encodings() {
        let s = KeyProviderOutput::parse(br#"{"keyunwrapresults":{"optsdata":"aGVsbG8="}}"#).unwrap();
        let a = KeyProviderOutput::parse(br#"{"keyunwrapresults":{"optsdata":[104,101,108,108,111]}}"#).unwrap();
        assert_eq!(s, a);
        let go = KeyProviderOutput::parse(
            br#"{"keywrapresults":{"annotation":null},"keyunwrapresults":{"optsdata":"aGVsbG8="}}"#,
        )
        .unwrap();
        assert_eq!(&go.clone().into_optsdata().unwrap()[..], b"hello");
        assert!(go.into_annotation().is_err());
        assert_eq!(&a.to_json()[..], br#"{"keyunwrapresults":{"optsdata":"aGVsbG8="}}"#);
        let w = KeyProviderOutput::parse(br#"{"keywrapresults":{"annotation":[1,2]}}"#).unwrap();
        assert_eq!(w.into_annotation().unwrap(), vec![1, 2]);
        for bad in
            [&br#"{"keyunwrapresults":{"optsdata":"!"}}"#[..], br#"{"keyunwrapresults":{"optsdata":[300]}}"#, b"[", b""]
        {
            assert!(KeyProviderOutput::parse(bad).is_err());
        }
        assert!(KeyProviderOutput::parse(b"{}").unwrap().into_optsdata().is_err());
        // Errors never quote the input (which may hold private options).
        let e = KeyProviderOutput::parse(br#"{"keyunwrapresults":{"optsdata":"c2VjcmV0"}, x}"#).unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn config_file() {
        let c = KeyProviderConfig::from_json(
            br#"{"key-providers": {
              "attestation-agent": {"grpc": "127.0.0.1:50000"},
              "simplecrypt": {"cmd": {"path": "/usr/local/bin/simplecrypt", "args": []}},
              "cdh": {"ttrpc": "unix:///run/confidential-containers/cdh.sock"},
              "both": {"cmd": {"path": "/bin/x"}, "grpc": "h:1", "grpc-tls": {}}}}"#,
        )
        .unwrap();
        assert_eq!(c.transport("attestation-agent"), Some(Transport::Grpc("127.0.0.1:50000".into())));
        assert!(matches!(c.transport("both"), Some(Transport::Cmd(_))));
        assert_eq!(c.cmd_provider("simplecrypt").unwrap().path(), Path::new("/usr/local/bin/simplecrypt"));
        assert!(matches!(
            c.cmd_provider("cdh"),
            Err(OcicryptError::UnsupportedTransport { transport, .. }) if transport == "ttrpc"
        ));
        let (ok, errs) = c.cmd_providers();
        assert_eq!(ok.iter().map(|p| p.name().to_owned()).collect::<Vec<_>>(), ["both", "simplecrypt"]);
        assert_eq!(errs.len(), 2);
        assert!(c.cmd_provider("nope").is_err());
        assert!(KeyProviderConfig::from_json(b"{\"key-providers\": 3}").is_err());
    }

    struct Echo;
    impl KeyProvider for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn unwrap_key<'a>(&'a self, a: &'a [u8]) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, OcicryptError>> {
            Box::pin(async move { Ok(Zeroizing::new(a.iter().rev().copied().collect())) })
        }
    }

    #[tokio::test]
    async fn handler() {
        let req = KeyProviderInput::unwrap_request(b"abc", DecryptConfigJson::default()).to_json();
        let out = handle_keyprovider_request(&req, &Echo).await.unwrap();
        assert_eq!(&out[..], format!(r#"{{"keyunwrapresults":{{"optsdata":"{}"}}}}"#, STD.encode("cba")).as_bytes());
        let req = KeyProviderInput::wrap_request(b"abc", EncryptConfigJson::default()).to_json();
        assert!(handle_keyprovider_request(&req, &Echo).await.unwrap_err().to_string().contains("cannot wrap"));
        assert!(handle_keyprovider_request(br#"{"op":"x"}"#, &Echo).await.is_err());
        assert!(handle_keyprovider_request(br#"{"op":"keyunwrap"}"#, &Echo).await.is_err());
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("provider.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn cmd_provider_round_trip_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        // Saves the request, answers with integer arrays (CoCo's Rust style).
        let req_file = dir.path().join("req.json");
        let p = script(
            dir.path(),
            &format!("cat > {}\necho '{{\"keyunwrapresults\":{{\"optsdata\":[111,107]}}}}'", req_file.display()),
        );
        let prov = CmdKeyProvider::new("simple", &p, vec![]);
        assert_eq!(&prov.unwrap_key(b"ann").await.unwrap()[..], b"ok");
        let req = KeyProviderInput::parse(&std::fs::read(&req_file).unwrap()).unwrap();
        assert_eq!(req.op, "keyunwrap");
        assert_eq!(req.keyunwrapparams.annotation.unwrap().as_bytes(), b"ann");
        assert_eq!(req.keyunwrapparams.dc.unwrap().parameters["simple"][0].as_bytes(), b"Enabled");

        let p = script(dir.path(), "cat >/dev/null; echo oops >&2; exit 3");
        let e = CmdKeyProvider::new("simple", &p, vec![]).unwrap_key(b"a").await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");

        let p = script(dir.path(), "sleep 5");
        let prov = CmdKeyProvider::new("slow", &p, vec![]).with_timeout(Duration::from_millis(200));
        assert!(prov.unwrap_key(b"a").await.unwrap_err().to_string().contains("no answer within"));

        let p = script(dir.path(), "head -c 2000000 /dev/zero");
        let e = CmdKeyProvider::new("big", &p, vec![]).unwrap_key(b"a").await.unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");

        let p = script(dir.path(), "echo '{}'");
        assert!(CmdKeyProvider::new("empty", &p, vec![]).unwrap_key(b"a").await.is_err());
        assert!(CmdKeyProvider::new("missing", dir.path().join("nope"), vec![]).unwrap_key(b"a").await.is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyProviderOutput::parse(&data);
            let _ = KeyProviderInput::parse(&data);
            let _ = KeyProviderConfig::from_json(&data);
        }

        #[test]
        fn output_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..100), as_array in any::<bool>()) {
            let json = if as_array {
                format!(r#"{{"keyunwrapresults":{{"optsdata":{bytes:?}}}}}"#)
            } else {
                format!(r#"{{"keyunwrapresults":{{"optsdata":"{}"}}}}"#, STD.encode(&bytes))
            };
            let out = KeyProviderOutput::parse(json.as_bytes()).unwrap();
            let again = KeyProviderOutput::parse(&out.to_json()).unwrap();
            prop_assert_eq!(&again.into_optsdata().unwrap()[..], &bytes[..]);
        }

        #[test]
        fn input_round_trip(ann in proptest::collection::vec(any::<u8>(), 0..100), name in "[a-z-]{1,12}") {
            let dc = DecryptConfigJson { parameters: BTreeMap::from([(name, vec![GoBytes::new(ann.clone())])]) };
            let req = KeyProviderInput::unwrap_request(&ann, dc);
            prop_assert_eq!(KeyProviderInput::parse(&req.to_json()).unwrap(), req);
        }
    }
}
