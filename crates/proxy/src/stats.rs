//! Connection and request counters for Kong's `/status` `server` object.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by every listener. Reading/writing/waiting are best effort:
/// a connection counts as `reading` while a request head is awaited or a
/// request is in flight, `waiting` when idle between keep-alive requests.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_active: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_handled: AtomicU64,
    pub total_requests: AtomicU64,
    pub connections_reading: AtomicU64,
    pub connections_writing: AtomicU64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Kong's `/status` `server` object.
    pub fn to_json(&self) -> serde_json::Value {
        let active = self.connections_active.load(Relaxed);
        let reading = self.connections_reading.load(Relaxed);
        let writing = self.connections_writing.load(Relaxed).min(active);
        let waiting = active.saturating_sub(reading + writing);
        serde_json::json!({
            "connections_accepted": self.connections_accepted.load(Relaxed),
            "connections_active": active,
            "connections_handled": self.connections_handled.load(Relaxed),
            "connections_reading": reading,
            "connections_waiting": waiting,
            "connections_writing": writing,
            "total_requests": self.total_requests.load(Relaxed),
        })
    }
}
