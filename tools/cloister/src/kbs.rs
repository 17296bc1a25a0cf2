//! `cloister kbs …`: a client of the CoCo KBS protocol mirroring trustee's `kbs-client`
//! (`attest`, `get-resource`, `config set-resource|set-resource-policy|set-attestation-policy|
//! set-reference-value…`), plus `explain` for policy decisions.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand, ValueEnum};
use cloister_emulate::snp::EmulatedSnp;
use cloister_kbs_client::{
    AdminClient, Attester, ClientOptions, EmulatedSnpAttester, KbsClient, SampleAttester, TeeKeyKind, TrustMode,
};
use serde_json::{Value, json};

/// Connection options shared by every `kbs` subcommand.
#[derive(Debug, Args)]
pub struct KbsArgs {
    /// KBS base URL (http://… only for development).
    #[arg(long, default_value = "https://127.0.0.1:8080")]
    url: String,
    /// Pin the KBS TLS certificate by the SHA-256 of its DER (what cloister-kbs prints at start).
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Trust this CA certificate (PEM) for the KBS.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    cmd: KbsCmd,
}

#[derive(Debug, Subcommand)]
enum KbsCmd {
    /// Attest and print the token.
    Attest(AttestArgs),
    /// Attest if needed and print a resource (raw bytes, or base64 with --base64).
    GetResource(GetArgs),
    /// Admin operations (need --admin-key).
    Config(ConfigArgs),
    /// Run the confidential data hub on a unix socket (JSON lines: get-resource, unseal).
    CdhServe(CdhArgs),
}

#[derive(Debug, Args)]
struct CdhArgs {
    #[command(flatten)]
    attest: AttestArgs,
    /// Socket path (created with mode 0600).
    #[arg(long, default_value = "/run/confidential-containers/cdh.sock")]
    socket: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TeeArg {
    /// This machine's TEE: configfs-tsm (SNP or TDX), then /dev/sev-guest, then /dev/tdx_guest;
    /// never the emulated one.
    Auto,
    /// AMD SEV-SNP: configfs-tsm, else /dev/sev-guest.
    Snp,
    /// Intel TDX: configfs-tsm, else /dev/tdx_guest with a quote from the host's QGS (--qgs).
    Tdx,
    /// CoCo's fake TEE (proves nothing; denied by default policies).
    Sample,
    /// The emulated SEV-SNP platform of `cloister emulate init` (proves nothing about hardware).
    EmulatedSnp,
    /// The emulated TDX platform of `cloister emulate init`, in process: --measurement is MRTD,
    /// the initdata digest MRCONFIGID (proves nothing about hardware).
    EmulatedTdx,
    /// IBM Secure Execution: /dev/uv answers the key broker's attestation request.
    Se,
    /// The emulated IBM SE machine of `cloister emulate init`, in process (proves nothing about
    /// hardware).
    EmulatedSe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyArg {
    P256,
    P521,
    Rsa,
}

#[derive(Debug, Args)]
pub(crate) struct AttestArgs {
    /// Evidence source.
    #[arg(long, value_enum, default_value = "auto")]
    tee: TeeArg,
    /// Emulated platform directory (`cloister emulate init`), for --tee emulated-snp in process.
    #[arg(long)]
    emulated_dir: Option<PathBuf>,
    /// The socket of `cloister emulate serve`, for --tee emulated-snp (the host fixes the
    /// measurement and HOST_DATA) or --tee emulated-se (`serve --tee se`: the host's machine
    /// answers the broker's attestation request).
    #[arg(long, conflicts_with = "emulated_dir")]
    emulator_socket: Option<PathBuf>,
    /// Launch measurement the emulated platform reports (hex, 48 bytes).
    #[arg(long)]
    measurement: Option<String>,
    /// Initdata TOML to send; its digest becomes the emulated HOST_DATA.
    #[arg(long)]
    initdata: Option<PathBuf>,
    /// Emulated platform only: the initdata the VM was launched with (HOST_DATA), when it
    /// differs from the one sent (to exercise the broker's binding check).
    #[arg(long)]
    launch_initdata: Option<PathBuf>,
    /// TEE key type.
    #[arg(long, value_enum, default_value = "p256")]
    key: KeyArg,
    /// --tee tdx without configfs-tsm: the quote generation service, `vsock:CID:PORT` or
    /// `unix:PATH` (default: the port of /etc/tdx-attest.conf on the host, else vsock:2:4050).
    #[arg(long)]
    qgs: Option<String>,
}

#[derive(Debug, Args)]
struct GetArgs {
    #[command(flatten)]
    attest: AttestArgs,
    /// `repo/type/tag` or `kbs:///repo/type/tag`.
    #[arg(long)]
    path: String,
    /// Print base64 instead of raw bytes.
    #[arg(long)]
    base64: bool,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Admin private key (PKCS#8 PEM, Ed25519 or P-256), as printed by cloister-kbs on first start.
    #[arg(long)]
    admin_key: PathBuf,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Store a resource.
    SetResource {
        /// `repo/type/tag`.
        #[arg(long)]
        path: String,
        /// File with the value.
        #[arg(long)]
        resource_file: PathBuf,
    },
    /// Delete a resource.
    DeleteResource {
        /// `repo/type/tag`.
        #[arg(long)]
        path: String,
    },
    /// Replace the resource policy.
    SetResourcePolicy {
        /// Rego file.
        #[arg(long)]
        policy_file: PathBuf,
    },
    /// Replace an attestation policy.
    SetAttestationPolicy {
        /// Rego file.
        #[arg(long)]
        policy_file: PathBuf,
        /// Policy id (the KBS uses `default`).
        #[arg(long, default_value = "default")]
        id: String,
    },
    /// Register one reference value (RVPS `sample` message).
    SetSampleReferenceValue {
        /// Name (e.g. `snp_launch_measurement`).
        name: String,
        /// Value(s).
        values: Vec<String>,
    },
    /// Register reference values from `cloister measure --output json` (or a `{name: [values]}` file).
    SetReferenceValues {
        /// JSON file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Read a reference value.
    GetReferenceValue {
        /// Name.
        name: String,
    },
    /// Explain the resource-policy decision for a token and path.
    Explain {
        /// File holding the token.
        #[arg(long)]
        token_file: PathBuf,
        /// `repo/type/tag`.
        #[arg(long)]
        path: String,
    },
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn trust(a: &KbsArgs) -> Result<TrustMode> {
    trust_for(&a.url, a.cert_sha256.as_deref(), a.ca.as_ref())
}

/// How to trust the KBS at `url`: a pinned certificate, a CA, or (http:// only) nothing.
pub(crate) fn trust_for(url: &str, cert_sha256: Option<&str>, ca: Option<&PathBuf>) -> Result<TrustMode> {
    Ok(match (cert_sha256, ca) {
        (Some(fp), _) => {
            let mut b = [0u8; 32];
            hex::decode_to_slice(fp.trim(), &mut b).context("--cert-sha256 must be 64 hex digits")?;
            TrustMode::Pinned(b)
        }
        (None, Some(ca)) => {
            let pem = read(ca)?;
            let der = cloister_kbs_protocol::admin::pem_or_der(&pem).map_err(|e| anyhow::anyhow!("{e}"))?;
            TrustMode::Ca(vec![der.to_vec()])
        }
        (None, None) if url.starts_with("http://") => TrustMode::PlainHttpOnly,
        (None, None) => bail!("https needs --cert-sha256 or --ca"),
    })
}

/// `--qgs`: `vsock:CID:PORT` or `unix:PATH`.
fn parse_qgs(s: &str) -> Result<cloister_kbs_client::tdxguest::QgsAddress> {
    use cloister_kbs_client::tdxguest::QgsAddress;
    if let Some(p) = s.strip_prefix("unix:") {
        return Ok(QgsAddress::Unix(p.into()));
    }
    if let Some(rest) = s.strip_prefix("vsock:")
        && let Some((cid, port)) = rest.split_once(':')
    {
        return Ok(QgsAddress::Vsock {
            cid: cid.parse().context("--qgs: the vsock CID is not a number")?,
            port: port.parse().context("--qgs: the vsock port is not a number")?,
        });
    }
    bail!("--qgs must be vsock:CID:PORT or unix:PATH, not {s:?}")
}

/// `--tee snp|tdx`: configfs-tsm for that TEE, else its legacy device.
fn hardware_attester(a: &AttestArgs) -> Result<Arc<dyn Attester>> {
    use cloister_kbs_protocol::Tee;
    let want = if matches!(a.tee, TeeArg::Snp) { Tee::Snp } else { Tee::Tdx };
    let qgs = a.qgs.as_deref().map(parse_qgs).transpose()?;
    let tsm = match cloister_kbs_client::TsmAttester::detect() {
        Ok(t) if t.tee() == want => return Ok(Arc::new(t)),
        Ok(t) => format!("configfs-tsm is for {:?}", t.tee()),
        Err(e) => e.to_string(),
    };
    let device: Result<Arc<dyn Attester>, _> = match want {
        Tee::Snp => cloister_kbs_client::SevGuestAttester::detect().map(|d| Arc::new(d) as Arc<dyn Attester>),
        _ => cloister_kbs_client::TdxGuestAttester::detect_with_qgs(qgs).map(|d| Arc::new(d) as Arc<dyn Attester>),
    };
    device.map_err(|e| anyhow::anyhow!("no {want:?} guest device: {tsm}; {e}"))
}

pub(crate) fn client(url: &str, trust: TrustMode, a: &AttestArgs) -> Result<KbsClient> {
    let init = a
        .initdata
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let attester: Arc<dyn Attester> = match a.tee {
        TeeArg::Sample => Arc::new(SampleAttester),
        TeeArg::Auto => cloister_kbs_client::detect_attester()?,
        TeeArg::Snp | TeeArg::Tdx => hardware_attester(a)?,
        TeeArg::Se => Arc::new(cloister_kbs_client::SeAttester::detect()?),
        TeeArg::EmulatedSe if a.emulator_socket.is_some() => {
            let path = a.emulator_socket.clone().context("socket")?;
            Arc::new(cloister_kbs_client::SeAttester::new(Arc::new(cloister_kbs_client::EmulatedSocketUv::new(path))))
        }
        TeeArg::EmulatedSe => {
            let dir = a.emulated_dir.as_ref().context("--tee emulated-se needs --emulated-dir or --emulator-socket")?;
            let platform = cloister_emulate::se::EmulatedSe::load(dir)?;
            eprintln!("WARNING: emulated IBM SE evidence proves nothing about hardware");
            Arc::new(cloister_kbs_client::SeAttester::emulated(Arc::new(platform)))
        }
        TeeArg::EmulatedTdx => {
            let dir = a.emulated_dir.as_ref().context("--tee emulated-tdx needs --emulated-dir")?;
            let platform = cloister_emulate::tdx::EmulatedTdx::load(dir)?;
            let mut mr_td = [0u8; 48];
            if let Some(h) = &a.measurement {
                hex::decode_to_slice(h.trim(), &mut mr_td).context("--measurement must be 96 hex digits")?;
            }
            let launch = match &a.launch_initdata {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
                None => init.clone(),
            };
            let mr_config_id = match &launch {
                Some(text) => cloister_kbs_protocol::initdata::InitData::parse(text)?.tdx_mr_config_id(),
                None => [0; 48],
            };
            eprintln!("WARNING: emulated TDX evidence proves nothing about hardware");
            Arc::new(cloister_kbs_client::EmulatedTdxAttester::new(Arc::new(platform), mr_td, mr_config_id))
        }
        TeeArg::EmulatedSnp if a.emulator_socket.is_some() => {
            let path = a.emulator_socket.clone().context("socket")?;
            Arc::new(cloister_kbs_client::EmulatedSocketAttester::new(path))
        }
        TeeArg::EmulatedSnp => {
            let dir =
                a.emulated_dir.as_ref().context("--tee emulated-snp needs --emulated-dir or --emulator-socket")?;
            let platform = EmulatedSnp::load(dir)?;
            let mut m = [0u8; 48];
            if let Some(h) = &a.measurement {
                hex::decode_to_slice(h.trim(), &mut m).context("--measurement must be 96 hex digits")?;
            }
            let mut host_data = [0u8; 32];
            let launch = match &a.launch_initdata {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
                None => init.clone(),
            };
            if let Some(text) = &launch {
                let d = cloister_kbs_protocol::initdata::InitData::parse(text)?;
                host_data = d.snp_host_data();
            }
            eprintln!("WARNING: emulated SEV-SNP evidence proves nothing about hardware");
            Arc::new(EmulatedSnpAttester::new(Arc::new(platform), m, host_data))
        }
    };
    let key = match a.key {
        KeyArg::P256 => TeeKeyKind::P256,
        KeyArg::P521 => TeeKeyKind::P521,
        KeyArg::Rsa => TeeKeyKind::Rsa2048,
    };
    Ok(KbsClient::new(url, attester, ClientOptions { key, trust, init_data: init, ..ClientOptions::default() })?)
}

pub fn run(a: KbsArgs) -> Result<()> {
    let trust = trust(&a)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match &a.cmd {
            KbsCmd::Attest(x) => {
                let token = client(&a.url, trust, x)?.attest().await?;
                outln!("{token}")?;
            }
            KbsCmd::GetResource(g) => {
                let secret = client(&a.url, trust, &g.attest)?.get_resource(&g.path).await?;
                if g.base64 {
                    outln!("{}", STANDARD.encode(&secret[..]))?;
                } else {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&secret)?;
                    out.flush()?;
                }
            }
            KbsCmd::CdhServe(c) => {
                let client = Arc::new(client(&a.url, trust, &c.attest)?);
                let cdh = cloister_cdh::Cdh::new(client);
                if let Some(parent) = c.socket.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                }
                let _ = std::fs::remove_file(&c.socket);
                let listener = tokio::net::UnixListener::bind(&c.socket)
                    .with_context(|| format!("binding {}", c.socket.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&c.socket, std::fs::Permissions::from_mode(0o600))?;
                outln!("cdh serving {}", c.socket.display())?;
                loop {
                    let (stream, _) = listener.accept().await?;
                    let cdh = cdh.clone();
                    tokio::spawn(async move {
                        if let Err(e) = cloister_cdh::api::serve_connection(&cdh, stream).await {
                            eprintln!("cdh: connection closed: {e}");
                        }
                    });
                }
            }
            KbsCmd::Config(c) => {
                let admin = AdminClient::new(&a.url, &read(&c.admin_key)?, &trust)?;
                let v: Value = match &c.cmd {
                    ConfigCmd::SetResource { path, resource_file } => {
                        admin.set_resource(path, &read(resource_file)?).await?;
                        Value::Null
                    }
                    ConfigCmd::DeleteResource { path } => {
                        admin.delete_resource(path).await?;
                        Value::Null
                    }
                    ConfigCmd::SetResourcePolicy { policy_file } => {
                        admin.set_resource_policy(&String::from_utf8(read(policy_file)?)?).await?;
                        Value::Null
                    }
                    ConfigCmd::SetAttestationPolicy { policy_file, id } => {
                        admin.set_attestation_policy(id, &String::from_utf8(read(policy_file)?)?).await?;
                        Value::Null
                    }
                    ConfigCmd::SetSampleReferenceValue { name, values } => {
                        admin.set_reference_values(&json!({ name: values })).await?
                    }
                    ConfigCmd::SetReferenceValues { file } => {
                        let v: Value =
                            serde_json::from_slice(&read(file)?).context("reference values file is not JSON")?;
                        admin.set_reference_values_from_measurement(&v).await?
                    }
                    ConfigCmd::GetReferenceValue { name } => admin.reference_value(name).await?,
                    ConfigCmd::Explain { token_file, path } => {
                        admin.explain(String::from_utf8(read(token_file)?)?.trim(), path).await?
                    }
                };
                if !v.is_null() {
                    outln!("{}", serde_json::to_string_pretty(&v)?)?;
                }
            }
        }
        Ok(())
    })
}
