//! Errors and value origins.

use std::fmt;
use std::path::PathBuf;

/// Where an effective configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built-in default (Kong's, or Tollgate's where it differs).
    Default,
    /// A line of the configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An environment variable (`KONG_…` or `TOLLGATE_…`).
    Env {
        /// The variable name.
        var: String,
    },
    /// An explicit override passed by the CLI (e.g. `--prefix`).
    Override,
}

impl Source {
    /// Precedence: default < file < `KONG_*` < `TOLLGATE_*` < override.
    pub fn rank(&self) -> u8 {
        match self {
            Source::Default => 0,
            Source::File { .. } => 1,
            Source::Env { var } if var.starts_with("TOLLGATE_") => 3,
            Source::Env { .. } => 2,
            Source::Override => 4,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("built-in default"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Env { var } => write!(f, "environment variable {var}"),
            Source::Override => f.write_str("command-line override"),
        }
    }
}

/// One problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The configuration key concerned, if any.
    pub key: Option<String>,
    /// Human-readable description, naming the key, the bad value and what
    /// is allowed, e.g. `invalid value for 'database': 'mysql' (expected one
    /// of: sqlite, postgres, cassandra, off)`.
    pub message: String,
    /// Where the offending value came from (`None` for built-in defaults or
    /// problems involving several keys).
    pub source: Option<Source>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.source {
            None | Some(Source::Default) => Ok(()),
            Some(src) => write!(f, " [from {src}]"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file given explicitly does not exist.
    #[error("no file at: {}", .0.display())]
    FileNotFound(PathBuf),
    /// The configuration file could not be read.
    #[error("could not read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors and invalid values; all of them are collected.
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The individual problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} configuration errors:", many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}
