//! The command line, with Kong's habits: `start`, `stop`, `health`, `check`, `version`,
//! `migrations …`, `config …`, `admin-tokens …`. Exit status 0 on success, 1 on failure, with the reason
//! on stderr.

mod admin_tokens;
mod config_cmd;
mod db_snapshot;
mod metrics;
mod migrations;
mod process;
mod rebuilder;
mod start;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Global options shared by every command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Common {
    /// Configuration file (kong.conf format).
    #[arg(short = 'c', long = "conf", global = true)]
    pub conf: Option<PathBuf>,
    /// Prefix directory (database, pid file, logs).
    #[arg(short = 'p', long = "prefix", global = true)]
    pub prefix: Option<PathBuf>,
    /// Verbose output.
    #[arg(long = "v", global = true)]
    pub verbose: bool,
}

#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about = "A Kong-compatible API gateway")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the gateway in the foreground (SIGTERM/SIGINT drain and stop it).
    Start {
        /// Run pending migrations before starting.
        #[arg(long)]
        run_migrations: bool,
    },
    /// Stop a running gateway (SIGTERM, then wait for it to drain).
    Stop {
        /// Seconds to wait for the process to exit.
        #[arg(short = 't', long, default_value_t = 30)]
        timeout: u64,
    },
    /// Check that a gateway is running in the prefix.
    Health,
    /// Validate a configuration file.
    Check {
        /// The file (default: the -c file or the usual locations).
        file: Option<PathBuf>,
    },
    /// Print the version.
    Version {
        /// Also print the Kong version this build is compatible with.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Manage the database schema.
    Migrations {
        #[command(subcommand)]
        action: migrations::Action,
    },
    /// Declarative configuration.
    Config {
        #[command(subcommand)]
        action: config_cmd::Action,
    },
    /// Admin API tokens (admin_auth = token).
    AdminTokens {
        #[command(subcommand)]
        action: admin_tokens::Action,
    },
}

pub fn run(cli: Cli) -> i32 {
    let common = cli.common;
    let result = match cli.command {
        Command::Start { run_migrations } => start::run(&common, run_migrations),
        Command::Stop { timeout } => process::stop(&common, timeout),
        Command::Health => process::health(&common),
        Command::Check { file } => process::check(&common, file),
        Command::Version { all } => {
            if all {
                println!(
                    "Tollgate {} (Kong {} compatible)",
                    env!("CARGO_PKG_VERSION"),
                    crate::node::KONG_COMPAT_VERSION
                );
            } else {
                println!("Tollgate {}", env!("CARGO_PKG_VERSION"));
            }
            Ok(())
        }
        Command::Migrations { action } => migrations::run(&common, action),
        Command::Config { action } => config_cmd::run(&common, action),
        Command::AdminTokens { action } => admin_tokens::run(&common, action),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}
