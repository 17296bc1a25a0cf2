//! TDVF metadata parser and MRTD.
#![no_main]

use cloister_measure::tdx::{PageOrder, mrtd, parse_tdvf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if parse_tdvf(data).is_ok() {
        let _ = mrtd(data, PageOrder::SinglePass);
        let _ = mrtd(data, PageOrder::TwoPass);
    }
});
