//! Fuzz target `admin_request`: see [`rolegate_fuzz::admin_request`] for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate_fuzz::admin_request(data));
