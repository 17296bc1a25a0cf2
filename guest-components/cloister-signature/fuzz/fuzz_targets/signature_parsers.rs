//! Parsers that see untrusted or operator-supplied bytes: the policy JSON, the signature payload
//! JSON (both kinds), OpenPGP keyrings and signed messages (verified against a fixed keyring, so
//! the whole message is parsed and read), cosign PEM keys, docker references and registries.d
//! YAML. None may panic or hang on any input.
#![no_main]

use std::sync::OnceLock;

use cloister_signature::cosign::CosignKey;
use cloister_signature::payload::{PayloadKind, parse_payload};
use cloister_signature::simple::{Keyring, verify_message};
use cloister_signature::{DockerReference, Policy, RegistriesD};
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::parse(include_bytes!("../../tests/fixtures/ring.gpg")).unwrap_or_default())
}

fuzz_target!(|data: &[u8]| {
    let _ = Policy::from_json(data);
    let _ = parse_payload(PayloadKind::Simple, data);
    let _ = parse_payload(PayloadKind::Cosign, data);
    let _ = verify_message(keyring(), data);
    let _ = Keyring::parse(data);
    let _ = CosignKey::from_pem(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = DockerReference::parse_normalized(s);
        let _ = RegistriesD::from_yaml_documents([("fuzz", s)]);
    }
});
