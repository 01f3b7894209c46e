//! Custom domain names and Host headers; the law lives in `eliza_cloud_fuzz::domain_names`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::domain_names(data));
