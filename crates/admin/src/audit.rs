//! The Admin API audit log (`admin_audit_log`): one JSON line per write request.
//!
//! A dedicated thread owns the file and appends each batch of lines with one `write(2)`;
//! a request waits for its line to be handed to the kernel before its answer leaves, so an
//! acknowledged write always has its line even if the process is killed right after (no
//! fsync: the store's commit is what survives a power loss). The wait is a channel round
//! trip plus a page-cache append, microseconds, and never blocks a runtime thread on disk.
//! Bodies are never logged (they carry credentials); the query string neither. The file is
//! reopened by name on request (SIGUSR1, for logrotate).

use crate::auth::Mode;
use axum::body::Body;
use axum::response::Response;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

/// Response bodies read for their entity id at most this large (entities are small; a
/// whole configuration is not worth parsing for ids).
const MAX_ID_BODY: u64 = 1 << 20;

/// Lines waiting for the writer before requests wait for room.
const QUEUE: usize = 4096;

enum Entry {
    Line(String, oneshot::Sender<()>),
    /// Reopen the file by its path (after logrotate moved it: SIGUSR1).
    Reopen,
}

/// A handle on the audit log's writer thread.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Entry>,
}

impl AuditLog {
    /// Opens (creating) the file for appending and starts its writer thread.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("admin-audit".into())
            .spawn(move || writer(file, rx, path))?;
        Ok(AuditLog { tx })
    }

    /// Reopens the file by its path, for log rotation (nginx's SIGUSR1 habit).
    pub async fn reopen(&self) {
        let _ = self.tx.send(Entry::Reopen).await;
    }

    /// Appends one line and returns once it is written.
    pub async fn record(&self, line: String) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Entry::Line(line, ack)).await.is_err() {
            tracing::error!("the admin audit log writer is gone; a line was not written");
            return;
        }
        let _ = done.await;
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn writer(mut file: std::fs::File, mut rx: mpsc::Receiver<Entry>, path: PathBuf) {
    let mut buf = Vec::new();
    let mut acks = Vec::new();
    let mut next = rx.blocking_recv();
    while let Some(entry) = next.take() {
        match entry {
            Entry::Reopen => match open_append(&path) {
                Ok(f) => file = f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot reopen the admin audit log; still writing the old file")
                }
            },
            Entry::Line(line, ack) => {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                acks.push(ack);
            }
        }
        // Whatever else is queued goes out in the same write (up to a reopen).
        while let Ok(entry) = rx.try_recv() {
            match entry {
                Entry::Line(line, ack) => {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    acks.push(ack);
                }
                reopen @ Entry::Reopen => {
                    next = Some(reopen);
                    break;
                }
            }
        }
        if !buf.is_empty() {
            if let Err(e) = file.write_all(&buf) {
                tracing::error!(path = %path.display(), error = %e, lines = acks.len(), "cannot write the admin audit log");
            }
            buf.clear();
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
}

/// One audit record.
pub(crate) struct Line<'a> {
    pub who: &'a str,
    pub auth: Mode,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub ids: Vec<String>,
}

impl Line<'_> {
    pub fn to_json(&self) -> String {
        let auth = match self.auth {
            Mode::Off => "off",
            Mode::Token => "token",
            Mode::Mtls => "mtls",
        };
        json!({
            "at": now_rfc3339(),
            "who": self.who,
            "auth": auth,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "entity_ids": self.ids,
        })
        .to_string()
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// The ids of the entities a response body names (`id`, or each `data[].id`), and the
/// response rebuilt around the body read.
pub(crate) async fn entity_ids(resp: Response) -> (Response, Vec<String>) {
    use axum::body::HttpBody as _;
    let small = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > 0 && n <= MAX_ID_BODY);
    if !small {
        return (resp, Vec::new());
    }
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ID_BODY as usize).await {
        Ok(b) => b,
        Err(_) => return (Response::from_parts(parts, Body::empty()), Vec::new()),
    };
    let mut ids = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        let id = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_string);
        ids.extend(id(&v));
        if let Some(rows) = v.get("data").and_then(Value::as_array) {
            ids.extend(rows.iter().filter_map(id));
        }
    }
    (Response::from_parts(parts, Body::from(bytes)), ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_come_from_the_body_which_is_kept() {
        let resp = Response::new(Body::from(r#"{"id":"a1","name":"x"}"#));
        let (resp, ids) = entity_ids(resp).await;
        assert_eq!(ids, vec!["a1"]);
        let b = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&b[..], br#"{"id":"a1","name":"x"}"#);
    }

    #[tokio::test]
    async fn lines_are_appended_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record("{\"n\":1}".into()).await;
        log.record("{\"n\":2}".into()).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
        // Rotated away: the next line goes to a new file by the same name.
        std::fs::rename(&path, path.with_extension("1")).unwrap();
        log.reopen().await;
        log.record("{\"n\":3}".into()).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
    }
}
