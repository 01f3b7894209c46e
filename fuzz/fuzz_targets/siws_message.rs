//! Sign-In With Solana messages into the SIWS parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud::fuzzing::siws_message(data));
