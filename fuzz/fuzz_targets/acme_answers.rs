//! Certificate chains from the ACME CA and HTTP-01 paths; the law lives in
//! `eliza_cloud_fuzz::acme_answers`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::acme_answers(data));
