//! `kong_conf`: see `tollgate_config::fuzzing::kong_conf` for the input layout and the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_config::fuzzing::kong_conf(data));
