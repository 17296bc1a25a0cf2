//! IBM SE parsers: ARCB, pvattest exchange request/response files, additional data, and the
//! trustee-style JSON evidence (via serde) — none may panic on any input.
#![no_main]

use cloister_evidence::se::{
    AdditionalData, AttestationFlags, PvattestExchangeRequest, PvattestExchangeResponse, SeArcb,
    SeAttestationResponse, SeAttestationResponseJson,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SeArcb::from_bytes(data);
    let _ = PvattestExchangeRequest::from_bytes(data);
    let _ = PvattestExchangeResponse::from_bytes(data);
    if let Some((&first, rest)) = data.split_first() {
        let _ = AdditionalData::parse(rest, AttestationFlags(u64::from(first) << 56 | u64::from(first)));
    }
    if let Ok(j) = serde_json::from_slice::<SeAttestationResponseJson>(data) {
        let _ = SeAttestationResponse::try_from(j);
    }
});
