//! Plugin phase hooks.
//!
//! The plugin phase runner (a later issue) plugs in here. Each hook is called
//! by [`crate::handler`] at the point Kong runs the phase; today they do
//! nothing and cost nothing.
//!
//! * [`rewrite`]: after the request is read, before routing.
//! * [`access`]: after routing and the protocol checks, before the upstream
//!   request is built; may short-circuit with a response.
//! * [`header_filter`]: on the response head (upstream or Kong-generated).
//! * [`log`]: after the response has been handed to the client.

use crate::Body;
use http::request::Parts;

/// Outcome of a phase that may short-circuit.
pub enum Flow {
    Continue,
    Respond(http::Response<Body>),
}

/// What the plugin phases know about the request being proxied.
pub struct PhaseCx<'a> {
    pub request_id: &'a str,
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
}

/// Kong's rewrite phase (global plugins only).
#[inline]
pub fn rewrite(_cx: &PhaseCx<'_>, _req: &mut Parts) -> Flow {
    Flow::Continue
}

/// Kong's access phase.
#[inline]
pub fn access(_cx: &PhaseCx<'_>, _req: &mut Parts) -> Flow {
    Flow::Continue
}

/// Kong's header_filter phase.
#[inline]
pub fn header_filter(_cx: &PhaseCx<'_>, _resp: &mut http::response::Parts) {}

/// Kong's log phase (never blocks the response).
#[inline]
pub fn log(_cx: &PhaseCx<'_>, _status: u16) {}
