//! Registry-controlled text: manifests and indexes (with and without a Content-Type), image
//! references, WWW-Authenticate challenges and auth.json. None may panic.
#![no_main]

use cloister_image::manifest::{Platform, parse_manifest, parse_manifest_any, select_platform, Fetched};
use cloister_image::registry::parse_challenge;
use cloister_image::{Credentials, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ct in [None, Some("application/vnd.oci.image.index.v1+json"), Some("application/vnd.oci.image.manifest.v1+json")] {
        if let Ok(Fetched::Index(idx)) = parse_manifest(ct, data) {
            let _ = select_platform(&idx, &Platform::host());
        }
        let _ = parse_manifest_any(ct, data);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = Reference::parse(s) {
            let _ = (r.to_string(), r.manifest_reference(), r.api_host());
        }
        let _ = parse_challenge(s);
    }
    let _ = Credentials::from_auth_json(data);
});
