//! ip-restriction (`kong/plugins/ip-restriction/{schema,handler}.lua`): allow or deny by
//! the client address (after `trusted_ips`/`real_ip_header`) against IPv4/IPv6 CIDRs.

use crate::api::{Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::IpAddr;
use tollgate_model::schema::typedefs::{ip_or_cidr, parse_cidr};
use tollgate_model::schema::{EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "ip-restriction";
pub const PRIORITY: i32 = 990;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

/// Kong's default message: `IP address not allowed: <remote_addr>`.
pub fn default_message(ip: IpAddr) -> String {
    format!("IP address not allowed: {ip}")
}

fn non_empty(rec: &Map<String, Value>, name: &str) -> bool {
    match rec.get("config").and_then(|c| c.get(name)) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

fn schema() -> PluginDef {
    let list = |name, d| {
        Field::new(
            name,
            Type::Array(Box::new(ip_or_cidr("element").required())),
        )
        .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            list("allow", "List of IPs or CIDR ranges to allow. One of `config.allow` or `config.deny` must be specified."),
            list("deny", "List of IPs or CIDR ranges to deny. One of `config.allow` or `config.deny` must be specified."),
            Field::new("status", Type::Number)
                .describe("The HTTP status of the requests that will be rejected by the plugin."),
            Field::new("message", Type::String)
                .describe("The message to send as a response body to rejected requests."),
        ],
        config_checks: Vec::new(),
        // Kong's entity_checks `at_least_one_of = { "config.allow", "config.deny" }`.
        checks: vec![EntityCheck::Custom(|rec| {
            if non_empty(rec, "allow") || non_empty(rec, "deny") {
                Ok(())
            } else {
                Err((
                    None,
                    "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
                        .into(),
                ))
            }
        })],
        no_consumer: false,
        no_route: false,
        no_service: false,
        // Kong also allows tcp/tls/grpc(s); the HTTP ones are what this proxy serves.
        protocols: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct IpRestrictionConfig {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub status: Option<f64>,
    pub message: Option<String>,
}

/// ip-restriction compiled: the lists parsed into networks once.
pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: u16,
    message: Option<String>,
}

fn nets(list: Option<Vec<String>>) -> Result<Vec<IpNet>, String> {
    list.unwrap_or_default()
        .iter()
        .map(|s| {
            let (ip, len) =
                parse_cidr(s).ok_or_else(|| format!("invalid ip or cidr range: '{s}'"))?;
            IpNet::new(ip, len)
                .map(|n| n.trunc())
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: IpRestrictionConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let status = match c.status {
        // Kong hands any number to kong.response.error; only valid HTTP statuses can be sent.
        Some(s) if (100.0..=999.0).contains(&s) => s as u16,
        Some(s) => return Err(format!("invalid status: {s}")),
        None => 403,
    };
    Ok(Box::new(IpRestriction {
        allow: nets(c.allow)?,
        deny: nets(c.deny)?,
        status,
        message: c.message,
    }))
}

fn matches(list: &[IpNet], ip: IpAddr) -> bool {
    list.iter().any(|n| n.contains(&ip))
}

impl IpRestriction {
    fn exit(&self, ip: IpAddr) -> Flow {
        let msg = match &self.message {
            Some(m) => m.clone(),
            None => default_message(ip),
        };
        Flow::Exit(Exit::error(self.status, msg))
    }
}

impl Plugin for IpRestriction {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = cx.client_ip.to_canonical();
        if !self.deny.is_empty() && matches(&self.deny, ip) {
            return Ok(self.exit(ip));
        }
        if !self.allow.is_empty() && !matches(&self.allow, ip) {
            return Ok(self.exit(ip));
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts};
    use serde_json::json;
    use tollgate_model::schema::{Context, Operation};

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn from(p: &dyn Plugin, ip: &str) -> Flow {
        let ix = fixture();
        let mut pr = parts("GET", "/", &[]);
        let mut cx = RequestCx::new(&mut pr, ip.parse().unwrap(), &ix);
        p.access(&mut cx).unwrap()
    }

    #[test]
    fn allow_list_v4_and_v6() {
        let p = plugin(json!({"allow": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]}));
        assert!(from(&*p, "10.1.2.3").is_continue());
        assert!(from(&*p, "192.168.1.7").is_continue());
        assert!(from(&*p, "::ffff:10.9.9.9").is_continue(), "v4-mapped");
        assert!(from(&*p, "2001:db8:1::5").is_continue());
        let e = from(&*p, "192.168.1.8").unwrap_exit();
        assert_eq!(
            (e.status, e.message()),
            (403, "IP address not allowed: 192.168.1.8")
        );
        let e = from(&*p, "2001:db9::1").unwrap_exit();
        assert_eq!(e.message(), "IP address not allowed: 2001:db9::1");
    }

    #[test]
    fn deny_wins_and_custom_status_message() {
        let p = plugin(json!({
            "allow": ["10.0.0.0/8"], "deny": ["10.0.0.5/32"],
            "status": 401, "message": "nope"
        }));
        assert!(from(&*p, "10.0.0.4").is_continue());
        let e = from(&*p, "10.0.0.5").unwrap_exit();
        assert_eq!((e.status, e.message()), (401, "nope"));
        let e = from(&*p, "11.0.0.1").unwrap_exit();
        assert_eq!(e.status, 401);
        // Host bits in a CIDR are ignored (10.1.2.3/8 is 10.0.0.0/8).
        let p = plugin(json!({"deny": ["10.1.2.3/8", "::1"]}));
        assert!(!from(&*p, "10.200.0.1").is_continue());
        assert!(!from(&*p, "::1").is_continue());
        assert!(from(&*p, "127.0.0.1").is_continue());
    }

    #[test]
    fn schema_errors() {
        let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
        for (cfg, msg) in [
            (json!({}), "at least one of these fields must be non-empty"),
            (
                json!({"allow": []}),
                "at least one of these fields must be non-empty",
            ),
            (
                json!({"allow": ["10.0.0.0/33"]}),
                "invalid ip or cidr range: '10.0.0.0/33'",
            ),
            (json!({"deny": ["nope"]}), "invalid ip or cidr range"),
        ] {
            let mut row = Map::new();
            row.insert("name".into(), json!(NAME));
            row.insert("config".into(), cfg.clone());
            let err = cat
                .validate(&mut row, &Context::new(Operation::Insert))
                .expect_err(&cfg.to_string());
            assert!(format!("{err:?}").contains(msg), "{cfg}: {err:?}");
        }
    }
}
