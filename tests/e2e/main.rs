//! End-to-end tests: the real binary on loopback ports, driven over HTTP.

mod admin;
mod cli;
mod declarative;
mod phases;
mod plugin_support;
mod plugins;
mod plugins_more;
mod proxy;
mod rate_limiting;
mod support;
mod upstreams;
