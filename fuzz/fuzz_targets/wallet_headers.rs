//! Wallet-signature headers, the canonical query and the signed text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::wallet_headers(data));
