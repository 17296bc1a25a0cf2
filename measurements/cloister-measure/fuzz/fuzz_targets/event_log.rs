//! TCG2 crypto-agile (CCEL) event log parser, replay and descriptions; ACPI CCEL table.
#![no_main]

use cloister_measure::rtmr::{parse_ccel_table, parse_event_log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = parse_event_log(data) {
        let _ = log.replay();
        for e in &log.events {
            let _ = e.describe();
        }
    }
    let _ = parse_ccel_table(data);
});
