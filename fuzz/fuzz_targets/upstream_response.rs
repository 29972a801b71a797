//! `upstream_response`: see `tollgate_proxy::fuzzing::upstream_response` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_proxy::fuzzing::upstream_response(data));
