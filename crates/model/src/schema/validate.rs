//! Validation and defaults, with Kong's messages (`kong/db/schema/init.lua`).
//!
//! Every write goes through [`EntitySchema::process`]: shorthands are expanded, form
//! strings coerced, defaults applied, each field and entity check validated; errors are
//! collected into one tree so the client sees all of them at once.

use super::{Check, EntityCheck, EntitySchema, Field, Pred, Type};
use crate::error::{Error, Result};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// POST: a new entity; auto fields are generated.
    Insert,
    /// PUT: a full replacement; absent fields go back to their defaults.
    Upsert,
    /// PATCH after merging onto the stored entity.
    Update,
}

/// Per-call validation options.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub op: Operation,
    /// Values came from a form or query string: coerce strings to the field's type.
    pub coerce: bool,
    /// Current time in seconds (tests pin it).
    pub now: f64,
}

impl Context {
    pub fn new(op: Operation) -> Self {
        Context {
            op,
            coerce: false,
            now: now_secs(),
        }
    }
    pub fn coerce(mut self, yes: bool) -> Self {
        self.coerce = yes;
        self
    }
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EntitySchema {
    /// Validates `input` and returns the complete record (defaults, auto fields, nulls),
    /// or a schema-violation error listing every problem.
    pub fn process(&self, input: Map<String, Value>, cx: &Context) -> Result<Map<String, Value>> {
        let keys: Vec<String> = input.keys().cloned().collect();
        self.process_with_keys(input, &keys, cx)
    }

    /// Like [`process`](Self::process) for a PATCH: `input` is the stored row merged with
    /// the patch, `sent` the fields the client sent (write-time transformations such as
    /// password hashing apply only to those).
    pub fn process_with_keys(
        &self,
        input: Map<String, Value>,
        sent: &[String],
        cx: &Context,
    ) -> Result<Map<String, Value>> {
        let mut input = input;
        let mut errors = Map::new();
        for (name, expand) in &self.shorthands {
            if let Some(v) = input.remove(*name) {
                if v.is_null() {
                    continue;
                }
                match expand(&v) {
                    Ok(fields) => {
                        for (k, v) in fields {
                            input.insert(k, v);
                        }
                    }
                    Err(e) => {
                        errors.insert((*name).to_string(), Value::String(e));
                    }
                }
            }
        }
        let mut out = process_record(&self.fields, &self.checks, input, cx, &mut errors);
        if errors.is_empty() {
            fill_auto(self, &mut out, cx);
            if let Some(t) = self.transform {
                if let Err(e) = t(&mut out, sent) {
                    return Err(Error::new(crate::ErrorCode::TransformationError, e, None));
                }
            }
            Ok(out)
        } else {
            Err(Error::schema_violation(errors))
        }
    }

    /// Validates a single field value (used for endpoint keys and query filters).
    pub fn validate_field_value(&self, field: &str, v: &Value) -> Result<()> {
        let Some(f) = self.field(field) else {
            return Err(Error::field(field, "unknown field"));
        };
        let cx = Context::new(Operation::Insert);
        let mut val = v.clone();
        match validate_value(f, &mut val, &cx) {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut m = Map::new();
                m.insert(field.to_string(), e);
                Err(Error::schema_violation(m))
            }
        }
    }
}

fn fill_auto(schema: &EntitySchema, out: &mut Map<String, Value>, cx: &Context) {
    for f in &schema.fields {
        if !f.auto {
            continue;
        }
        let missing = out.get(f.name).is_none_or(Value::is_null);
        if f.checks.iter().any(|c| matches!(c, Check::Uuid)) {
            if missing {
                out.insert(
                    f.name.into(),
                    Value::String(uuid::Uuid::new_v4().to_string()),
                );
            }
        } else if matches!(f.ty, Type::String) {
            // Generated credentials (key-auth keys, JWT and HMAC secrets).
            if missing {
                out.insert(
                    f.name.into(),
                    Value::String(crate::entities::random_string()),
                );
            }
        } else if f.timestamp {
            let v = if f.timestamp_ms {
                let mut t = Value::from((cx.now * 1000.0).round() / 1000.0);
                super::json::cjson_number(&mut t);
                t
            } else {
                Value::from(cx.now.floor() as i64)
            };
            // updated_at moves on every update; an insert keeps a given one (imports).
            if missing || (f.name == "updated_at" && cx.op != Operation::Insert) {
                out.insert(f.name.into(), v);
            }
        }
    }
}

/// Validates a record's fields; returns the defaulted record and fills `errors`.
fn process_record(
    fields: &[Field],
    checks: &[EntityCheck],
    mut input: Map<String, Value>,
    cx: &Context,
    errors: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let v = input.remove(f.name);
        let mut v = match v {
            Some(v) => v,
            None => match &f.default {
                Some(d) => d.clone(),
                None => {
                    // Nested records without a default are built from their own defaults,
                    // as Kong does for `config`.
                    if let Type::Record(sub, subchecks) = &f.ty {
                        let mut sub_err = Map::new();
                        let rec = process_record(sub, subchecks, Map::new(), cx, &mut sub_err);
                        if !sub_err.is_empty() {
                            errors.insert(f.name.into(), Value::Object(sub_err));
                        }
                        out.insert(f.name.into(), Value::Object(rec));
                        continue;
                    }
                    Value::Null
                }
            },
        };
        if cx.coerce {
            coerce(f, &mut v);
        }
        if v.is_null() {
            if f.required && !f.auto {
                errors.insert(f.name.into(), Value::from("required field missing"));
            }
            out.insert(f.name.into(), Value::Null);
            continue;
        }
        if let Err(e) = validate_value(f, &mut v, cx) {
            errors.insert(f.name.into(), e);
        }
        out.insert(f.name.into(), v);
    }
    for (k, _) in input {
        errors.insert(k, Value::from("unknown field"));
    }
    for c in checks {
        run_entity_check(c, &out, errors);
    }
    out
}

fn type_error(ty: &Type) -> &'static str {
    match ty {
        Type::String => "expected a string",
        Type::Integer => "expected an integer",
        Type::Number => "expected a number",
        Type::Boolean => "expected a boolean",
        Type::Array(_) => "expected an array",
        Type::Set(_) => "expected a set",
        Type::Map { .. } => "expected a map",
        Type::Record(..) | Type::Foreign(_) => "expected a record",
        Type::Json => "expected a value",
    }
}

/// Validates (and normalises: sets dedupe, records default) one non-null value.
/// The error is a string or a nested object/array for records and collections.
pub fn validate_field_value(
    f: &Field,
    v: &mut Value,
    cx: &Context,
) -> std::result::Result<(), Value> {
    validate_value(f, v, cx)
}

fn validate_value(f: &Field, v: &mut Value, cx: &Context) -> std::result::Result<(), Value> {
    match &f.ty {
        Type::String => {
            let Value::String(s) = v else {
                return Err(type_error(&f.ty).into());
            };
            check_string(f, s).map_err(Value::String)
        }
        Type::Integer => {
            let ok = match v {
                Value::Number(n) => {
                    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
                }
                _ => false,
            };
            if !ok {
                return Err(type_error(&f.ty).into());
            }
            if let Some(x) = v.as_f64() {
                if !v.is_i64() && !v.is_u64() {
                    *v = Value::from(x as i64);
                }
            }
            check_number(f, v).map_err(Value::String)
        }
        Type::Number => {
            if !v.is_number() {
                return Err(type_error(&f.ty).into());
            }
            super::json::cjson_number(v);
            check_number(f, v).map_err(Value::String)
        }
        Type::Boolean => {
            if !v.is_boolean() {
                return Err(type_error(&f.ty).into());
            }
            check_generic(f, v).map_err(Value::String)
        }
        Type::Array(el) | Type::Set(el) => {
            let is_set = matches!(f.ty, Type::Set(_));
            // Kong accepts `{}` (an empty Lua table) where an array is expected.
            if matches!(v, Value::Object(m) if m.is_empty()) {
                *v = Value::Array(Vec::new());
            }
            let Value::Array(items) = v else {
                return Err(type_error(&f.ty).into());
            };
            let mut errs = Vec::new();
            let mut any = false;
            for item in items.iter_mut() {
                if cx.coerce {
                    coerce(el, item);
                }
                if item.is_null() {
                    errs.push(Value::from("required field missing"));
                    any = true;
                    continue;
                }
                match validate_value(el, item, cx) {
                    Ok(()) => errs.push(Value::Null),
                    Err(e) => {
                        errs.push(e);
                        any = true;
                    }
                }
            }
            if any {
                return Err(Value::Array(errs));
            }
            if is_set {
                let mut seen: Vec<Value> = Vec::with_capacity(items.len());
                items.retain(|x| {
                    if seen.contains(x) {
                        false
                    } else {
                        seen.push(x.clone());
                        true
                    }
                });
            }
            check_collection(f, items).map_err(Value::String)
        }
        Type::Map { keys, values } => {
            let Value::Object(m) = v else {
                return Err(type_error(&f.ty).into());
            };
            let mut errs = Map::new();
            for (k, val) in m.iter_mut() {
                let mut kv = Value::String(k.clone());
                if let Err(e) = validate_value(keys, &mut kv, cx) {
                    errs.insert(k.clone(), e);
                    continue;
                }
                if cx.coerce {
                    coerce(values, val);
                }
                if val.is_null() {
                    continue;
                }
                if let Err(e) = validate_value(values, val, cx) {
                    errs.insert(k.clone(), e);
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(Value::Object(errs))
            }
        }
        Type::Record(sub, checks) => {
            let Value::Object(m) = std::mem::take(v) else {
                return Err(type_error(&f.ty).into());
            };
            let mut errs = Map::new();
            let rec = process_record(sub, checks, m, cx, &mut errs);
            *v = Value::Object(rec);
            if errs.is_empty() {
                check_generic(f, v).map_err(Value::String)
            } else {
                Err(Value::Object(errs))
            }
        }
        Type::Foreign(_) => {
            let Value::Object(m) = v else {
                return Err(type_error(&f.ty).into());
            };
            // A reference with a valid primary key ignores its other fields, as Kong's
            // `validate_primary_key(value, true)` does: decK sends `{"id", "name"}`.
            if m.get("id").and_then(Value::as_str).is_some_and(is_uuid) {
                m.retain(|k, _| k == "id");
            }
            let mut errs = Map::new();
            for k in m.keys() {
                if k != "id" {
                    errs.insert(k.clone(), Value::from("unknown field"));
                }
            }
            match m.get("id") {
                Some(Value::String(s)) if is_uuid(s) => {}
                Some(Value::String(_)) => {
                    errs.insert("id".into(), Value::from("expected a valid UUID"));
                }
                Some(Value::Null) | None => {
                    errs.insert("id".into(), Value::from("required field missing"));
                }
                Some(_) => {
                    errs.insert("id".into(), Value::from("expected a string"));
                }
            }
            if errs.is_empty() {
                check_generic(f, v).map_err(Value::String)
            } else {
                Err(Value::Object(errs))
            }
        }
        Type::Json => Ok(()),
    }
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

fn check_string(f: &Field, s: &str) -> std::result::Result<(), String> {
    // Kong skips a referenceable field's checks for a reference: the value is only known
    // when the snapshot resolves it. The reference itself must be one this build resolves.
    if f.referenceable && crate::vault::is_reference(s) {
        return crate::vault::validate(s);
    }
    for c in &f.checks {
        match c {
            Check::LenMin(n) if s.chars().count() < *n => {
                return Err(format!("length must be at least {n}"))
            }
            Check::LenMax(n) if s.chars().count() > *n => {
                return Err(format!("length must be at most {n}"))
            }
            Check::StartsWith(p) if !s.starts_with(p) => {
                return Err(format!("should start with: {p}"))
            }
            Check::MatchNone(re, msg) if re.is_match(s) => return Err((*msg).to_string()),
            Check::MatchAny(res, msg) if !res.iter().any(|r| r.is_match(s)) => {
                return Err((*msg).to_string())
            }
            Check::Match(re) if !re.is_match(s) => return Err(format!("invalid value: {s}")),
            Check::Uuid if !is_uuid(s) => return Err("expected a valid UUID".into()),
            Check::Custom(func) => func(s)?,
            _ => {}
        }
    }
    // A zero-length string is never a useful value; Kong rejects it with this message.
    if s.is_empty() && !f.checks.iter().any(|c| matches!(c, Check::LenMin(_))) {
        return Err("length must be at least 1".into());
    }
    check_generic(f, &Value::from(s))
}

fn check_number(f: &Field, v: &Value) -> std::result::Result<(), String> {
    let x = v.as_f64().unwrap_or(0.0);
    for c in &f.checks {
        match c {
            Check::Between(lo, hi) if x < *lo as f64 || x > *hi as f64 => {
                return Err(format!("value should be between {lo} and {hi}"))
            }
            Check::Gt(g) if x <= *g => return Err(format!("value must be greater than {g}")),
            _ => {}
        }
    }
    check_generic(f, v)
}

fn check_collection(f: &Field, items: &[Value]) -> std::result::Result<(), String> {
    for c in &f.checks {
        match c {
            Check::LenMin(n) if items.len() < *n => {
                return Err(format!("length must be at least {n}"))
            }
            Check::LenMax(n) if items.len() > *n => {
                return Err(format!("length must be at most {n}"))
            }
            Check::MutuallyExclusiveSubsets(subsets) => {
                let mut member_of: Vec<&Vec<&str>> = Vec::new();
                for it in items {
                    let Some(s) = it.as_str() else { continue };
                    if let Some(set) = subsets.iter().find(|set| set.contains(&s)) {
                        if !member_of.iter().any(|m| std::ptr::eq(*m, set)) {
                            member_of.push(set);
                        }
                    }
                }
                if member_of.len() > 1 {
                    let parts: Vec<String> = member_of
                        .iter()
                        .map(|set| format!("({})", quoted_list(set)))
                        .collect();
                    return Err(format!(
                        "these sets are mutually exclusive: {}",
                        parts.join(", ")
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_generic(f: &Field, v: &Value) -> std::result::Result<(), String> {
    for c in &f.checks {
        match c {
            Check::OneOf(vals) if !vals.contains(v) => {
                let list: Vec<String> = vals
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        o => o.to_string(),
                    })
                    .collect();
                return Err(format!("expected one of: {}", list.join(", ")));
            }
            Check::EqNull(msg) => return Err((*msg).to_string()),
            Check::Ne(x, msg) if x == v => {
                return Err(msg
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("value must not be {x}")))
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kong treats null, `[]` and `{}` (and an empty string) as empty for entity checks.
fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn pred(p: &Pred, v: Option<&Value>) -> bool {
    let v = v.unwrap_or(&Value::Null);
    match p {
        Pred::IsNull => v.is_null(),
        Pred::NotNull => !v.is_null(),
        Pred::OneOf(list) => v.as_str().is_some_and(|s| list.contains(&s)),
        Pred::NotOneOf(list) => v.as_str().is_none_or(|s| !list.contains(&s)),
        Pred::Contains(x) => v
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(x))),
        Pred::ElementsOneOf(list) => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|e| e.as_str().is_some_and(|s| list.contains(&s)))
        }),
        Pred::ElementsNotOneOf(list) => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|e| e.as_str().is_none_or(|s| !list.contains(&s)))
        }),
        Pred::LenEq(n) => match v {
            Value::Array(a) => a.len() == *n,
            Value::Null => *n == 0,
            _ => false,
        },
        Pred::Eq(x) => v == x,
    }
}

fn pred_error(p: &Pred) -> String {
    match p {
        Pred::IsNull => "value must be null".into(),
        Pred::NotNull => "required field missing".into(),
        Pred::OneOf(l) => format!("expected one of: {}", l.join(", ")),
        Pred::NotOneOf(l) => format!("must not be one of: {}", l.join(", ")),
        Pred::Contains(x) => format!("expected to contain: {x}"),
        Pred::ElementsOneOf(l) => format!("expected one of: {}", l.join(", ")),
        Pred::ElementsNotOneOf(l) => format!("must not be one of: {}", l.join(", ")),
        Pred::LenEq(n) => format!("length must be {n}"),
        Pred::Eq(x) => format!("value must be {x}"),
    }
}

fn push_entity_error(errors: &mut Map<String, Value>, msg: String) {
    let e = errors
        .entry("@entity")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = e {
        a.push(Value::String(msg));
    }
}

fn run_entity_check(c: &EntityCheck, rec: &Map<String, Value>, errors: &mut Map<String, Value>) {
    // A check over a field that already failed would only repeat the problem.
    let failed = |names: &[&str]| names.iter().any(|n| errors.contains_key(*n));
    match c {
        EntityCheck::AtLeastOneOf(names) => {
            if !failed(names) && names.iter().all(|n| is_empty(rec.get(*n))) {
                push_entity_error(
                    errors,
                    format!(
                        "at least one of these fields must be non-empty: {}",
                        quoted_list(names)
                    ),
                );
            }
        }
        EntityCheck::OnlyOneOf(names) => {
            let set = names.iter().filter(|n| !is_empty(rec.get(**n))).count();
            if !failed(names) && set != 1 {
                push_entity_error(
                    errors,
                    format!(
                        "exactly one of these fields must be non-empty: {}",
                        quoted_list(names)
                    ),
                );
            }
        }
        EntityCheck::MutuallyRequired(names) => {
            let set = names.iter().filter(|n| !is_empty(rec.get(**n))).count();
            if !failed(names) && set != 0 && set != names.len() {
                push_entity_error(
                    errors,
                    format!(
                        "all or none of these fields must be set: {}",
                        quoted_list(names)
                    ),
                );
            }
        }
        EntityCheck::MutuallyExclusive(names) => {
            let set = names.iter().filter(|n| !is_empty(rec.get(**n))).count();
            if !failed(names) && set > 1 {
                push_entity_error(
                    errors,
                    format!(
                        "only one or none of these fields must be set: {}",
                        quoted_list(names)
                    ),
                );
            }
        }
        EntityCheck::Conditional {
            if_field,
            if_match,
            then_field,
            then_match,
            then_err,
        } => {
            if failed(&[if_field, then_field]) {
                return;
            }
            if pred(if_match, rec.get(*if_field)) && !pred(then_match, rec.get(*then_field)) {
                let msg = then_err
                    .map(str::to_string)
                    .unwrap_or_else(|| pred_error(then_match));
                errors.insert((*then_field).to_string(), Value::String(msg));
            }
        }
        EntityCheck::ConditionalAtLeastOneOf {
            if_field,
            if_match,
            fields,
            err,
        } => {
            if failed(fields) || failed(&[if_field]) {
                return;
            }
            if pred(if_match, rec.get(*if_field)) && fields.iter().all(|n| is_empty(rec.get(*n))) {
                push_entity_error(errors, err.replace("%s", &quoted_list(fields)));
            }
        }
        EntityCheck::Custom(func) => {
            if let Err((field, msg)) = func(rec) {
                match field {
                    Some(f) => {
                        errors.entry(f).or_insert(Value::String(msg));
                    }
                    None => push_entity_error(errors, msg),
                }
            }
        }
    }
}

/// Form and query-string values are strings; turn them into the field's type where the
/// text is unambiguous (Kong's `arguments.infer`).
pub fn coerce(f: &Field, v: &mut Value) {
    let Value::String(s) = v else {
        if let (Type::Array(el) | Type::Set(el), Value::Array(items)) = (&f.ty, &mut *v) {
            for it in items {
                coerce(el, it);
            }
        }
        return;
    };
    match &f.ty {
        Type::Integer | Type::Number => {
            if let Ok(i) = s.trim().parse::<i64>() {
                *v = Value::from(i);
            } else if let Ok(x) = s.trim().parse::<f64>() {
                if x.is_finite() {
                    *v = Value::from(x);
                }
            }
        }
        Type::Boolean => match s.as_str() {
            "true" => *v = Value::Bool(true),
            "false" => *v = Value::Bool(false),
            _ => {}
        },
        Type::Array(el) | Type::Set(el) => {
            // `hosts=example.com` is a one-element array; an empty value an empty one.
            if s.is_empty() {
                *v = Value::Array(Vec::new());
            } else {
                let mut item = Value::String(std::mem::take(s));
                coerce(el, &mut item);
                *v = Value::Array(vec![item]);
            }
        }
        Type::Foreign(_) => {
            // `service=<uuid>` is accepted as shorthand for `service.id=<uuid>`.
            let id = std::mem::take(s);
            let mut m = Map::new();
            m.insert("id".into(), Value::String(id));
            *v = Value::Object(m);
        }
        _ => {}
    }
}
