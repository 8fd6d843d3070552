//! Fuzz target `mysql_status`: see [`rolegate_fuzz::mysql_status`] for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate_fuzz::mysql_status(data));
