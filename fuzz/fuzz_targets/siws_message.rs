//! Sign-In With Solana messages into the SIWS parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::siws_message(data));
