//! The `kong_conf` fuzz target's entry point over its seed corpus
//! (`fuzz/corpus/<target>/`), on the stable toolchain: `scripts/fuzz` explores from there.

use tollgate_model::fuzzing::each_seed;

#[test]
fn kong_conf_seeds() {
    each_seed("kong_conf", tollgate_config::fuzzing::kong_conf);
}
