//! RFC 3339 date-times (key `expires_at`, later SIWE fields) into the parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::timestamps(data));
