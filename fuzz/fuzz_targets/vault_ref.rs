//! `vault_ref`: see `tollgate_model::fuzzing::vault_ref` for the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_model::fuzzing::vault_ref(data));
