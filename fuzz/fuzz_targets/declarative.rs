//! `declarative`: see `tollgate_admin::fuzzing::declarative` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_admin::fuzzing::declarative(data));
