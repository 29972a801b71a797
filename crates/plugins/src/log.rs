//! What the log phase sees ([`LogCx`]) and Kong's basic log serializer
//! (`kong.log.serialize()`, kong/pdk/log.lua), which logging plugins send as is.

use crate::chain::Row;
use http::HeaderMap;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
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
/// lower-case names, repeated ones as arrays; `redact` hides the credentials.
struct Headers<'a>(&'a HeaderMap, bool);

/// A header value as text (invalid UTF-8 replaced).
struct Lossy<'a>(&'a [u8]);

impl Serialize for Lossy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(self.0))
    }
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = self.0;
        let mut m = s.serialize_map(Some(h.keys_len()))?;
        for name in h.keys() {
            if self.1 && (name == "authorization" || name == "proxy-authorization") {
                m.serialize_entry(name.as_str(), "REDACTED")?;
                continue;
            }
            let all = h.get_all(name);
            let mut it = all.iter();
            match (it.next(), it.next()) {
                (Some(v), None) => m.serialize_entry(name.as_str(), &Lossy(v.as_bytes()))?,
                _ => {
                    let vals: Vec<Lossy<'_>> = all.iter().map(|v| Lossy(v.as_bytes())).collect();
                    m.serialize_entry(name.as_str(), &vals)?
                }
            }
        }
        m.end()
    }
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
struct NonNull<'a>(&'a Row);

impl Serialize for NonNull<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(_, v)| !v.is_null()) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Anything `Display` as a JSON string, written without an intermediate `String`.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A map of a few fixed entries (`json!`'s shape without building a `Value`).
macro_rules! object {
    ($s:expr, { $($k:literal : $v:expr),* $(,)? }) => {{
        let mut m = $s.serialize_map(None)?;
        $( m.serialize_entry($k, &$v)?; )*
        m.end()
    }};
}

struct RequestJson<'a>(&'a LogCx<'a>);

impl Serialize for RequestJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let cx = self.0;
        let r = &cx.request;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", cx.request_id)?;
        m.serialize_entry("uri", r.uri)?;
        m.serialize_entry(
            "url",
            &Text(format_args!(
                "{}://{}:{}{}",
                r.scheme, r.host, r.port, r.uri
            )),
        )?;
        m.serialize_entry("querystring", &query_json(r.uri))?;
        m.serialize_entry("method", r.method)?;
        m.serialize_entry("headers", &Headers(r.headers, true))?;
        m.serialize_entry("size", &r.size)?;
        if let Some((version, cipher)) = r.tls {
            // `$ssl_client_verify` is NONE: no client certificate is requested.
            m.serialize_entry("tls", &Tls(version, cipher))?;
        }
        m.end()
    }
}

struct Tls<'a>(&'a str, &'a str);

impl Serialize for Tls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        object!(s, {"version": self.0, "cipher": self.1, "client_verify": "NONE"})
    }
}

struct ResponseJson<'a>(&'a LogResponse<'a>);

impl Serialize for ResponseJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        object!(s, {"status": r.status, "headers": Headers(r.headers, false), "size": r.size})
    }
}

impl Serialize for Latencies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        object!(s, {
            "kong": self.kong,
            "proxy": self.proxy.map_or(-1, |p| p as i64),
            "request": self.request,
            "receive": self.receive,
        })
    }
}

impl Serialize for Try {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ip", &Text(self.ip))?;
        m.serialize_entry("port", &self.port)?;
        m.serialize_entry("balancer_start", &self.balancer_start)?;
        m.serialize_entry("balancer_start_ns", &(self.balancer_start_ns as u64))?;
        m.serialize_entry("balancer_latency", &self.balancer_latency)?;
        m.serialize_entry("balancer_latency_ns", &(self.balancer_latency_ns as u64))?;
        if let Some(code) = self.failed {
            m.serialize_entry("state", "failed")?;
            m.serialize_entry("code", &code)?;
        }
        m.end()
    }
}

impl Serialize for LogConsumer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", self.id)?;
        if let Some(u) = self.username {
            m.serialize_entry("username", u)?;
        }
        if let Some(ci) = self.custom_id {
            m.serialize_entry("custom_id", ci)?;
        }
        m.end()
    }
}

/// Kong 3.9's `kong.log.serialize()` for the http subsystem, written straight to JSON
/// (the log plugins serialize one per request: no `Value` tree in between). Fields Kong
/// leaves nil are absent. Kong's `workspace`/`workspace_name` are not reported: there
/// are no workspaces here.
impl Serialize for LogCx<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("request", &RequestJson(self))?;
        m.serialize_entry("upstream_uri", self.upstream_uri)?;
        match self.upstream_status {
            Some(st) => m.serialize_entry("upstream_status", &Text(st))?,
            None => m.serialize_entry("upstream_status", "")?,
        }
        m.serialize_entry("response", &ResponseJson(&self.response))?;
        m.serialize_entry("latencies", &self.latencies)?;
        m.serialize_entry("client_ip", &Text(self.client_ip))?;
        m.serialize_entry("started_at", &self.started_at)?;
        m.serialize_entry("source", if self.proxied { "upstream" } else { "kong" })?;
        if self.proxied {
            m.serialize_entry("tries", self.tries)?;
        }
        if let Some(id) = self.credential_id {
            let consumer_id = self.consumer.map(|c| c.id);
            m.serialize_entry("authenticated_entity", &AuthEntity(id, consumer_id))?;
        }
        if let Some(route) = self.route {
            m.serialize_entry("route", &NonNull(route))?;
        }
        if let Some(service) = self.service {
            m.serialize_entry("service", &NonNull(service))?;
        }
        if let Some(c) = &self.consumer {
            m.serialize_entry("consumer", c)?;
        }
        m.end()
    }
}

struct AuthEntity<'a>(&'a str, Option<&'a str>);

impl Serialize for AuthEntity<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        object!(s, {"id": self.0, "consumer_id": self.1})
    }
}

impl LogCx<'_> {
    /// `kong.log.serialize()` as a JSON value (see the `Serialize` impl).
    pub fn serialize(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
