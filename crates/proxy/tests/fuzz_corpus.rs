//! The `router` and `request_head` fuzz targets' entry points over their seed corpora
//! (`fuzz/corpus/<target>/`), on the stable toolchain: `scripts/fuzz` explores from there.

use std::path::PathBuf;

fn each_seed(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("seed");
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: seed {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn router_seeds() {
    each_seed("router", tollgate_proxy::fuzzing::router);
}

#[test]
fn request_head_seeds() {
    each_seed("request_head", tollgate_proxy::fuzzing::request_head);
}
