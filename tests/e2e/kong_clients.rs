//! Client libraries against the real gateway: Kong's Go client (go-kong, the one decK
//! uses) and aio-kong from PyPI each run their create / list-with-paging / update /
//! delete / error checks (tests/tools/) against a fresh node.

use crate::support::Gateway;
use crate::tools_support::{text, tool};
use std::process::Command;

fn assert_all_passed(out: &std::process::Output) {
    let t = text(out);
    assert!(out.status.success(), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed"), "{t}");
    assert!(!stdout.contains("FAIL"), "{t}");
}

#[tokio::test]
async fn go_kong_drives_the_admin_api() {
    let bin = tool("gokong");
    let g = Gateway::start().await;
    let out = Command::new(bin).arg(&g.admin).output().unwrap();
    assert_all_passed(&out);
}

#[tokio::test]
async fn aio_kong_drives_the_admin_api() {
    let python = tool("aiokong");
    let g = Gateway::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/aiokong_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&g.admin)
        .output()
        .unwrap();
    assert_all_passed(&out);
}
