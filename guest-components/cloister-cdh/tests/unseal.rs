//! Sealed secrets and resources through an in-process key broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use cloister_cdh::{Cdh, CdhError, public_jwk, seal_vault};
use cloister_kbs::Config;
use cloister_kbs::server::{bind, prepare, serve};
use cloister_kbs::store::{Durability, Namespace};
use cloister_kbs_client::{ClientOptions, KbsClient, SampleAttester};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_vault_secrets_and_refuse_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        Config::from_toml("[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n")
            .unwrap();
    let prepared = tokio::task::block_in_place(|| prepare(&config, dir.path())).unwrap();
    let store = prepared.state.broker.store().clone();
    let listeners = bind(&config).unwrap();
    let url = format!("http://{}", listeners[0].local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(prepared, listeners, async move {
        let _ = rx.await;
    }));
    let put = |k: &str, v: &[u8]| store.put(Namespace::Repository, k, v, Durability::Durable).unwrap();
    store
        .put(
            Namespace::Kbs,
            "resource-policy",
            cloister_policy::builtin::RESOURCE_ALLOW_ALL.as_bytes(),
            Durability::Durable,
        )
        .unwrap();

    let rng = ring::rand::SystemRandom::new();
    let signing = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    put("tenant/signing/key", public_jwk(signing.as_ref()).unwrap().to_string().as_bytes());
    put("app/db/password", b"hunter2");

    let kbs = Arc::new(KbsClient::new(&url, Arc::new(SampleAttester), ClientOptions::default()).unwrap());
    let cdh = Cdh::new(kbs);
    assert_eq!(&cdh.get_resource("kbs:///app/db/password").await.unwrap()[..], b"hunter2");

    let sealed = seal_vault(signing.as_ref(), "kbs:///tenant/signing/key", "kbs:///app/db/password").unwrap();
    assert!(sealed.starts_with("sealed."));
    assert_eq!(&cdh.unseal_secret(&sealed).await.unwrap()[..], b"hunter2");

    // Signed by someone else: refused.
    let other = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let forged = seal_vault(other.as_ref(), "kbs:///tenant/signing/key", "kbs:///app/db/password").unwrap();
    assert!(matches!(cdh.unseal_secret(&forged).await, Err(CdhError::Signature { .. })));
    // Payload swapped under a valid signature: refused.
    let mut parts: Vec<String> = sealed.trim_start_matches("sealed.").split('.').map(str::to_owned).collect();
    parts[1] = B64URL.encode(r#"{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///app/other/x"}"#);
    let swapped = format!("sealed.{}", parts.join("."));
    assert!(matches!(cdh.unseal_secret(&swapped).await, Err(CdhError::Signature { .. })));
    // Malformed inputs.
    for bad in ["hunter2", "sealed.", "sealed.a.b", "sealed.!!.!!.!!"] {
        assert!(matches!(cdh.unseal_secret(bad).await, Err(CdhError::Malformed(_))), "{bad}");
    }
    // Unknown signing key resource: the KBS says 404.
    let missing = seal_vault(signing.as_ref(), "kbs:///tenant/signing/none", "kbs:///app/db/password").unwrap();
    assert!(matches!(cdh.unseal_secret(&missing).await, Err(CdhError::Kbs(_))));
    // The local API, over a unix socket pair.
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let cdh2 = cdh.clone();
    let api = tokio::spawn(async move { cloister_cdh::api::serve_connection(&cdh2, b).await });
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (r, mut w) = tokio::io::split(a);
        let mut lines = BufReader::new(r).lines();
        let mut ask = async |req: String| {
            w.write_all(format!("{req}\n").as_bytes()).await.unwrap();
            serde_json::from_str::<serde_json::Value>(&lines.next_line().await.unwrap().unwrap()).unwrap()
        };
        let v = ask(serde_json::json!({"op": "unseal", "secret": sealed}).to_string()).await;
        assert_eq!(v["data"], base64::engine::general_purpose::STANDARD.encode("hunter2"));
        let v = ask(serde_json::json!({"op": "get-resource", "uri": "kbs:///app/db/password"}).to_string()).await;
        assert_eq!(v["data"], base64::engine::general_purpose::STANDARD.encode("hunter2"));
        let v = ask(serde_json::json!({"op": "unseal", "secret": forged}).to_string()).await;
        assert_eq!(v["error"]["kind"], "Signature");
        let v = ask("{not json".into()).await;
        assert_eq!(v["error"]["kind"], "BadRequest");
        let v = ask(serde_json::json!({"op": "get-resource", "uri": "kbs:///../etc/x"}).to_string()).await;
        assert_eq!(v["error"]["kind"], "BadUri");
    }
    api.await.unwrap().unwrap();
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
