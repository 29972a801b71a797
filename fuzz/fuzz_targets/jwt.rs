//! `jwt`: see `tollgate_plugins::fuzzing::jwt` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_plugins::fuzzing::jwt(data));
