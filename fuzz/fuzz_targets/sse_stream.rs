//! An upstream's event-stream bytes; the law lives in `eliza_cloud_fuzz::sse_stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eliza_cloud_fuzz::sse_stream(data));
