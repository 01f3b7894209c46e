//! A model file's bytes, as JSON and TOML; the law lives in `eliza_cloud_fuzz::model_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::model_file(data));
