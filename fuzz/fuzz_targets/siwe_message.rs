//! EIP-4361 messages into the SIWE parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::siwe_message(data));
