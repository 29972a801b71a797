//! The `jwt` and `basic_auth` fuzz targets' entry points over their seed corpora
//! (`fuzz/corpus/<target>/`), on the stable toolchain: `scripts/fuzz` explores from there.

use tollgate_model::fuzzing::each_seed;

#[test]
fn jwt_seeds() {
    each_seed("jwt", tollgate_plugins::fuzzing::jwt);
}

#[test]
fn basic_auth_seeds() {
    each_seed("basic_auth", tollgate_plugins::fuzzing::basic_auth);
}
