//! correlation-id (`kong/plugins/correlation-id/{schema,handler}.lua`): gives every
//! request an id in a header (kept when the client sent one), for the upstream and,
//! with `echo_downstream`, for the client.

use crate::api::{
    Connection, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx, ResponseCx,
};
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "correlation-id";
pub const PRIORITY: i32 = 100001;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        access: true,
        header_filter: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("header_name", Type::String)
                .default(json!("Kong-Request-ID"))
                .describe("The HTTP header name to use for the correlation ID."),
            Field::new("generator", Type::String)
                .required()
                .default(json!("uuid#counter"))
                .one_of(&["uuid", "uuid#counter", "tracker"])
                .describe("The generator to use for the correlation ID. Accepted values are `uuid`, `uuid#counter`, and `tracker`. See [Generators](#generators)."),
            Field::new("echo_downstream", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("Whether to echo the header back to downstream (the client)."),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize)]
pub struct CorrelationIdConfig {
    pub header_name: Option<String>,
    pub generator: String,
    pub echo_downstream: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    Uuid,
    UuidCounter,
    /// `server_addr-server_port-pid-connection-connection_requests-now`.
    Tracker,
}

/// correlation-id compiled.
pub struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    echo_downstream: bool,
}

fn compile(config: &serde_json::Value) -> Result<Box<dyn Plugin>, String> {
    let c: CorrelationIdConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    // Kong fails such requests at run time (`get_header(nil)`, an invalid header name):
    // an instance that does not compile fails its requests the same way.
    let name = c.header_name.ok_or("header_name is null")?;
    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("invalid header name '{name}'"))?;
    let generator = match c.generator.as_str() {
        "uuid" => Generator::Uuid,
        "uuid#counter" => Generator::UuidCounter,
        "tracker" => Generator::Tracker,
        other => return Err(format!("unsupported generator '{other}'")),
    };
    Ok(Box::new(CorrelationId {
        header,
        generator,
        echo_downstream: c.echo_downstream,
    }))
}

/// Kong's per-worker `worker_uuid` and `worker_counter` (one worker here: the process).
static WORKER_UUID: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());
static WORKER_COUNTER: AtomicU64 = AtomicU64::new(0);

impl CorrelationId {
    fn generate(&self, conn: Option<Connection>) -> Result<HeaderValue, PluginError> {
        let v = match self.generator {
            Generator::Uuid => uuid::Uuid::new_v4().to_string(),
            Generator::UuidCounter => {
                let n = WORKER_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}#{n}", &*WORKER_UUID)
            }
            Generator::Tracker => {
                let c = conn.ok_or_else(|| PluginError::new("tracker: no client connection"))?;
                tracker(c, std::process::id(), std::time::SystemTime::now())
            }
        };
        HeaderValue::from_str(&v).map_err(|_| PluginError::new(format!("invalid id '{v}'")))
    }

    /// The request's id: its first header value, unless absent or empty.
    fn present<'h>(&self, h: &'h http::HeaderMap) -> Option<&'h HeaderValue> {
        h.get(&self.header).filter(|v| !v.is_empty())
    }
}

/// Kong's tracker: `"%s-%s-%d-%s-%s-%0.3f"` of nginx's `$server_addr`, `$server_port`,
/// the worker pid, `$connection`, `$connection_requests` and `ngx.now()`.
fn tracker(c: Connection, pid: u32, now: std::time::SystemTime) -> String {
    let t = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    format!(
        "{}-{}-{pid}-{}-{}-{t:.3}",
        c.local.ip().to_canonical(),
        c.local.port(),
        c.serial,
        c.requests
    )
}

impl Plugin for CorrelationId {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        if self.present(&cx.req.headers).is_none() {
            // `kong.service.request.set_header`: the request headers later phases read
            // carry it too.
            let v = self.generate(cx.connection())?;
            cx.req.headers.insert(self.header.clone(), v);
        }
        Ok(Flow::Continue)
    }

    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        if !self.echo_downstream {
            return Ok(());
        }
        let v = match self.present(cx.request_headers) {
            Some(v) => v.clone(),
            // Access did not run (a plugin before it answered): a fresh id, as Kong.
            None => self.generate(cx.connection)?,
        };
        cx.resp.headers.insert(self.header.clone(), v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};

    fn plugin(config: serde_json::Value) -> Box<dyn Plugin> {
        compile(&serde_json::Value::Object(crate::testing::defaults(
            &SPEC, config,
        )))
        .unwrap()
    }

    #[test]
    fn generates_keeps_and_counts() {
        let ix = fixture();
        let p = plugin(json!({}));
        let (f, h, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        assert!(f.is_continue());
        let first = h["kong-request-id"].to_str().unwrap().to_owned();
        let (uuid, n) = first.split_once('#').unwrap();
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{first}");
        let (_, h, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        let second = h["kong-request-id"].to_str().unwrap().to_owned();
        let (uuid2, n2) = second.split_once('#').unwrap();
        assert_eq!(uuid, uuid2, "one worker uuid");
        assert!(n2.parse::<u64>().unwrap() > n.parse::<u64>().unwrap());
        // A client's value is kept; an empty one is replaced.
        let (_, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("kong-request-id", "mine")]),
            None,
        );
        assert_eq!(h["kong-request-id"], "mine");
        let (_, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("kong-request-id", "")]),
            None,
        );
        assert!(!h["kong-request-id"].is_empty());

        let p = plugin(json!({"generator": "uuid", "header_name": "X-Trace"}));
        let (_, h, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        assert!(uuid::Uuid::parse_str(h["x-trace"].to_str().unwrap()).is_ok());
    }

    #[test]
    fn tracker_is_kongs_format() {
        let c = Connection {
            local: "127.0.0.1:8000".parse().unwrap(),
            serial: 7,
            requests: 3,
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(tracker(c, 42, at), "127.0.0.1-8000-42-7-3-1700000000.123");

        let ix = fixture();
        let p = plugin(json!({"generator": "tracker"}));
        let mut req = parts("GET", "/", &[]);
        let mut cx = RequestCx::new(&mut req, [127, 0, 0, 1].into(), &ix).with_connection(Some(c));
        assert!(p.access(&mut cx).unwrap().is_continue());
        let v = req.headers["kong-request-id"].to_str().unwrap().to_owned();
        let pid = std::process::id();
        assert!(v.starts_with(&format!("127.0.0.1-8000-{pid}-7-3-")), "{v}");
        // A client's id is kept.
        let mut req = parts("GET", "/", &[("kong-request-id", "mine")]);
        let mut cx = RequestCx::new(&mut req, [127, 0, 0, 1].into(), &ix).with_connection(Some(c));
        p.access(&mut cx).unwrap();
        assert_eq!(req.headers["kong-request-id"], "mine");
    }

    #[test]
    fn schema_refuses_unknown_generators() {
        use tollgate_model::schema::{Context, Operation};
        let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
        for (cfg, msg) in [
            (
                json!({"generator": "nope"}),
                "expected one of: uuid, uuid#counter, tracker",
            ),
            (json!({"echo_downstream": "yes"}), "expected a boolean"),
        ] {
            let mut row = serde_json::Map::new();
            row.insert("name".into(), json!(NAME));
            row.insert("config".into(), cfg.clone());
            let err = cat
                .validate(&mut row, &Context::new(Operation::Insert))
                .expect_err(&cfg.to_string());
            assert!(format!("{err:?}").contains(msg), "{cfg}: {err:?}");
        }
    }
}
