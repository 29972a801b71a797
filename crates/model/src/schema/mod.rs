//! The schema language: one description per entity drives validation, defaults, the Admin
//! API's endpoints, `/schemas/{entity}`, the declarative format and the storage tables.
//! It mirrors Kong's `kong/db/schema` vocabulary so facts port one to one.

pub mod json;
pub mod typedefs;
mod validate;

pub use validate::{
    coerce, is_uuid, now_secs, quoted_list, validate_field_value, Context, Operation,
};

use regex::Regex;
use serde_json::Value;

/// A custom string validator: `Err(message)` becomes the field's error.
pub type StrValidator = fn(&str) -> Result<(), String>;
/// An entity-level check over the whole (defaulted) record: `Err((field or None, message))`.
pub type EntityFn =
    fn(&serde_json::Map<String, Value>) -> Result<(), (Option<&'static str>, String)>;

#[derive(Clone, Debug)]
pub enum Type {
    String,
    Integer,
    Number,
    Boolean,
    Array(Box<Field>),
    Set(Box<Field>),
    Map {
        keys: Box<Field>,
        values: Box<Field>,
    },
    Record(Vec<Field>, Vec<EntityCheck>),
    /// A reference to another entity, stored as `{"id": …}`.
    Foreign(&'static str),
    /// Any JSON value (used for plugin configs before a plugin's own schema applies).
    Json,
}

impl Type {
    pub fn kong_name(&self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
            Type::Array(_) => "array",
            Type::Set(_) => "set",
            Type::Map { .. } => "map",
            Type::Record(..) => "record",
            Type::Foreign(_) => "foreign",
            Type::Json => "json",
        }
    }
}

/// A constraint on a single value.
#[derive(Clone, Debug)]
pub enum Check {
    Between(i64, i64),
    Gt(f64),
    OneOf(Vec<Value>),
    LenMin(usize),
    LenMax(usize),
    StartsWith(&'static str),
    /// The value must be null/absent (Kong's `eq = null`), with a custom message.
    EqNull(&'static str),
    /// Value must not equal (Kong's `ne`), with a custom message.
    Ne(Value, Option<&'static str>),
    /// Fails when the pattern matches.
    MatchNone(Regex, &'static str),
    /// Fails unless one of the patterns matches.
    MatchAny(Vec<Regex>, &'static str),
    /// Fails unless the pattern matches (Kong's `match`, message `invalid value: %s`).
    Match(Regex),
    Custom(StrValidator),
    Uuid,
    /// A set's elements may only come from one of these subsets.
    MutuallyExclusiveSubsets(Vec<Vec<&'static str>>),
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Type,
    pub required: bool,
    /// `Some(Value::Null)` means "defaults to null" (the key is present with null).
    pub default: Option<Value>,
    /// Generated on insert (ids, timestamps) when absent.
    pub auto: bool,
    pub unique: bool,
    pub immutable: bool,
    pub checks: Vec<Check>,
    pub description: &'static str,
    /// Kong's `referenceable`: may hold a `{vault://…}` reference.
    pub referenceable: bool,
    /// Kong's `encrypted`/secret fields: never printed in logs.
    pub sensitive: bool,
    /// Deleting the referenced entity: cascade (true) or restrict (false). Foreign only.
    pub on_delete_cascade: bool,
    /// A timestamp in milliseconds (targets) rather than seconds.
    pub timestamp_ms: bool,
    pub timestamp: bool,
}

impl Field {
    pub fn new(name: &'static str, ty: Type) -> Self {
        Field {
            name,
            ty,
            required: false,
            default: None,
            auto: false,
            unique: false,
            immutable: false,
            checks: Vec::new(),
            description: "",
            referenceable: false,
            sensitive: false,
            on_delete_cascade: false,
            timestamp_ms: false,
            timestamp: false,
        }
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn default(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }
    pub fn auto(mut self) -> Self {
        self.auto = true;
        self
    }
    pub fn check(mut self, c: Check) -> Self {
        self.checks.push(c);
        self
    }
    pub fn describe(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }
    pub fn referenceable(mut self) -> Self {
        self.referenceable = true;
        self
    }
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    pub fn cascade(mut self) -> Self {
        self.on_delete_cascade = true;
        self
    }
    pub fn between(self, lo: i64, hi: i64) -> Self {
        self.check(Check::Between(lo, hi))
    }
    pub fn one_of(self, vals: &[&'static str]) -> Self {
        self.check(Check::OneOf(vals.iter().map(|v| Value::from(*v)).collect()))
    }
    pub fn one_of_int(self, vals: &[i64]) -> Self {
        self.check(Check::OneOf(vals.iter().map(|v| Value::from(*v)).collect()))
    }
    pub fn custom(self, f: StrValidator) -> Self {
        self.check(Check::Custom(f))
    }
    pub fn foreign_entity(&self) -> Option<&'static str> {
        match self.ty {
            Type::Foreign(e) => Some(e),
            _ => None,
        }
    }
}

/// Kong's `entity_checks`.
#[derive(Clone, Debug)]
pub enum EntityCheck {
    AtLeastOneOf(Vec<&'static str>),
    OnlyOneOf(Vec<&'static str>),
    MutuallyRequired(Vec<&'static str>),
    MutuallyExclusive(Vec<&'static str>),
    /// If `if_field` satisfies `if_match`, `then_field` must satisfy `then_match`.
    Conditional {
        if_field: &'static str,
        if_match: Pred,
        then_field: &'static str,
        then_match: Pred,
        then_err: Option<&'static str>,
    },
    /// If `if_field` satisfies `if_match`, one of the fields must be non-empty.
    ConditionalAtLeastOneOf {
        if_field: &'static str,
        if_match: Pred,
        fields: Vec<&'static str>,
        err: &'static str,
    },
    Custom(EntityFn),
}

/// Predicates used by conditional entity checks.
#[derive(Clone, Debug)]
pub enum Pred {
    IsNull,
    NotNull,
    OneOf(Vec<&'static str>),
    NotOneOf(Vec<&'static str>),
    /// A set/array contains this value.
    Contains(&'static str),
    /// Every element of the set is one of these.
    ElementsOneOf(Vec<&'static str>),
    /// Every element of the set is none of these.
    ElementsNotOneOf(Vec<&'static str>),
    LenEq(usize),
    Eq(Value),
}

/// A unique key made of several fields (Kong's `cache_key` uniqueness).
#[derive(Clone, Debug)]
pub struct CompositeKey {
    pub fields: Vec<&'static str>,
}

#[derive(Clone, Debug)]
pub struct EntitySchema {
    /// Kong's table/DAO name: `services`, `keyauth_credentials`, …
    pub name: &'static str,
    /// The Admin API collection path: `services`, `key-auths`, …
    pub admin_path: &'static str,
    /// The nested path under a parent: `/consumers/{c}/key-auth`.
    pub nested_path: Option<&'static str>,
    /// Field usable in URLs in place of the id.
    pub endpoint_key: Option<&'static str>,
    pub fields: Vec<Field>,
    pub checks: Vec<EntityCheck>,
    /// Shorthand fields expanded before validation (`url` on services).
    pub shorthands: Vec<(&'static str, ShorthandFn)>,
    pub cache_key: Option<CompositeKey>,
    /// Entities accepted by the declarative format but absent from `db_export`'s top level
    /// because they nest under their parent (credentials under consumers…).
    pub workspaceable: bool,
    /// Sort order among entities when importing (parents first).
    pub import_order: u8,
    /// Kong's `ttl = true` (key-auth credentials may expire).
    pub ttl: bool,
    /// Fields hidden from output (none in OSS core, kept for plugins).
    pub transient: Vec<&'static str>,
    /// A transformation applied after validation on insert/update (e.g. hashing a
    /// basic-auth password with the consumer id).
    pub transform: Option<TransformFn>,
}

/// Expands a shorthand value into fields, or an error message for the shorthand.
pub type ShorthandFn = fn(&Value) -> Result<serde_json::Map<String, Value>, String>;
/// A write-time transformation of the validated record.
/// It gets the names of the fields the client sent.
pub type TransformFn = fn(&mut serde_json::Map<String, Value>, &[String]) -> Result<(), String>;

impl EntitySchema {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn unique_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.unique)
    }
    pub fn foreign_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.foreign_entity().is_some())
    }
    pub fn has_field(&self, name: &str) -> bool {
        self.field(name).is_some()
    }
}
