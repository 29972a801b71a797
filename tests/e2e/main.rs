//! End-to-end tests: the real binary on loopback ports, driven over HTTP.

mod admin;
mod admin_auth;
mod cassandra;
mod cli;
mod deck;
mod declarative;
mod faults;
mod hostile;
mod kong_clients;
mod kong_manager;
mod logging;
mod phases;
mod plugin_support;
mod plugins;
mod plugins_more;
mod plugins_response;
mod plugins_traffic;
mod postgres;
mod prometheus;
mod proxy;
mod proxy_cache;
mod rate_limiting;
mod support;
mod tools_support;
mod upstreams;
mod vault;
