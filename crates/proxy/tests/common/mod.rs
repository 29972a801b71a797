#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_model::schema::{Context, Operation};
use tollgate_proxy::{Dataset, Proxy, SharedSnapshot, Snapshot, Stats};

pub mod pki;

/// An upstream that answers with the request as JSON. `/slow?ms=N` waits N ms
/// first; `/chunks` streams three chunks 100 ms apart.
pub async fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    if req.uri().path() == "/slow" {
                        let ms: u64 = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("ms="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(1000);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let mut headers = Map::new();
                    for (k, v) in req.headers() {
                        headers.insert(
                            k.as_str().to_owned(),
                            Value::String(v.to_str().unwrap_or("").to_owned()),
                        );
                    }
                    let method = req.method().to_string();
                    let version = format!("{:?}", req.version());
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let out = json!({
                        "method": method,
                        "path": path,
                        "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                        "version": version,
                        "peer": peer.to_string(),
                    });
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(out.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket echo upstream.
pub async fn ws_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    } else if m.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

pub fn row(entity: &str, v: Value) -> Map<String, Value> {
    let Value::Object(m) = v else {
        panic!("object expected")
    };
    tollgate_model::entities::by_name(entity)
        .unwrap()
        .process(m, &Context::new(Operation::Insert))
        .unwrap_or_else(|e| panic!("{entity}: {e:?}"))
}

pub fn service(host: &str, port: u16, extra: Value) -> Map<String, Value> {
    let mut v = json!({"host": host, "port": port});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    row("services", v)
}

pub fn route(service: Option<&Map<String, Value>>, extra: Value) -> Map<String, Value> {
    let mut v = json!({});
    if let Some(s) = service {
        v["service"] = json!({"id": s["id"]});
    }
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    row("routes", v)
}

pub fn dataset(entries: Vec<(&str, Map<String, Value>)>) -> Dataset {
    let mut d = Dataset::new();
    for (k, v) in entries {
        d.entry(k.to_owned()).or_default().push(v);
    }
    d
}

pub struct Running {
    /// h1, h2c (http2), TLS (ssl http2)
    pub addrs: Vec<SocketAddr>,
    pub snapshot: SharedSnapshot,
    pub stats: Arc<Stats>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs[0], path)
    }
    pub fn swap(&self, d: &Dataset) {
        self.snapshot.store(Arc::new(Snapshot::build(d).unwrap()));
    }
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

pub fn config(extra: &[(&str, &str)]) -> tollgate_config::Config {
    let mut o = tollgate_config::LoadOptions::isolated().set(
        "proxy_listen",
        "127.0.0.1:0, 127.0.0.1:0 http2, 127.0.0.1:0 http2 ssl",
    );
    for (k, v) in extra {
        o = o.set(*k, *v);
    }
    tollgate_config::Config::load(o).unwrap().config
}

pub async fn start(d: &Dataset, extra: &[(&str, &str)]) -> Running {
    start_with(d, config(extra), |_| {}).await
}

pub async fn start_with(
    d: &Dataset,
    cfg: tollgate_config::Config,
    tweak: impl FnOnce(&mut Proxy),
) -> Running {
    let snapshot: SharedSnapshot =
        Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::build(d).unwrap()));
    let stats = Arc::new(Stats::new());
    let mut p = Proxy::new(&cfg, snapshot.clone(), stats.clone()).unwrap();
    tweak(&mut p);
    let addrs = p.bind().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(p.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addrs,
        snapshot,
        stats,
        stop: Some(tx),
        done,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub async fn echo_json(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200, "unexpected status");
    r.json().await.unwrap()
}
