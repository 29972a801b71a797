//! Kong's own tools for the compatibility tests, built once by `scripts/tools` and cached
//! under ~/.cache/tollgate/tools.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path `scripts/tools <name>` prints (building the tool on first use).
pub fn tool(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tools");
    let out = Command::new(script)
        .arg(name)
        .output()
        .expect("run scripts/tools");
    assert!(
        out.status.success(),
        "scripts/tools {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Stdout and stderr of a finished tool run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
