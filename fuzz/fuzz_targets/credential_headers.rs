//! Raw header bytes into the `Authorization` / `X-API-Key` parsers and the key parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::credential_headers(data));
