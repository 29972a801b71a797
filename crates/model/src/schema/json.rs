//! Schemas rendered the way Kong's `/schemas/{entity}` prints them: an array of
//! single-key objects `{"name": {type, required, default, …}}`, then `entity_checks`.

use super::{Check, EntityCheck, EntitySchema, Field, Pred, Type};
use serde_json::{json, Map, Value};

pub fn entity_json(s: &EntitySchema) -> Value {
    let mut m = Map::new();
    m.insert("fields".into(), fields_json(&s.fields));
    let checks: Vec<Value> = s.checks.iter().filter_map(check_json).collect();
    if !checks.is_empty() {
        m.insert("entity_checks".into(), Value::Array(checks));
    }
    if let Some(k) = s.endpoint_key {
        m.insert("endpoint_key".into(), json!(k));
    }
    if let Some(ck) = &s.cache_key {
        m.insert("cache_key".into(), json!(ck.fields));
    }
    if s.ttl {
        m.insert("ttl".into(), json!(true));
    }
    Value::Object(m)
}

pub fn fields_json(fields: &[Field]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                let mut field = field_json(f);
                // Kong makes every record of an entity required (`kong/db/schema/entity.lua`
                // `make_records_required`), and Tollgate builds an absent record from its
                // defaults just the same; decK fills nested defaults only under records
                // that say so, so without the flag its diff never comes back clean.
                if matches!(f.ty, Type::Record(..)) {
                    field["required"] = json!(true);
                }
                let mut m = Map::new();
                m.insert(f.name.into(), field);
                Value::Object(m)
            })
            .collect(),
    )
}

pub fn field_json(f: &Field) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(f.ty.kong_name()));
    if f.required {
        m.insert("required".into(), json!(true));
    }
    if let Some(d) = &f.default {
        if !d.is_null() {
            m.insert("default".into(), d.clone());
        }
    }
    if f.auto {
        m.insert("auto".into(), json!(true));
    }
    if f.unique {
        m.insert("unique".into(), json!(true));
    }
    if f.immutable {
        m.insert("immutable".into(), json!(true));
    }
    if f.referenceable {
        m.insert("referenceable".into(), json!(true));
    }
    if f.timestamp {
        m.insert("timestamp".into(), json!(true));
    }
    if !f.description.is_empty() {
        m.insert("description".into(), json!(f.description));
    }
    for c in &f.checks {
        match c {
            Check::Between(a, b) => {
                m.insert("between".into(), json!([a, b]));
            }
            Check::Gt(g) => {
                m.insert("gt".into(), json!(g));
            }
            Check::OneOf(v) => {
                m.insert("one_of".into(), Value::Array(v.clone()));
            }
            Check::LenMin(n) => {
                m.insert("len_min".into(), json!(n));
            }
            Check::LenMax(n) => {
                m.insert("len_max".into(), json!(n));
            }
            Check::StartsWith(p) => {
                m.insert("starts_with".into(), json!(p));
            }
            Check::Uuid => {
                m.insert("uuid".into(), json!(true));
            }
            Check::Match(re) => {
                m.insert("match".into(), json!(re.as_str()));
            }
            Check::MatchNone(re, err) => {
                m.insert(
                    "match_none".into(),
                    json!([{ "pattern": re.as_str(), "err": err }]),
                );
            }
            Check::MatchAny(res, err) => {
                let pats: Vec<&str> = res.iter().map(|r| r.as_str()).collect();
                m.insert("match_any".into(), json!({ "patterns": pats, "err": err }));
            }
            Check::MutuallyExclusiveSubsets(s) => {
                m.insert("mutually_exclusive_subsets".into(), json!(s));
            }
            Check::Ne(v, _) => {
                m.insert("ne".into(), v.clone());
            }
            Check::EqNull(_) => {
                m.insert("eq".into(), Value::Null);
            }
            Check::Custom(_) => {}
        }
    }
    match &f.ty {
        Type::Array(el) | Type::Set(el) => {
            m.insert("elements".into(), field_json(el));
        }
        Type::Map { keys, values } => {
            m.insert("keys".into(), field_json(keys));
            m.insert("values".into(), field_json(values));
        }
        Type::Record(fields, checks) => {
            m.insert("fields".into(), fields_json(fields));
            let checks: Vec<Value> = checks.iter().filter_map(check_json).collect();
            if !checks.is_empty() {
                m.insert("entity_checks".into(), Value::Array(checks));
            }
        }
        Type::Foreign(e) => {
            m.insert("reference".into(), json!(e));
            if f.on_delete_cascade {
                m.insert("on_delete".into(), json!("cascade"));
            }
        }
        _ => {}
    }
    let mut out = Value::Object(m);
    cjson_numbers(&mut out);
    out
}

fn pred_json(p: &Pred) -> Value {
    match p {
        Pred::IsNull => json!({ "eq": null }),
        Pred::NotNull => json!({ "required": true }),
        Pred::OneOf(v) => json!({ "one_of": v }),
        Pred::NotOneOf(v) => json!({ "not_one_of": v }),
        Pred::Contains(v) => json!({ "contains": v }),
        Pred::ElementsOneOf(v) => json!({ "elements": { "type": "string", "one_of": v } }),
        Pred::ElementsNotOneOf(v) => json!({ "elements": { "type": "string", "not_one_of": v } }),
        Pred::LenEq(n) => json!({ "len_eq": n }),
        Pred::Eq(v) => json!({ "eq": v }),
    }
}

fn check_json(c: &EntityCheck) -> Option<Value> {
    Some(match c {
        EntityCheck::AtLeastOneOf(f) => json!({ "at_least_one_of": f }),
        EntityCheck::OnlyOneOf(f) => json!({ "only_one_of": f }),
        EntityCheck::MutuallyRequired(f) => json!({ "mutually_required": f }),
        EntityCheck::MutuallyExclusive(f) => json!({ "mutually_exclusive": f }),
        EntityCheck::Conditional {
            if_field,
            if_match,
            then_field,
            then_match,
            then_err,
        } => {
            let mut m = json!({
                "if_field": if_field, "if_match": pred_json(if_match),
                "then_field": then_field, "then_match": pred_json(then_match),
            });
            if let Some(e) = then_err {
                m["then_err"] = json!(e);
            }
            json!({ "conditional": m })
        }
        EntityCheck::ConditionalAtLeastOneOf {
            if_field,
            if_match,
            fields,
            err,
        } => json!({ "conditional_at_least_one_of": {
            "if_field": if_field, "if_match": pred_json(if_match),
            "then_at_least_one_of": fields, "then_err": err,
        }}),
        EntityCheck::Custom(_) => return None,
    })
}

/// Kong prints numbers the way Lua's cjson does (`%.14g`): a whole number has no fraction,
/// `1.0` is `1`. Clients decode Kong's whole-number `number` fields into integers (go-kong's
/// upstream health-check `timeout` and `interval`), so a `1.0` breaks them.
pub fn cjson_number(v: &mut Value) {
    if let Some(x) = v.as_f64() {
        if !v.is_i64() && !v.is_u64() && x.fract() == 0.0 && x.abs() < 1e15 {
            *v = Value::from(x as i64);
        }
    }
}

/// [`cjson_number`] over every number inside a value.
pub fn cjson_numbers(v: &mut Value) {
    match v {
        Value::Number(_) => cjson_number(v),
        Value::Array(a) => a.iter_mut().for_each(cjson_numbers),
        Value::Object(m) => m.values_mut().for_each(cjson_numbers),
        _ => {}
    }
}
