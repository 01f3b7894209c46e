//! Flag and environment values, custom networks, permission lists; the law lives in
//! `eliza_cloud_fuzz::operator_values`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::operator_values(data));
