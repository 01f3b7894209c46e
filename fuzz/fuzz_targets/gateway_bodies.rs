//! A metered route's body bytes; the law lives in `eliza_cloud_fuzz::gateway_bodies`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::gateway_bodies(data));
