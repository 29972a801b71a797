//! tollgate-proxy: the proxy data plane.
//!
//! * [`Snapshot`]: everything a request needs (compiled router, services,
//!   upstream targets, certificates), immutable, behind an `ArcSwap`
//!   ([`SharedSnapshot`]) and loaded once per request.
//! * [`Proxy`]: binds the `proxy_listen` addresses (HTTP/1.1, h2c with prior
//!   knowledge on `http2` listeners, TLS with ALPN and SNI-selected certificates
//!   on `ssl` listeners), routes with `tollgate-router` and forwards through the
//!   upstream connection pool ([`upstream`]).
//! * [`balancer`]: Kong's upstreams (round-robin, consistent-hashing,
//!   least-connections, latency), passive and active health checks (per
//!   resolved address) and name resolution for targets and service hosts
//!   ([`balancer::dns`]); state outlives snapshots. [`Snapshot::health_states`]
//!   reports each target address's health (Admin API, metrics).
//! * [`errors`]: Kong's exact client-visible error bodies.
//! * [`phases`]: the plugin phase runner; [`downstream`]: the body_filter and log
//!   phases as the response body goes out.

pub mod balancer;
mod buffering;
pub mod downstream;
pub mod errors;
mod fast;
pub mod fuzzing;
pub mod guard;
pub mod handler;
pub mod head;
pub mod headers;
pub mod phases;
mod rewind;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod tls;
pub mod upstream;
mod worker;

pub use server::Proxy;
pub use snapshot::{Dataset, SharedSnapshot, Snapshot};
pub use stats::Stats;

/// The Kong version this gateway is compatible with, used in `Via` and `Server`.
pub const KONG_VERSION: &str = "3.9.1";

/// `kong/<version>`, Kong's `SERVER_HEADER`.
pub const SERVER_TOKEN: &str = "kong/3.9.1";

/// Error type used for bodies crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends and every request it forwards.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// A body holding `data` in full.
pub fn full_body(data: impl Into<bytes::Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
