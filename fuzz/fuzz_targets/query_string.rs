//! Query strings (`?page=2&limit=%31`) into the decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::query_string(data));
