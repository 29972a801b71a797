//! What the log phase sees ([`LogCx`]) and Kong's basic log serializer
//! (`kong.log.serialize()`, kong/pdk/log.lua), which logging plugins send as is.

use crate::chain::Row;
use http::HeaderMap;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// The request as it came in.
pub struct LogRequest<'a> {
    pub method: &'a str,
    /// nginx `$request_uri`: path and query as the client sent them.
    pub uri: &'a str,
    /// `http` / `https`.
    pub scheme: &'a str,
    /// nginx `$host`: lower-cased, without the port.
    pub host: &'a str,
    pub port: u16,
    /// The request headers (as plugins left them).
    pub headers: &'a HeaderMap,
    /// nginx `$request_length`: head and body bytes.
    pub size: u64,
    /// TLS version and cipher (OpenSSL names) on TLS connections.
    pub tls: Option<(&'a str, &'a str)>,
}

/// The response as the client got it.
pub struct LogResponse<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    /// nginx `$bytes_sent`: head and body bytes.
    pub size: u64,
}

/// Kong's `latencies`, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latencies {
    /// Time spent in Kong before the upstream request (or until Kong's own response).
    pub kong: u64,
    /// Time waiting for the upstream's response head; `None` when not proxied (Kong: -1).
    pub proxy: Option<u64>,
    /// The whole request, first byte in to last byte out.
    pub request: u64,
    /// Time reading the upstream's response body.
    pub receive: u64,
}

/// One balancer try (Kong's `ctx.balancer_data.tries[i]`).
#[derive(Clone, Debug)]
pub struct Try {
    pub ip: IpAddr,
    pub port: u16,
    /// Epoch milliseconds.
    pub balancer_start: u64,
    pub balancer_start_ns: u128,
    pub balancer_latency: u64,
    pub balancer_latency_ns: u128,
    /// `failed` with the status it failed with (502, 504) for a try that did not answer.
    pub failed: Option<u16>,
}

/// The authenticated consumer, as `kong.client.get_consumer()` returns it.
#[derive(Clone, Copy, Debug)]
pub struct LogConsumer<'a> {
    pub id: &'a str,
    pub username: Option<&'a str>,
    pub custom_id: Option<&'a str>,
}

/// What the log phase sees: everything `kong.log.serialize()` reports.
pub struct LogCx<'a> {
    pub request_id: &'a str,
    pub status: u16,
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    pub request: LogRequest<'a>,
    pub response: LogResponse<'a>,
    /// nginx `$upstream_uri` (empty when not proxied).
    pub upstream_uri: &'a str,
    /// nginx `$upstream_status`.
    pub upstream_status: Option<u16>,
    /// The matched route's and its service's rows.
    pub route: Option<&'a Row>,
    pub service: Option<&'a Row>,
    pub consumer: Option<LogConsumer<'a>>,
    /// The credential the consumer authenticated with.
    pub credential_id: Option<&'a str>,
    pub latencies: Latencies,
    pub tries: &'a [Try],
    /// nginx `$remote_addr` (after realip).
    pub client_ip: IpAddr,
    /// Epoch milliseconds.
    pub started_at: u64,
    /// Whether the request went to the upstream (Kong's `KONG_PROXIED`).
    pub proxied: bool,
}

/// Headers as `kong.request.get_headers()` / `ngx.resp.get_headers()` give them:
/// lower-case names, repeated ones as arrays.
fn headers_json(h: &HeaderMap, redact: bool) -> Value {
    let mut m = Map::new();
    for name in h.keys() {
        let vals: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let v = if redact && (name == "authorization" || name == "proxy-authorization") {
            Value::String("REDACTED".into())
        } else if vals.len() == 1 {
            vals.into_iter().next().unwrap_or_default()
        } else {
            Value::Array(vals)
        };
        m.insert(name.as_str().to_owned(), v);
    }
    Value::Object(m)
}

/// `kong.request.get_query()`: decoded arguments; a bare name is `true`, a repeated one
/// an array.
fn query_json(uri: &str) -> Value {
    let mut m = Map::new();
    let Some((_, q)) = uri.split_once('?') else {
        return Value::Object(m);
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        let dec = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let key = dec(k);
        if key.is_empty() {
            continue;
        }
        let val = v.map_or(Value::Bool(true), |v| Value::String(dec(v)));
        match m.get_mut(&key) {
            Some(Value::Array(a)) => a.push(val),
            Some(old) => *old = Value::Array(vec![old.take(), val]),
            None => {
                m.insert(key, val);
            }
        }
    }
    Value::Object(m)
}

/// An entity row without its null fields, as Kong's DAO hands rows to the request
/// (nulls are dropped when rows are read without `nulls = true`).
fn row_json(row: &Row) -> Value {
    Value::Object(
        row.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

impl LogCx<'_> {
    /// Kong 3.9's `kong.log.serialize()` for the http subsystem. Fields Kong leaves nil
    /// are absent. Kong's `workspace`/`workspace_name` are not reported: there are no
    /// workspaces here.
    pub fn serialize(&self) -> Value {
        let r = &self.request;
        let mut request = json!({
            "id": self.request_id,
            "uri": r.uri,
            "url": format!("{}://{}:{}{}", r.scheme, r.host, r.port, r.uri),
            "querystring": query_json(r.uri),
            "method": r.method,
            "headers": headers_json(r.headers, true),
            "size": r.size,
        });
        if let Some((version, cipher)) = r.tls {
            // `$ssl_client_verify` is NONE: no client certificate is requested.
            request["tls"] = json!({"version": version, "cipher": cipher, "client_verify": "NONE"});
        }
        let mut root = json!({
            "request": request,
            "upstream_uri": self.upstream_uri,
            "upstream_status": self.upstream_status.map_or(String::new(), |s| s.to_string()),
            "response": {
                "status": self.response.status,
                "headers": headers_json(self.response.headers, false),
                "size": self.response.size,
            },
            "latencies": {
                "kong": self.latencies.kong,
                "proxy": self.latencies.proxy.map_or(-1, |p| p as i64),
                "request": self.latencies.request,
                "receive": self.latencies.receive,
            },
            "client_ip": self.client_ip.to_string(),
            "started_at": self.started_at,
            "source": if self.proxied { "upstream" } else { "kong" },
        });
        let m = root.as_object_mut().expect("an object");
        if self.proxied {
            let tries: Vec<Value> = self
                .tries
                .iter()
                .map(|t| {
                    let mut v = json!({
                        "ip": t.ip.to_string(),
                        "port": t.port,
                        "balancer_start": t.balancer_start,
                        "balancer_start_ns": t.balancer_start_ns as u64,
                        "balancer_latency": t.balancer_latency,
                        "balancer_latency_ns": t.balancer_latency_ns as u64,
                    });
                    if let Some(code) = t.failed {
                        v["state"] = json!("failed");
                        v["code"] = json!(code);
                    }
                    v
                })
                .collect();
            m.insert("tries".into(), Value::Array(tries));
        }
        if let Some(id) = self.credential_id {
            let consumer_id = self.consumer.map(|c| c.id);
            m.insert(
                "authenticated_entity".into(),
                json!({"id": id, "consumer_id": consumer_id}),
            );
        }
        if let Some(route) = self.route {
            m.insert("route".into(), row_json(route));
        }
        if let Some(service) = self.service {
            m.insert("service".into(), row_json(service));
        }
        if let Some(c) = self.consumer {
            let mut v = Map::new();
            v.insert("id".into(), json!(c.id));
            if let Some(u) = c.username {
                v.insert("username".into(), json!(u));
            }
            if let Some(ci) = c.custom_id {
                v.insert("custom_id".into(), json!(ci));
            }
            m.insert("consumer".into(), Value::Object(v));
        }
        root
    }
}

#[cfg(test)]
mod tests;
