//! `METHOD SP PATH` bytes into the router; the law lives in `eliza_cloud_fuzz::route_parser`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::route_parser(data));
