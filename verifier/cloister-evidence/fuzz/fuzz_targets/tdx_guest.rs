//! What a TD guest reads without trusting it: the TDREPORT parser and the QGS message decoders
//! (response from the host, request on the emulated QGS). Re-encoding a parsed report must give
//! the same bytes.
#![no_main]

use cloister_evidence::tdx::qgs;
use cloister_evidence::tdx::tdreport::TdReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = TdReport::from_bytes(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
    let _ = qgs::decode_get_quote_response(data);
    let _ = qgs::decode_get_quote_request(data);
    if data.len() >= 4 {
        let _ = qgs::frame_length([data[0], data[1], data[2], data[3]]);
    }
});
