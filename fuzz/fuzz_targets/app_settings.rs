//! App names and allowed origins; the law lives in `eliza_cloud_fuzz::app_settings`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::app_settings(data));
