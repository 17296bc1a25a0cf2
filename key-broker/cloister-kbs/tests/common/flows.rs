//! One attestation flow over HTTP whose steps may go to different replicas (what a load
//! balancer in front of stateless replicas does), shared by the replica tests and benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use cloister_kbs_client::Attester;
use cloister_kbs_protocol::{HashAlgorithm, Response as JweResponse, TeeKeyPair, runtime_data_digest};
use serde_json::{Value, json};

/// The emulated guest's launch measurement (a reference value the tests register).
pub const MEASUREMENT: [u8; 48] = [0x4d; 48];
/// The resource the flows fetch.
pub const RESOURCE: &str = "replica/key/1";
/// Its value.
pub const SECRET: &[u8] = b"the replicated secret \x00\x01";
/// An SNP `/auth` request.
pub const AUTH_BODY: &str =
    r#"{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha384"]}}"#;

/// Sends the request built by `make` to `urls[first]`, and to the other replica when the
/// first cannot be reached (what a load balancer's health check does).
pub async fn send(
    urls: &[String],
    first: usize,
    make: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, String> {
    let mut last = String::new();
    for k in 0..urls.len() {
        let url = &urls[(first + k) % urls.len()];
        match make(url).send().await {
            Ok(r) => return Ok(r),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}

pub async fn expect_ok(r: reqwest::Response, step: &str) -> Result<reqwest::Response, String> {
    if r.status() == 200 {
        Ok(r)
    } else {
        Err(format!("{step}: {} {}", r.status(), r.text().await.unwrap_or_default()))
    }
}

/// One whole flow, each step on the next replica: auth → attest → resource (cookie) →
/// resource (Bearer). Returns the token.
pub async fn flow(
    http: &reqwest::Client,
    urls: &[String],
    start: usize,
    att: &Arc<dyn Attester>,
) -> Result<String, String> {
    let u = |i: usize| start + i;
    let r = send(urls, u(0), |url| http.post(format!("{url}/kbs/v0/auth")).body(AUTH_BODY)).await?;
    let r = expect_ok(r, "auth").await?;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let nonce = r.json::<Value>().await.map_err(|e| e.to_string())?["nonce"].as_str().unwrap().to_owned();
    let key = TeeKeyPair::generate_p256().unwrap();
    let digest = runtime_data_digest(&nonce, key.public(), "", HashAlgorithm::Sha384);
    let evidence = att.evidence(&digest).map_err(|e| e.to_string())?;
    let body = json!({"init-data": null, "runtime-data": {"nonce": nonce, "tee-pubkey": key.public()},
                      "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}})
    .to_string();
    let r =
        send(urls, u(1), |url| http.post(format!("{url}/kbs/v0/attest")).header("cookie", &cookie).body(body.clone()))
            .await?;
    let token = expect_ok(r, "attest").await?.json::<Value>().await.map_err(|e| e.to_string())?["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, how) in [(2, "cookie"), (3, "bearer")] {
        let r = send(urls, u(i), |url| {
            let req = http.get(format!("{url}/kbs/v0/resource/{RESOURCE}"));
            if how == "cookie" { req.header("cookie", &cookie) } else { req.bearer_auth(&token) }
        })
        .await?;
        let jwe: JweResponse = expect_ok(r, how).await?.json().await.map_err(|e| e.to_string())?;
        let secret = key.decrypt(&jwe).map_err(|e| e.to_string())?;
        if &secret[..] != SECRET {
            return Err(format!("resource ({how}): wrong secret"));
        }
    }
    Ok(token)
}
