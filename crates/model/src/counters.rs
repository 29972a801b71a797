//! The counter rows of the rate-limiting plugins' `cluster` policy (Kong's
//! `ratelimiting_metrics` and `response_ratelimiting_metrics` tables): written by the
//! plugins through the store, so both crates share these shapes.

/// Which counter table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterTable {
    /// rate-limiting's `ratelimiting_metrics`.
    RateLimiting,
    /// response-ratelimiting's `response_ratelimiting_metrics`.
    ResponseRateLimiting,
}

impl CounterTable {
    pub const ALL: [CounterTable; 2] = [
        CounterTable::RateLimiting,
        CounterTable::ResponseRateLimiting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CounterTable::RateLimiting => "ratelimiting_metrics",
            CounterTable::ResponseRateLimiting => "response_ratelimiting_metrics",
        }
    }
}

/// One counter and what to add to it: Kong's primary key (identifier, period, period_date,
/// service_id, route_id), the delta and when the row may be purged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterIncrement {
    pub identifier: String,
    /// `second` … `year` (response-ratelimiting: `<limit name>_<period>`, as Kong).
    pub period: String,
    /// The window's start, seconds since the epoch (UTC).
    pub period_date: i64,
    pub service_id: String,
    pub route_id: String,
    pub value: i64,
    /// Seconds since the epoch after which the row is dead (Kong's `ttl` column).
    pub expires_at: i64,
}
