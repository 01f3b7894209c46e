//! Stateless sign-in nonces: arbitrary text never passes; an issued nonce passes once.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::signin_nonce(data));
