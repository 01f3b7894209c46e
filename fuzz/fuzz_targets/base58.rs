//! Base58 text and bytes through the Solana codec.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::base58(data));
