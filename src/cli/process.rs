//! `stop`, `health`, `check` and the pid file that ties a prefix to a running process.

use super::Common;
use crate::node;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn pid_path(prefix: &Path) -> PathBuf {
    prefix.join("pids").join("tollgate.pid")
}

/// The pid recorded in the prefix, if that process is still alive.
pub fn running_pid(prefix: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_path(prefix)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether `pid` runs; an exited process its parent has not reaped yet (a zombie) does not.
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `pid (comm) S …`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

pub fn stop(common: &Common, timeout: u64) -> anyhow::Result<()> {
    let config = node::load_config(common, None)?;
    let Some(pid) = running_pid(&config.prefix) else {
        anyhow::bail!("Tollgate is not running in {}", config.prefix.display());
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|e| anyhow::anyhow!("cannot signal pid {pid}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < deadline {
        if !alive(pid) {
            println!("Tollgate stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("Tollgate (pid {pid}) did not stop within {timeout}s; it may still be draining")
}

pub fn health(common: &Common) -> anyhow::Result<()> {
    let config = node::load_config(common, None)?;
    match running_pid(&config.prefix) {
        Some(pid) => {
            println!("tollgate (pid {pid}) is running");
            println!("Tollgate is healthy at {}", config.prefix.display());
            Ok(())
        }
        None => anyhow::bail!("Tollgate is not running at {}", config.prefix.display()),
    }
}

pub fn check(common: &Common, file: Option<PathBuf>) -> anyhow::Result<()> {
    let shown = file.clone().or_else(|| common.conf.clone());
    let config = node::load_config(common, file)?;
    // What `start` would refuse is not a valid configuration either.
    crate::admin_auth::check(&config)?;
    tollgate_proxy::server::check_limits(&config).map_err(anyhow::Error::msg)?;
    match shown {
        Some(f) => println!("configuration at {} is valid", f.display()),
        None => println!("configuration is valid"),
    }
    Ok(())
}
