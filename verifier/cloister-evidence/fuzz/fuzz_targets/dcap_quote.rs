//! TDX/SGX DCAP quote parser (v3, v4, v5 framing, signature and certification data).
#![no_main]

use cloister_evidence::tdx::Quote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Quote::parse(data);
});
