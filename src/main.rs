//! `tollgate`: a Kong-compatible API gateway.

mod admin_auth;
mod cassandra_conf;
mod cli;
mod node;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = cli::run(args);
    std::process::exit(code);
}
