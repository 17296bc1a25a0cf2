//! SEV-SNP attestation report parser (strict and lenient), and re-serialisation of what parses.
#![no_main]

use cloister_evidence::snp::AttestationReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = AttestationReport::from_bytes(data) {
        // A strictly parsed report must serialise back to the same bytes.
        assert_eq!(&r.to_bytes()[..], data);
    }
    let _ = AttestationReport::from_bytes_lenient(data);
});
