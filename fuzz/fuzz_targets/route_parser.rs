//! `METHOD SP PATH` bytes into the router; the law lives in `eliza_cloud::fuzzing::route_parser`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud::fuzzing::route_parser(data));
