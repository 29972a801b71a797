//! What the plugin end-to-end tests share: an upstream that echoes what it received
//! (body included), and requests through the proxy.

use crate::support::Gateway;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An upstream echoing method, URI, headers and body as JSON (the shared echo upstream
/// does not read bodies).
pub async fn echo() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let mut lines = head.split("\r\n");
                    let first = lines.next().unwrap_or_default().to_string();
                    let mut it = first.split(' ');
                    let (method, uri) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                    let mut headers = serde_json::Map::new();
                    let mut len = 0usize;
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "content-length" {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            headers.insert(k, Value::from(v.trim()));
                        }
                    }
                    while buf.len() < end + 4 + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    buf.drain(..end + 4 + len);
                    let out =
                        json!({"method": method, "uri": uri, "headers": headers, "body": body, "body_len": len})
                            .to_string();
                    // `x-respond-header: Name: value` asks for that header in the answer.
                    let extra = headers
                        .get("x-respond-header")
                        .and_then(Value::as_str)
                        .map(|h| format!("{h}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// What the upstream received (the echo).
    pub fn up(&self, header: &str) -> Option<&str> {
        self.body["headers"][header].as_str()
    }
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

pub async fn send(
    g: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<reqwest::Body>,
) -> Resp {
    let mut r = g.client.request(method, format!("{}{path}", g.proxy));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let r = r.send().await.expect("proxy request");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get(g: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(g, Method::GET, path, headers, None).await
}

/// Polls until the proxy answers `want` (configuration changes apply asynchronously).
pub async fn until(g: &Gateway, path: &str, headers: &[(&str, &str)], want: u16) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(g, path, headers).await;
        if r.status.as_u16() == want || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `path` until `done` holds (or 5 s pass): for a plugin whose effect is not a status,
/// since a route may serve a snapshot before the plugin created after it lands.
pub async fn until_with(
    g: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&Resp) -> bool,
) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(g, path, headers).await;
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ok(g: &Gateway, path: &str, body: Value) -> Value {
    let (s, v) = g.post(path, body.clone()).await;
    assert!(s.is_success(), "POST {path} {body}: {s} {v}");
    v
}

/// A service on the echo upstream with one route per `(name, path)`.
pub async fn routes(g: &Gateway, up: &str, names: &[(&str, &str)]) {
    ok(g, "/services", json!({"name": "s", "url": up})).await;
    for (name, path) in names {
        ok(
            g,
            "/services/s/routes",
            json!({"name": name, "paths": [path]}),
        )
        .await;
    }
}
