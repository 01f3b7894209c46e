//! Arbitrary bytes as stored values of every record type (a damaged or hostile database file).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::stored_records(data));
