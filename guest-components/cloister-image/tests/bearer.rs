//! Bearer-token authentication (the flow of Docker Hub, quay.io, ghcr.io) against the real
//! `docker-registry` configured with `auth: token`: the registry answers 401 with a
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge, the client fetches a token
//! from the realm (with Basic credentials when it has them) and retries. The token issuer is a
//! small server in this test signing ES256 JWTs with an `x5c` certificate the registry trusts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cloister_image::{ImageError, PullOptions, Puller, Reference, Registry, RegistryOptions};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "cloister-registry";
const ISSUER: &str = "cloister-test-issuer";

struct TokenIssuer {
    host: String,
    issued: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

/// Issues a token for the requested scope when the Basic credentials are alice:s3cret, 401
/// otherwise.
fn token_issuer(key_pkcs8: Vec<u8>, cert_der: Vec<u8>) -> TokenIssuer {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let issued = Arc::new(Mutex::new(Vec::new()));
    let log = issued.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (key, cert, log) = (key_pkcs8.clone(), cert_der.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization: basic ")
                        && STANDARD.decode(l[21..].trim()).ok().as_deref() == Some(b"alice:s3cret".as_slice())
                });
                let query = path.split_once('?').map(|x| x.1).unwrap_or_default().to_owned();
                let scope = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
                    .unwrap_or_default();
                let (status, body) = if authorized {
                    let parts: Vec<&str> = scope.split(':').collect();
                    let (name, actions) = (parts.get(1).copied().unwrap_or(""), parts.get(2).copied().unwrap_or(""));
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                    let header = serde_json::json!({"alg":"ES256","typ":"JWT","x5c":[STANDARD.encode(&cert)]});
                    let claims = serde_json::json!({"iss":ISSUER,"sub":"alice","aud":SERVICE,"exp":now+300,"nbf":now-10,"iat":now,
                        "jti":format!("{now}-{name}"),"access":[{"type":"repository","name":name,"actions":actions.split(',').collect::<Vec<_>>()}]});
                    let signing = format!(
                        "{}.{}",
                        URL_SAFE_NO_PAD.encode(header.to_string()),
                        URL_SAFE_NO_PAD.encode(claims.to_string())
                    );
                    let rng = ring::rand::SystemRandom::new();
                    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &key, &rng).unwrap();
                    let sig = kp.sign(&rng, signing.as_bytes()).unwrap();
                    let token = format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
                    log.lock().unwrap().push(scope.clone());
                    (200, serde_json::json!({"token": token}).to_string())
                } else {
                    (401, r#"{"details":"bad credentials"}"#.to_owned())
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    TokenIssuer { host, issued, _rt: rt }
}

struct TokenRegistry {
    host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bearer_token_flow_against_docker_registry() {
    if skip_without(&["skopeo", "docker-registry", "gzip", "tar"]) {
        return;
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_owned()]).unwrap().self_signed(&key).unwrap();
    let issuer = token_issuer(key.serialize_der(), cert.der().to_vec());

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root.crt"), cert.pem()).unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    fs::write(
        dir.path().join("reg.yml"),
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {host}}}\nauth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            dir.path().join("data").display(),
            issuer.host,
            dir.path().join("root.crt").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("reg.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&host, "docker-registry");
    let reg = TokenRegistry { host: host.clone(), child, _dir: dir };

    // Push with skopeo (it runs the same token flow, asking for pull,push).
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("hello.txt"), "behind a token\n").unwrap();
    let layout = work.path().join("oci");
    write_layout(&layout, "v1", &[(tar_dir(&src), Comp::Gzip)], "amd64");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/demo/tok:v1", reg.host)));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let r = Reference::parse(&format!("{}/demo/tok:v1", reg.host)).unwrap();
    let opts = |creds: bool| {
        let mut ro = RegistryOptions { insecure_http_hosts: vec![reg.host.clone()], ..RegistryOptions::default() };
        if creds {
            ro.credentials.insert(&reg.host, "alice", "s3cret");
        }
        ro
    };

    // Anonymous: the token endpoint refuses, and the error says so.
    let out = work.path().join("rootfs");
    let err = rt
        .block_on(Puller::new(Registry::new(opts(false)).unwrap(), PullOptions::default()).pull(&r, &out))
        .unwrap_err();
    assert!(matches!(&err, ImageError::Auth { why, .. } if why.contains("token endpoint")), "{err}");

    // With credentials: a pull-scoped token, then the image.
    let before = issuer.issued.lock().unwrap().len();
    rt.block_on(Puller::new(Registry::new(opts(true)).unwrap(), PullOptions::default()).pull(&r, &out)).unwrap();
    assert_eq!(fs::read_to_string(out.join("hello.txt")).unwrap(), "behind a token\n");
    let issued = issuer.issued.lock().unwrap()[before..].to_vec();
    assert_eq!(issued, vec!["repository:demo/tok:pull".to_owned()], "one token, pull only, reused for every request");
}
