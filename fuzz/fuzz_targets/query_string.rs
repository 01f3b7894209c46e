//! Query strings (`?page=2&limit=%31`) into the decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud::fuzzing::query_string(data));
