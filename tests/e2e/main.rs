//! End-to-end tests: the real binary on loopback ports, driven over HTTP.

mod admin;
mod cli;
mod deck;
mod declarative;
mod kong_clients;
mod kong_manager;
mod logging;
mod phases;
mod plugin_support;
mod plugins;
mod plugins_more;
mod plugins_traffic;
mod postgres;
mod prometheus;
mod proxy;
mod rate_limiting;
mod rate_limiting_cluster;
mod response_ratelimiting;
mod support;
mod tools_support;
mod upstreams;
