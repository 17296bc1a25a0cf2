//! Every parser of untrusted ocicrypt input: layer annotations (media type + annotation map built
//! from the input), public and private options, JWE (and decryption with a fixed key), keyprovider
//! request/response JSON, attestation-agent annotation packets and key ids — none may panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cloister_ocicrypt::jwe::{EcCurve, Jwe, JwePrivateKey};
use cloister_ocicrypt::{
    AnnotationPacket, EncryptedLayer, KeyProviderInput, KeyProviderOutput, PrivateOptions, PublicOptions, normalize_kid,
};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static JwePrivateKey {
    static K: OnceLock<JwePrivateKey> = OnceLock::new();
    K.get_or_init(|| JwePrivateKey::generate_ec(EcCurve::P256))
}

fuzz_target!(|data: &[u8]| {
    // Annotations: lines "key=value"; the first line is the media type.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let media_type = lines.next().unwrap_or_default().to_owned();
    let annotations: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("org.opencontainers.image.enc.{k}"), v.to_owned()))
        .collect();
    let _ = EncryptedLayer::parse(&media_type, &annotations);
    let _ = EncryptedLayer::parse(&format!("{media_type}+encrypted"), &annotations);

    let _ = PublicOptions::from_json(data);
    let _ = PrivateOptions::from_json(data);
    if let Ok(jwe) = Jwe::parse(data) {
        let _ = jwe.decrypt(std::slice::from_ref(key()));
    }
    let _ = KeyProviderInput::parse(data);
    if let Ok(out) = KeyProviderOutput::parse(data) {
        let _ = out.clone().into_optsdata();
        let _ = out.into_annotation();
    }
    if let Ok(p) = AnnotationPacket::parse(data) {
        let _ = p.check();
        let _ = p.open(&[7u8; 32]);
    }
    let _ = normalize_kid(&text);
});
