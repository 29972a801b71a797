//! `admin_body`: see `tollgate_admin::fuzzing::admin_body` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_admin::fuzzing::admin_body(data));
