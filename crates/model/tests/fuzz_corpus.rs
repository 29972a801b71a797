//! The `vault_ref` fuzz target's entry point over its seed corpus (`fuzz/corpus/vault_ref/`),
//! on the stable toolchain: `scripts/fuzz` explores from there.

use tollgate_model::fuzzing::{each_seed, vault_ref};

#[test]
fn vault_ref_seeds() {
    each_seed("vault_ref", vault_ref);
}
