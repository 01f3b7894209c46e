//! Arbitrary bytes as stored values of every record type (a damaged or hostile database file).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud::fuzzing::stored_records(data));
