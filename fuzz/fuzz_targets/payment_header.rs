//! x402 payment headers (X-PAYMENT / PAYMENT-SIGNATURE) into the decoder and verifier.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::payment_header(data));
