//! acl (`kong/plugins/acl/{schema,handler,groups}.lua`): allow or deny by the groups of
//! the authenticated consumer (the snapshot's `acls` index) or by the authenticated
//! groups an auth plugin set.

use crate::api::{Exit, X_AUTHENTICATED_GROUPS, X_CONSUMER_GROUPS};
use crate::api::{Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use http::header::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_model::schema::{EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "acl";
pub const PRIORITY: i32 = 950;

pub const ERR_FORBIDDEN: &str = "You cannot consume this service";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: true,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

fn non_empty(rec: &Map<String, Value>, name: &str) -> Option<bool> {
    match rec.get("config")?.get(name)? {
        Value::Null => None,
        Value::Array(a) => Some(!a.is_empty()),
        _ => Some(true),
    }
}

const FIELDS: &str = "'config.allow', 'config.deny'";

fn schema() -> PluginDef {
    let groups = |name, d| {
        Field::new(
            name,
            Type::Array(Box::new(Field::new("element", Type::String).required())),
        )
        .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            groups("allow", "Arbitrary group names that are allowed to consume the service or route. One of `config.allow` or `config.deny` must be specified."),
            groups("deny", "Arbitrary group names that are not allowed to consume the service or route. One of `config.allow` or `config.deny` must be specified."),
            Field::new("hide_groups_header", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("If enabled (`true`), prevents the `X-Consumer-Groups` header from being sent in the request to the upstream service."),
            Field::new("always_use_authenticated_groups", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("If enabled (`true`), the authenticated groups will always be used even when an authenticated consumer already exists. If the authenticated groups don't exist, it will fallback to use the groups associated with the consumer. By default the authenticated groups will only be used when there is no consumer or the consumer is anonymous."),
        ],
        config_checks: Vec::new(),
        // Kong's entity_checks `only_one_of` (skipped while a field is null) and
        // `at_least_one_of`, over the dotted config fields.
        checks: vec![
            EntityCheck::Custom(|rec| {
                match (non_empty(rec, "allow"), non_empty(rec, "deny")) {
                    (Some(a), Some(d)) if a == d => Err((
                        None,
                        format!("exactly one of these fields must be non-empty: {FIELDS}"),
                    )),
                    _ => Ok(()),
                }
            }),
            EntityCheck::Custom(|rec| {
                if non_empty(rec, "allow") != Some(true) && non_empty(rec, "deny") != Some(true) {
                    Err((
                        None,
                        format!("at least one of these fields must be non-empty: {FIELDS}"),
                    ))
                } else {
                    Ok(())
                }
            }),
        ],
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AclConfig {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub hide_groups_header: bool,
    pub always_use_authenticated_groups: bool,
}

/// acl compiled.
pub struct Acl {
    deny: bool,
    groups: Vec<Box<str>>,
    hide_groups_header: bool,
    always_use_authenticated_groups: bool,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: AclConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let deny = c.deny.as_ref().is_some_and(|d| !d.is_empty());
    let groups = if deny { c.deny } else { c.allow }.unwrap_or_default();
    Ok(Box::new(Acl {
        deny,
        groups: groups.into_iter().map(Into::into).collect(),
        hide_groups_header: c.hide_groups_header,
        always_use_authenticated_groups: c.always_use_authenticated_groups,
    }))
}

fn forbidden() -> Flow {
    Flow::Exit(Exit::error(403, ERR_FORBIDDEN))
}

fn unauthorized() -> Flow {
    Flow::Exit(Exit::error(401, "Unauthorized"))
}

impl Acl {
    fn blocked(&self, in_group: bool) -> bool {
        if self.deny {
            in_group
        } else {
            !in_group
        }
    }

    fn set_groups<'g>(
        &self,
        cx: &mut RequestCx<'_>,
        consumer: bool,
        groups: impl Iterator<Item = &'g str>,
    ) {
        if self.hide_groups_header {
            return;
        }
        let joined = groups.collect::<Vec<_>>().join(", ");
        if let Ok(v) = HeaderValue::from_str(&joined) {
            let name = if consumer {
                &X_CONSUMER_GROUPS
            } else {
                &X_AUTHENTICATED_GROUPS
            };
            cx.req.headers.insert(name.clone(), v);
        }
    }

    fn by_authenticated_groups(&self, cx: &mut RequestCx<'_>, groups: Vec<String>) -> Flow {
        let in_group = groups
            .iter()
            .any(|g| self.groups.iter().any(|x| **x == **g));
        if self.blocked(in_group) {
            return forbidden();
        }
        self.set_groups(cx, false, groups.iter().map(String::as_str));
        cx.authenticated_groups = Some(groups);
        Flow::Continue
    }
}

impl Plugin for Acl {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let credential = cx.credential();
        let consumer = cx
            .consumer()
            .or_else(|| credential.and_then(|c| cx.consumers.consumer_by_id(c.consumer_id)));
        let Some(consumer) = consumer else {
            return Ok(match cx.authenticated_groups.take() {
                Some(g) => self.by_authenticated_groups(cx, g),
                None if credential.is_some() => forbidden(),
                None => unauthorized(),
            });
        };
        if credential.is_none() || self.always_use_authenticated_groups {
            if let Some(g) = cx.authenticated_groups.take() {
                return Ok(self.by_authenticated_groups(cx, g));
            }
        }
        if consumer.groups.is_empty() {
            if !self.deny {
                return Ok(if credential.is_some() {
                    forbidden()
                } else {
                    unauthorized()
                });
            }
        } else if self.blocked(consumer.in_any_group(&self.groups)) {
            return Ok(forbidden());
        }
        // With deny and no groups Kong still sets the header, empty.
        self.set_groups(cx, true, consumer.groups.iter().map(|g| &**g));
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn with_consumer(p: &dyn Plugin, who: Option<&str>) -> (Flow, http::HeaderMap) {
        let ix = fixture();
        let mut pr = parts("GET", "/", &[]);
        let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
        if let Some(w) = who {
            let c = ix.consumer_by_id_or_username(w).unwrap();
            cx.authenticate(
                c,
                Some(crate::Credential {
                    id: "x",
                    consumer_id: &c.id,
                    identifier: "x",
                }),
            );
        }
        let f = p.access(&mut cx).unwrap();
        drop(cx);
        (f, pr.headers)
    }

    #[test]
    fn allow_and_deny() {
        let p = plugin(json!({"allow": ["admin"]}));
        let (f, h) = with_consumer(&*p, Some("alice"));
        assert!(f.is_continue());
        assert_eq!(h["x-consumer-groups"], "admin, dev");
        let (f, _) = with_consumer(&*p, Some("bob"));
        assert_eq!(f.unwrap_exit().message(), ERR_FORBIDDEN);
        let (f, _) = with_consumer(&*p, None);
        let e = f.unwrap_exit();
        assert_eq!((e.status, e.message()), (401, "Unauthorized"));
        let (f, _) = with_consumer(&*p, Some("anon"));
        assert_eq!(f.unwrap_exit().status, 403, "no groups, with a credential");

        let p = plugin(json!({"deny": ["admin"], "hide_groups_header": true}));
        let (f, _) = with_consumer(&*p, Some("alice"));
        assert_eq!(f.unwrap_exit().status, 403);
        let (f, h) = with_consumer(&*p, Some("bob"));
        assert!(f.is_continue());
        assert!(!h.contains_key("x-consumer-groups"));
        let (f, _) = with_consumer(&*p, Some("anon"));
        assert!(f.is_continue(), "deny with no groups passes");
        let _ = run_access;
    }

    #[test]
    fn authenticated_groups() {
        let ix = fixture();
        let p = plugin(json!({"allow": ["ldap-admins"]}));
        let mut pr = parts("GET", "/", &[]);
        let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
        cx.authenticated_groups = Some(vec!["ldap-admins".into()]);
        assert!(p.access(&mut cx).unwrap().is_continue());
        drop(cx);
        assert_eq!(pr.headers["x-authenticated-groups"], "ldap-admins");
    }
}
