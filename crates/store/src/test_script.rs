//! The test databases' control scripts (`scripts/pg`, `scripts/cassandra`), run from the
//! test servers in `postgres::test_server` and `cassandra::test_server`.

use std::path::{Path, PathBuf};

/// Runs `script what dir` (stop, start …) for a private test server, failing the test with
/// the script's own error when it fails.
pub(crate) fn ctl(script: &Path, what: &str, dir: Option<&PathBuf>) {
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir =
        dir.unwrap_or_else(|| panic!("only a private test server can {what} (scripts/{name})"));
    let out = std::process::Command::new(script)
        .arg(what)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name part unique across test processes and within one (pid, clock, counter): for
/// test databases, keyspaces and their directories.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
