//! `request_head`: see `tollgate_proxy::fuzzing::request_head` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_proxy::fuzzing::request_head(data));
