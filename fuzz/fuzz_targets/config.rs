//! Fuzz target `config`: see [`rolegate_fuzz::config`] for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate_fuzz::config(data));
