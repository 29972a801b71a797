//! The plugin catalog: each bundled plugin's name, priority and config schema, and which of
//! them the `plugins` configuration key enabled. A `plugins` entity's `config` is validated
//! here against the named plugin's own schema (Kong's subschema keyed on `name`).

use crate::error::{Error, Result};
use crate::schema::{json as schema_json, typedefs, Context, Field, Type};
use crate::Row;
use serde_json::{json, Map, Value};

/// What the catalog knows about one plugin.
#[derive(Clone, Debug)]
pub struct PluginDef {
    pub name: &'static str,
    /// Kong's PRIORITY: higher runs first.
    pub priority: i32,
    pub version: &'static str,
    /// The `config` record.
    pub config: Vec<Field>,
    pub config_checks: Vec<crate::schema::EntityCheck>,
    /// Kong's top-level `entity_checks` over the whole plugin row (they name dotted
    /// fields such as `config.allow`). Only `EntityCheck::Custom` is evaluated here;
    /// a failure is reported under `@entity` (or the field it names).
    pub checks: Vec<crate::schema::EntityCheck>,
    /// Kong's `no_consumer`: the plugin cannot be scoped to a consumer (auth plugins).
    pub no_consumer: bool,
    pub no_route: bool,
    pub no_service: bool,
    /// Allowed protocols, when narrower than all HTTP ones.
    pub protocols: Option<Vec<&'static str>>,
}

impl PluginDef {
    fn config_field(&self) -> Field {
        Field::new(
            "config",
            Type::Record(self.config.clone(), self.config_checks.clone()),
        )
        .required()
    }

    /// `/schemas/plugins/{name}` in Kong's shape: top-level fields with a `config` record.
    pub fn schema_json(&self) -> Value {
        let mut fields = Vec::new();
        let fk = |name: &'static str, entity: &'static str, none: bool| {
            let mut f = json!({ "type": "foreign", "reference": entity, "on_delete": "cascade" });
            if none {
                f["eq"] = Value::Null;
                f["description"] = json!(format!(
                    "Custom type for representing a foreign key with a null value allowed."
                ));
            }
            json!({ name: f })
        };
        fields.push(fk("consumer", "consumers", self.no_consumer));
        fields.push(fk("service", "services", self.no_service));
        fields.push(fk("route", "routes", self.no_route));
        let mut protocols = schema_json::field_json(&typedefs::protocols_http());
        if let Some(p) = &self.protocols {
            protocols["default"] = json!(p);
            protocols["elements"]["one_of"] = json!(p);
        }
        fields.push(json!({ "protocols": protocols }));
        fields.push(json!({ "config": schema_json::field_json(&self.config_field()) }));
        json!({ "fields": fields })
    }
}

/// The set of plugins this node knows and has enabled.
#[derive(Clone, Debug, Default)]
pub struct PluginCatalog {
    defs: Vec<PluginDef>,
    enabled: Vec<&'static str>,
}

pub const NOT_ENABLED: &str =
    "plugin '%s' not enabled; add it to the 'plugins' configuration property";

impl PluginCatalog {
    /// `available`: every plugin compiled in; `enabled`: the names the `plugins` key lists
    /// (`bundled` meaning all of them). Unknown names are returned as errors.
    pub fn new(available: Vec<PluginDef>, enabled: &[String]) -> std::result::Result<Self, String> {
        let mut on: Vec<&'static str> = Vec::new();
        for name in enabled {
            match name.as_str() {
                "bundled" => on.extend(available.iter().map(|d| d.name)),
                "off" => {}
                n => match available.iter().find(|d| d.name == n) {
                    Some(d) => on.push(d.name),
                    None => return Err(format!("plugin '{n}' is not installed")),
                },
            }
        }
        on.sort_unstable();
        on.dedup();
        Ok(PluginCatalog {
            defs: available,
            enabled: on,
        })
    }

    pub fn available(&self) -> &[PluginDef] {
        &self.defs
    }
    pub fn enabled(&self) -> &[&'static str] {
        &self.enabled
    }
    pub fn get(&self, name: &str) -> Option<&PluginDef> {
        self.defs.iter().find(|d| d.name == name)
    }
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }

    /// Validates a processed `plugins` row: the plugin must be enabled, its config must
    /// match its schema (defaults filled in), and its scoping and protocols be allowed.
    pub fn validate(&self, row: &mut Row, cx: &Context) -> Result<()> {
        let name = row
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(def) = self.get(&name).filter(|_| self.is_enabled(&name)) else {
            return Err(Error::field("name", NOT_ENABLED.replace("%s", &name)));
        };
        let mut errors = Map::new();
        for (field, forbidden) in [
            ("consumer", def.no_consumer),
            ("service", def.no_service),
            ("route", def.no_route),
        ] {
            if forbidden && row.get(field).is_some_and(|v| !v.is_null()) {
                errors.insert(field.into(), json!("value must be null"));
            }
        }
        let mut config = row.remove("config").unwrap_or(Value::Null);
        if config.is_null() {
            config = Value::Object(Map::new());
        }
        if cx.coerce {
            crate::schema::coerce(&def.config_field(), &mut config);
        }
        match crate::schema::validate_field_value(&def.config_field(), &mut config, cx) {
            Ok(()) => {}
            Err(e) => {
                errors.insert("config".into(), e);
            }
        }
        row.insert("config".into(), config);
        if errors.is_empty() {
            for c in &def.checks {
                if let crate::schema::EntityCheck::Custom(f) = c {
                    if let Err((field, msg)) = f(row) {
                        match field {
                            Some(f) => {
                                errors.entry(f).or_insert(Value::String(msg));
                            }
                            None => {
                                let e = errors
                                    .entry("@entity")
                                    .or_insert_with(|| Value::Array(Vec::new()));
                                if let Value::Array(a) = e {
                                    a.push(Value::String(msg));
                                }
                            }
                        }
                    }
                }
            }
        }
        if let (Some(allowed), Some(Value::Array(ps))) = (&def.protocols, row.get("protocols")) {
            if let Some(bad) = ps
                .iter()
                .find(|p| !p.as_str().is_some_and(|s| allowed.contains(&s)))
            {
                let _ = bad;
                errors.insert(
                    "protocols".into(),
                    json!([format!("expected one of: {}", allowed.join(", "))]),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::schema_violation(errors))
        }
    }
}
