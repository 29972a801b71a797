//! file-log (`kong/plugins/file-log/{schema,handler}.lua`, 3.9): one JSON line per
//! request appended to `path` (created with mode 0644). With `reopen`, the file is
//! reopened for every write, as Kong does. Without it the file stays open, and
//! [`reopen_files`] (SIGUSR1, nginx's logrotate signal) makes every file-log reopen its
//! file before the next write: rename the file, send SIGUSR1, and a new one starts.
//!
//! Writes happen off the request path, on the queue's task (in order, one queue per
//! path as Kong keeps one descriptor per path).

use super::queue::{self, QueueConf, QueueHandle, Sender};
use super::{custom_fields_by_lua, refuse_lua, str_of};
use crate::api::{InstanceScope, LogCx, Phases, Plugin, PluginSpec};
use bytes::Bytes;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_model::schema::{Check, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "file-log";
pub const PRIORITY: i32 = 9;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        log: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

/// Bumped by [`reopen_files`]; a writer holding an older generation reopens its file.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every file-log reopen its file before its next write (logrotate's signal).
pub fn reopen_files() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Kong's `match = [[^[^%s*&%%\`][^*&%%\`]*[^%s*&%%\`]$]]`, `err = "not a valid filename"`.
fn valid_path(p: &str) -> Result<(), String> {
    let bad = |c: char| matches!(c, '*' | '&' | '%' | '\\' | '`');
    let chars: Vec<char> = p.chars().collect();
    let ok = chars.len() >= 2
        && !chars.iter().any(|&c| bad(c))
        && !chars[0].is_whitespace()
        && !chars[chars.len() - 1].is_whitespace();
    if ok {
        Ok(())
    } else {
        Err("not a valid filename".into())
    }
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("path", Type::String)
                .required()
                .check(Check::Custom(valid_path))
                .describe("The file path of the output log file. The plugin creates the log file if it doesn't exist yet."),
            Field::new("reopen", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("Determines whether the log file is closed and reopened on every request."),
            custom_fields_by_lua(),
        ],
        config_checks: vec![EntityCheck::Custom(refuse_lua)],
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Debug)]
pub struct FileLogConf {
    path: String,
    reopen: bool,
}

/// file-log compiled.
pub struct FileLog {
    queue: QueueHandle<FileSender>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let path = str_of(config, "path").ok_or("path is required")?.to_owned();
    let reopen = config
        .get("reopen")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let name = format!("file-log:{path}");
    let queue = queue::queue(
        &name,
        super::tag(NAME, "?"),
        QueueConf::unqueued(),
        FileLogConf { path, reopen },
    );
    Ok(Box::new(FileLog { queue }))
}

impl Plugin for FileLog {
    fn log(&self, cx: &LogCx<'_>) {
        let _ = self.queue.enqueue(super::record_with(cx, b"", true));
    }
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.queue.set_tag(super::tag(NAME, scope.id));
    }
}

/// The open file of a path.
#[derive(Default)]
pub struct FileSender {
    file: Option<(File, String, u64)>,
}

fn open(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

impl Sender for FileSender {
    type Conf = FileLogConf;

    async fn send(&mut self, c: &FileLogConf, batch: &[Bytes]) -> Result<(), String> {
        let gen = GENERATION.load(Ordering::Acquire);
        let mut held = self.file.take();
        if c.reopen
            || held
                .as_ref()
                .is_some_and(|(_, p, g)| *g != gen || *p != c.path)
        {
            held = None;
        }
        let path = c.path.clone();
        let batch = batch.to_vec();
        // File I/O may block (a slow disk): keep it off the queues' runtime thread.
        let (held, r) = tokio::task::spawn_blocking(move || {
            let mut f = match held {
                Some((f, _, _)) => f,
                None => match open(&path) {
                    Ok(f) => f,
                    Err(e) => return (None, Err(format!("failed to open the file: {e}"))),
                },
            };
            let mut r = Ok(());
            for line in &batch {
                if let Err(e) = f.write_all(line) {
                    r = Err(format!("failed to write to {path}: {e}"));
                    break;
                }
            }
            (Some((f, path, gen)), r)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.file = held;
        r
    }
}
