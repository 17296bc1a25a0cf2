//! `cloister image pull`: what the guest does to get a container image (pull, check the
//! signature policy, decrypt, unpack), as a command. Secrets (layer keys, policy keys, the
//! policy and registry credentials) may come from the key broker after attestation.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use cloister_image::manifest::Platform;
use cloister_image::secrets::CdhSecrets;
use cloister_image::signature::SignatureCheck;
use cloister_image::{Credentials, PullOptions, Puller, Reference, Registry, RegistryOptions};
use cloister_ocicrypt::{AttestationAgentProvider, CmdKeyProvider, DecryptConfig, JwePrivateKey, KeyProvider};
use serde_json::json;

use crate::kbs::{AttestArgs, client, trust_for};

/// `cloister image …`.
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Pull, verify, decrypt and unpack an image into a rootfs directory.
    Pull(PullArgs),
    /// An ocicrypt `cmd` key provider named `attestation-agent`: reads one keyprovider request
    /// on stdin and writes the answer on stdout. `keyunwrap` (decoders, with --kbs): unwraps the
    /// layer key with a key-encryption key the key broker releases after attestation.
    /// `keywrap` (encoders such as `skopeo copy --encryption-key provider:attestation-agent:…`,
    /// with --wrap-kek/--wrap-kid): wraps it in CoCo's packet naming the KBS resource.
    Keyprovider(KeyproviderArgs),
    /// Re-wrap an OCI layout's JWE-encrypted layers (e.g. `skopeo copy --encryption-key
    /// jwe:KEY.pub`) for CoCo's `attestation-agent` key provider: each layer key is then
    /// released only by the key broker holding the KEK at --kid, to an attested guest. The JWE
    /// recipients are removed. (For skopeo builds without ocicrypt key-provider support.)
    Rewrap(RewrapArgs),
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The OCI layout: `DIR:TAG`.
    layout: String,
    /// Private key(s) of the JWE recipients (PEM or DER). Repeatable.
    #[arg(long = "decryption-key", required = true)]
    decryption_keys: Vec<PathBuf>,
    /// The key-encryption key: a file of exactly 32 bytes, the same bytes stored in the key
    /// broker at --kid.
    #[arg(long)]
    kek: PathBuf,
    /// The KEK's resource: `kbs:///repo/type/tag`.
    #[arg(long)]
    kid: String,
}

#[derive(Debug, Args)]
pub struct KeyproviderArgs {
    /// Key broker URL (for `keyunwrap`).
    #[arg(long)]
    kbs: Option<String>,
    /// The key-encryption key for `keywrap`: a file of exactly 32 bytes (the same bytes stored
    /// in the key broker at --wrap-kid).
    #[arg(long, requires = "wrap_kid")]
    wrap_kek: Option<PathBuf>,
    /// The KEK's resource for `keywrap`: `kbs:///repo/type/tag`.
    #[arg(long, requires = "wrap_kek")]
    wrap_kid: Option<String>,
    /// Pin the KBS certificate (SHA-256 of its DER).
    #[arg(long)]
    kbs_cert_sha256: Option<String>,
    /// Trust this CA (PEM) for the KBS.
    #[arg(long)]
    kbs_ca: Option<PathBuf>,
    #[command(flatten)]
    attest: AttestArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `docker://[registry/]repo[:tag][@sha256:…]`.
    image: String,
    /// Destination (must not exist, or be an empty directory).
    #[arg(long)]
    rootfs: PathBuf,
    /// Private key (PEM or DER; PKCS#8, PKCS#1 or SEC1) for `jwe` layer recipients. Repeatable.
    #[arg(long = "decryption-key")]
    decryption_keys: Vec<PathBuf>,
    /// ocicrypt key-provider configuration (JSON, `cmd` providers); default
    /// `$OCICRYPT_KEYPROVIDER_CONFIG`.
    #[arg(long)]
    keyprovider_config: Option<PathBuf>,
    /// Offline key-encryption keys for `provider.attestation-agent` layers: a JSON map
    /// `{"repo/type/tag": "<base64>"}` (CoCo's offline_fs_kbc format). Development only.
    #[arg(long)]
    offline_keys: Option<PathBuf>,
    /// Key broker URL: layer keys, policy keys, `kbs:///` policy and credentials are fetched
    /// from it after attestation.
    #[arg(long)]
    kbs: Option<String>,
    /// Pin the KBS certificate (SHA-256 of its DER).
    #[arg(long)]
    kbs_cert_sha256: Option<String>,
    /// Trust this CA (PEM) for the KBS.
    #[arg(long)]
    kbs_ca: Option<PathBuf>,
    #[command(flatten)]
    attest: AttestArgs,
    /// containers-policy.json: a file or `kbs:///repo/type/tag`. Without it any image is accepted.
    #[arg(long)]
    policy: Option<String>,
    /// registries.d directory (lookaside stores for simple signing).
    #[arg(long)]
    registries_d: Option<PathBuf>,
    /// Registry credentials: an auth.json file or `kbs:///repo/type/tag`.
    #[arg(long)]
    auth: Option<String>,
    /// Registry credentials `user:password` for the image's registry.
    #[arg(long)]
    creds: Option<String>,
    /// A registry host reached over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Extra CA certificate (PEM) for registries. Repeatable.
    #[arg(long = "registry-ca")]
    registry_cas: Vec<PathBuf>,
    /// `os/arch[/variant]` to choose from an index (default: this machine).
    #[arg(long)]
    platform: Option<String>,
    /// Keep unpacked layers here for reuse by later pulls.
    #[arg(long)]
    layer_store: Option<PathBuf>,
    /// Layers downloaded and unpacked at once.
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Mount the image at --rootfs as overlayfs over the layer store (needs --layer-store and
    /// root); the writable layer goes to `<rootfs>.upper` and `<rootfs>.work`.
    #[arg(long, requires = "layer_store")]
    overlay: bool,
}

pub fn run(cmd: ImageCmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cmd {
        ImageCmd::Pull(a) => rt.block_on(pull(a)),
        ImageCmd::Keyprovider(a) => rt.block_on(keyprovider(a)),
        ImageCmd::Rewrap(a) => rewrap(a),
    }
}

fn read_kek(path: &PathBuf) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let bytes = zeroize::Zeroizing::new(read(path)?);
    let kek: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: a KEK is 32 bytes, this file has {}", path.display(), bytes.len()))?;
    Ok(zeroize::Zeroizing::new(kek))
}

fn rewrap(a: RewrapArgs) -> Result<()> {
    let (dir, tag) = a.layout.rsplit_once(':').context("the layout is DIR:TAG")?;
    let mut keys = Vec::new();
    for k in &a.decryption_keys {
        keys.push(JwePrivateKey::from_bytes(&read(k)?).with_context(|| format!("{}", k.display()))?);
    }
    let kek = read_kek(&a.kek)?;
    let (digest, n) =
        cloister_image::layout::rewrap_to_attestation_agent(std::path::Path::new(dir), tag, &keys, &kek, &a.kid)?;
    if n == 0 {
        anyhow::bail!("{}: no JWE-encrypted layer to re-wrap", a.layout);
    }
    outln!("{}", json!({"manifest": digest.to_string(), "layers_rewrapped": n, "kid": a.kid}))?;
    Ok(())
}

async fn keyprovider(a: KeyproviderArgs) -> Result<()> {
    use std::io::{Read, Write};
    let source: Box<dyn cloister_ocicrypt::KekSource> = match &a.kbs {
        Some(url) => {
            let trust = trust_for(url, a.kbs_cert_sha256.as_deref(), a.kbs_ca.as_ref())?;
            let kbs = Arc::new(client(url, trust, &a.attest)?);
            Box::new(CdhSecrets(Arc::new(cloister_cdh::Cdh::new(kbs))))
        }
        // No key broker: nothing can be unwrapped (an empty source refuses every kid).
        None => Box::new(cloister_ocicrypt::OfflineKekSource::new()),
    };
    let mut provider = AttestationAgentProvider::new(source);
    if let (Some(path), Some(kid)) = (&a.wrap_kek, &a.wrap_kid) {
        provider = provider.with_wrap_key(cloister_ocicrypt::WrapKey::new(kid, read_kek(path)?)?);
    }
    let mut input = Vec::new();
    std::io::stdin().take(1 << 20).read_to_end(&mut input).context("reading the request")?;
    let answer = cloister_ocicrypt::handle_keyprovider_request(&input, &provider).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&answer)?;
    out.flush()?;
    Ok(())
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

async fn pull(a: PullArgs) -> Result<()> {
    let reference = Reference::parse(&a.image)?;
    let secrets = match &a.kbs {
        Some(url) => {
            let trust = trust_for(url, a.kbs_cert_sha256.as_deref(), a.kbs_ca.as_ref())?;
            let kbs = Arc::new(client(url, trust, &a.attest)?);
            Some(CdhSecrets(Arc::new(cloister_cdh::Cdh::new(kbs))))
        }
        None => None,
    };
    // A document from a file or, with --kbs, from the key broker.
    let load = |loc: String, what: &'static str| {
        let secrets = secrets.clone();
        async move {
            if loc.starts_with("kbs://") {
                let s = secrets.with_context(|| format!("{what} {loc} needs --kbs"))?;
                Ok::<Vec<u8>, anyhow::Error>(s.fetch(&loc, what).await?.to_vec())
            } else {
                read(&PathBuf::from(loc))
            }
        }
    };

    let mut ro = RegistryOptions { insecure_http_hosts: a.insecure_registries.clone(), ..RegistryOptions::default() };
    for ca in &a.registry_cas {
        let pem = read(ca)?;
        let der =
            cloister_kbs_protocol::admin::pem_or_der(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
        ro.extra_ca_der.push(der.to_vec());
    }
    if let Some(loc) = a.auth.clone() {
        ro.credentials = Credentials::from_auth_json(&load(loc, "registry credentials").await?)?;
    }
    if let Some(c) = &a.creds {
        let (u, p) = c.split_once(':').context("--creds must be user:password")?;
        ro.credentials.insert(&reference.registry, u, p);
    }

    let mut decrypt = DecryptConfig::default();
    for k in &a.decryption_keys {
        decrypt.jwe_keys.push(
            JwePrivateKey::from_bytes(&read(k)?)
                .with_context(|| format!("{}", k.display()))?
                .with_label(k.display().to_string()),
        );
    }
    if let Some(s) = &secrets {
        decrypt.providers.push(Arc::new(AttestationAgentProvider::new(s.clone())) as Arc<dyn KeyProvider>);
    } else if let Some(p) = &a.offline_keys {
        eprintln!("WARNING: offline layer keys: development only");
        let src = cloister_ocicrypt::OfflineKekSource::from_files(&[p])?;
        decrypt.providers.push(Arc::new(AttestationAgentProvider::new(src)) as Arc<dyn KeyProvider>);
    }
    let kp_config =
        a.keyprovider_config.clone().or_else(|| std::env::var_os("OCICRYPT_KEYPROVIDER_CONFIG").map(PathBuf::from));
    if let Some(path) = kp_config {
        let cfg = cloister_ocicrypt::KeyProviderConfig::from_file(&path)?;
        for (name, entry) in cfg.key_providers.iter() {
            match &entry.cmd {
                Some(cmd) => decrypt.providers.push(Arc::new(CmdKeyProvider::new(
                    name.clone(),
                    cmd.path.clone(),
                    cmd.args.clone(),
                )) as Arc<dyn KeyProvider>),
                None => eprintln!("key provider {name}: only cmd providers are supported here; ignored"),
            }
        }
    }

    let signatures = match a.policy.clone() {
        Some(loc) => {
            // Fail closed: a policy that cannot be fetched or parsed stops the pull.
            let bytes = load(loc.clone(), "signature policy").await?;
            let policy = cloister_signature::Policy::from_json(&bytes).with_context(|| format!("policy {loc}"))?;
            let keys: Arc<dyn cloister_signature::KeySource> = match &secrets {
                Some(s) => Arc::new(s.clone()),
                None => Arc::new(cloister_signature::FsKeySource),
            };
            let registries_d = a
                .registries_d
                .as_ref()
                .map(|d| cloister_signature::RegistriesD::from_dir(d))
                .transpose()
                .context("registries.d")?;
            Some(SignatureCheck { policy, keys, registries_d })
        }
        None => {
            eprintln!("WARNING: no --policy: the image's signatures are not checked");
            None
        }
    };

    let platform = match &a.platform {
        Some(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [os, arch] => Platform { os: (*os).into(), architecture: (*arch).into(), variant: None },
                [os, arch, v] => {
                    Platform { os: (*os).into(), architecture: (*arch).into(), variant: Some((*v).into()) }
                }
                _ => bail!("--platform must be os/arch[/variant]"),
            }
        }
        None => Platform::host(),
    };
    let opts = PullOptions {
        platform,
        decrypt,
        signatures,
        max_concurrent_layers: a.concurrency,
        layer_store: a.layer_store.clone(),
        ..PullOptions::default()
    };
    let puller = Puller::new(Registry::new(ro)?, opts);
    let started = std::time::Instant::now();
    if a.overlay {
        let (resolved, reports, dirs) = puller.pull_layers(&reference).await?;
        let sibling = |suffix: &str| {
            let mut p = a.rootfs.clone().into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        let (upper, work) = (sibling(".upper"), sibling(".work"));
        for d in [&a.rootfs, &upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        cloister_image::overlay::mount_overlay(&dirs, &upper, &work, &a.rootfs)?;
        let out = json!({
            "image": resolved.reference.to_string(),
            "manifest_digest": resolved.manifest_digest.to_string(),
            "config_digest": resolved.config_digest.to_string(),
            "rootfs": a.rootfs.display().to_string(),
            "upper": upper.display().to_string(),
            "layers": reports.iter().map(|l| json!({"digest": l.digest.to_string(), "reused": l.reused})).collect::<Vec<_>>(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    let pulled = puller.pull(&reference, &a.rootfs).await?;
    let layers: Vec<_> = pulled
        .layers
        .iter()
        .map(|l| {
            json!({"digest": l.digest.to_string(), "diff_id": l.diff_id.to_string(), "encrypted": l.encrypted,
                   "reused": l.reused, "entries": l.stats.entries, "bytes": l.stats.bytes})
        })
        .collect();
    let out = json!({
        "image": pulled.reference.to_string(),
        "manifest_digest": pulled.manifest_digest.to_string(),
        "image_manifest_digest": pulled.image_manifest_digest.to_string(),
        "config_digest": pulled.config_digest.to_string(),
        "rootfs": pulled.rootfs.display().to_string(),
        "layers": layers,
        "seconds": started.elapsed().as_secs_f64(),
    });
    outln!("{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}
