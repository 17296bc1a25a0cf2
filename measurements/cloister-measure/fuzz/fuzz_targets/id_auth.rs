//! SNP ID block / ID auth decoding and signature checks on untrusted bytes.
#![no_main]

use cloister_measure::id_block::{IdAuth, IdBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let block = IdBlock::from_bytes(data.get(..96).unwrap_or(data));
    if let Ok(auth) = IdAuth::from_bytes(data) {
        let _ = auth.id_public_key();
        let _ = auth.author_public_key();
        if let Ok(b) = block {
            let _ = auth.verify(&b);
        }
    }
});
