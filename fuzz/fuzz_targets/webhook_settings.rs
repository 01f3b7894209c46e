//! Webhook settings, targets, Retry-After and signature headers; the law lives in
//! `eliza_cloud_fuzz::webhook_settings`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::webhook_settings(data));
