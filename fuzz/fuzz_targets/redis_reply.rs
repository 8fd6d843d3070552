//! Fuzz target `redis_reply`: see [`rolegate_fuzz::redis_reply`] for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate_fuzz::redis_reply(data));
