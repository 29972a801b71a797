//! `tollgate`: a Kong-compatible API gateway.

mod admin_auth;
mod cassandra_conf;
mod cli;
mod memory;
mod node;

use clap::Parser;

fn main() {
    // Two rustls providers are compiled in (ring, ours; aws-lc-rs, which the Cassandra
    // driver's rustls feature enables): libraries that ask rustls for the process default
    // (the redis client's TLS) need one named.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    let code = cli::run(args);
    std::process::exit(code);
}
