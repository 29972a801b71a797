//! Tollgate's data model: Kong's entities described once, validated with Kong's messages,
//! and the declarative configuration format.

pub mod counters;
pub mod declarative;
pub mod entities;
pub mod error;
pub mod fuzzing;
pub mod pem;
pub mod plugin;
pub mod row_text;
pub mod schema;
pub mod url;
pub mod vault;

pub use entities::{by_admin_path, by_name, ALL as ENTITIES};
pub use error::{Error, ErrorCode, Result};
pub use plugin::{PluginCatalog, PluginDef};
pub use row_text::RowText;
pub use schema::{EntitySchema, Field, Type};

/// A stored entity: a JSON object with every field of its schema present.
pub type Row = serde_json::Map<String, serde_json::Value>;
