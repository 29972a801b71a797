//! The `admin_body` and `declarative` fuzz targets' entry points over their seed corpora
//! (`fuzz/corpus/<target>/`), on the stable toolchain: `scripts/fuzz` explores from there.

use tollgate_model::fuzzing::each_seed;

#[test]
fn admin_body_seeds() {
    each_seed("admin_body", tollgate_admin::fuzzing::admin_body);
}

#[test]
fn declarative_seeds() {
    each_seed("declarative", tollgate_admin::fuzzing::declarative);
}
