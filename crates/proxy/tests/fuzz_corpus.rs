//! The `router` and `request_head` fuzz targets' entry points over their seed corpora
//! (`fuzz/corpus/<target>/`), on the stable toolchain: `scripts/fuzz` explores from there.

use tollgate_model::fuzzing::each_seed;

#[test]
fn router_seeds() {
    each_seed("router", tollgate_proxy::fuzzing::router);
}

#[test]
fn request_head_seeds() {
    each_seed("request_head", tollgate_proxy::fuzzing::request_head);
}

#[test]
fn upstream_response_seeds() {
    each_seed(
        "upstream_response",
        tollgate_proxy::fuzzing::upstream_response,
    );
}
