//! IBM SE header locator and parser.
#![no_main]

use cloister_measure::se::parse_se_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_se_header(data) {
        let _ = h.reference_values().to_json();
    }
});
