//! gRPC through the proxy: a real tonic client against real tonic servers
//! (tonic-health's `grpc.health.v1.Health`) over h2c and TLS, trailers, and
//! Kong's gRPC error shapes.

mod common;

use bytes::Bytes;
use common::pki::{server_config, Ca};
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

const SERVICE: &str = "tollgate.Test";
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// A tonic-health server on h2c; `SERVICE` is serving.
async fn health_upstream() -> SocketAddr {
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

/// A TLS connection tonic's server accepts.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tonic-health server over TLS (ALPN h2) presenting `leaf`.
async fn health_upstream_tls(leaf: &common::pki::Leaf) -> SocketAddr {
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf, None, &[b"h2"]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let incoming = futures_util::stream::unfold((l, acceptor), |(l, acceptor)| async move {
        loop {
            let (s, _) = match l.accept().await {
                Ok(x) => x,
                Err(e) => return Some((Err(e), (l, acceptor))),
            };
            if let Ok(t) = acceptor.accept(s).await {
                return Some((Ok(TlsIo(t)), (l, acceptor)));
            }
        }
    });
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    Bytes::from(out)
}

/// `HealthCheckRequest { service }`, protobuf-encoded.
fn check_request(service: &str) -> Vec<u8> {
    let mut m = vec![0x0a, service.len() as u8];
    m.extend_from_slice(service.as_bytes());
    m
}

/// An h2 upstream that answers every call with one message
/// (`HealthCheckResponse { status: SERVING }`) and then error trailers.
async fn trailers_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", "8".parse().unwrap());
                        t.insert("grpc-message", "quota%20exhausted".parse().unwrap());
                        t.insert("x-upstream-trailer", "yes".parse().unwrap());
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(grpc_frame(&[
                                0x08, 0x01,
                            ]))),
                            Ok(Frame::trailers(t)),
                        ];
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A tonic channel over h2c (prior knowledge).
async fn h2c_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A tonic channel over TLS (ALPN h2), not verifying the proxy's
/// self-signed default certificate.
async fn tls_channel(addr: SocketAddr) -> Channel {
    let cfg = Arc::new(tollgate_proxy::tls::client_config(false, &[], None, b"h2").unwrap());
    Endpoint::from_shared(format!("http://localhost:{}", addr.port()))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let cfg = cfg.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

async fn check(ch: Channel, service: &str) -> Result<tonic::Response<i32>, tonic::Status> {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| {
            let (meta, msg, ext) = r.into_parts();
            tonic::Response::from_parts(meta, msg.status, ext)
        })
}

/// One unary call with a plain hyper h2 client (h2c), to look at the raw
/// response head and trailers.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    msg: &[u8],
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(msg)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

fn grpc_service(addr: SocketAddr, extra: Value) -> Map<String, Value> {
    let mut v = json!({"protocol": "grpc"});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    service("127.0.0.1", addr.port(), v)
}

fn grpc_route(s: &Map<String, Value>, protocols: &[&str]) -> Map<String, Value> {
    route(
        Some(s),
        json!({"protocols": protocols, "paths": ["/grpc.health.v1.Health/"], "strip_path": false}),
    )
}

#[tokio::test]
async fn unary_call_and_trailers_over_h2c() {
    let up = health_upstream().await;
    let s = grpc_service(up, json!({}));
    let r = grpc_route(&s, &["grpc", "grpcs"]);
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let h2c = p.addrs[1];

    let resp = check(h2c_channel(h2c).await, SERVICE).await.unwrap();
    assert_eq!(*resp.get_ref(), PbStatus::Serving as i32);
    let meta = resp.metadata();
    assert_eq!(meta.get("via").unwrap(), "2 kong/3.9.1");
    assert_eq!(meta.get("x-kong-request-id").unwrap().len(), 32);
    assert!(meta.get("x-kong-upstream-latency").is_some());

    // an error status from the upstream arrives intact
    let err = check(h2c_channel(h2c).await, "no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "service not registered");

    // the raw exchange: 200, one message, grpc-status 0 in the trailers
    let (head, body, trailers) = raw_call(h2c, CHECK, &check_request(SERVICE)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(&body[..], &grpc_frame(&[0x08, 0x01])[..]);
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    p.shutdown().await;
}

#[tokio::test]
async fn error_trailers_after_data_reach_the_client() {
    let up = trailers_upstream().await;
    let s = grpc_service(up, json!({}));
    let r = grpc_route(&s, &["grpc"]);
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let h2c = p.addrs[1];

    let err = check(h2c_channel(h2c).await, SERVICE).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "quota exhausted");

    let (head, body, trailers) = raw_call(h2c, CHECK, &check_request(SERVICE)).await;
    assert_eq!(head.status, 200);
    assert_eq!(&body[..], &grpc_frame(&[0x08, 0x01])[..]);
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "8");
    assert_eq!(trailers["grpc-message"], "quota%20exhausted");
    assert_eq!(trailers["x-upstream-trailer"], "yes");
    p.shutdown().await;
}

#[tokio::test]
async fn grpcs_service_reaches_a_tls_upstream() {
    // (Kong's schema allows tls_verify and ca_certificates on https/tls
    // services only: a grpcs upstream is not verified)
    let ca = Ca::new("gRPC CA");
    let up = health_upstream_tls(&ca.server(&["127.0.0.1"])).await;
    let s = service("127.0.0.1", up.port(), json!({"protocol": "grpcs"}));
    let r = grpc_route(&s, &["grpc", "grpcs"]);
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    // client → proxy over h2c and over TLS; proxy → upstream over TLS
    let resp = check(h2c_channel(p.addrs[1]).await, SERVICE).await.unwrap();
    assert_eq!(*resp.get_ref(), PbStatus::Serving as i32);
    let resp = check(tls_channel(p.addrs[2]).await, SERVICE).await.unwrap();
    assert_eq!(*resp.get_ref(), PbStatus::Serving as i32);

    // a grpc (plain text) service cannot talk to the TLS upstream: 502,
    // in the gRPC form (grpc-status 13 with Kong's message)
    let plain = grpc_service(up, json!({"retries": 0}));
    let r = grpc_route(&plain, &["grpc"]);
    p.swap(&dataset(vec![("services", plain), ("routes", r)]));
    let err = check(h2c_channel(p.addrs[1]).await, SERVICE)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "An invalid response was received from the upstream server"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn grpcs_route_requires_tls() {
    let up = health_upstream().await;
    let s = grpc_service(up, json!({}));
    let r = grpc_route(&s, &["grpcs"]);
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let resp = check(tls_channel(p.addrs[2]).await, SERVICE).await.unwrap();
    assert_eq!(*resp.get_ref(), PbStatus::Serving as i32);
    // over h2c: Kong's 200 with grpc-status 1
    let err = check(h2c_channel(p.addrs[1]).await, SERVICE)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled);
    assert_eq!(err.message(), "gRPC request matched gRPCs route");
    p.shutdown().await;
}

#[tokio::test]
async fn kong_grpc_error_shapes() {
    let up = health_upstream().await;
    let s = grpc_service(up, json!({}));
    let r = grpc_route(&s, &["grpc"]);
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = client();

    // a non-gRPC request on a gRPC route: 415
    let resp = c.get(p.url(CHECK)).send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        resp.text().await.unwrap(),
        format!(
            "{{\n  \"message\":\"Non-gRPC request matched gRPC route\",\n  \"request_id\":\"{rid}\"\n}}"
        )
    );

    // a gRPC request over HTTP/1.1: 426
    let resp = c
        .post(p.url(CHECK))
        .header("content-type", "application/grpc")
        .body(grpc_frame(&check_request(SERVICE)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["upgrade"], "HTTP/2");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("\"message\":\"Please use HTTP2 protocol\""));

    // no route for a gRPC request: 404 as grpc-status 5 in the headers
    let err = check(h2c_channel(p.addrs[1]).await, SERVICE).await;
    assert!(err.is_ok(), "the routed call works: {err:?}");
    let (head, body, _) = raw_call(p.addrs[1], "/other.Service/Call", b"").await;
    assert_eq!(head.status, 404);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(head.headers["grpc-status"], "5");
    assert_eq!(head.headers["grpc-message"], "NotFound");
    assert_eq!(head.headers["x-kong-request-id"].len(), 32);
    assert!(body.is_empty());
    let mut hc = tonic::client::Grpc::new(h2c_channel(p.addrs[1]).await);
    hc.ready().await.unwrap();
    let err = hc
        .unary::<_, tonic_health::pb::HealthCheckResponse, _>(
            tonic::Request::new(HealthCheckRequest {
                service: SERVICE.into(),
            }),
            http::uri::PathAndQuery::from_static("/other.Service/Call"),
            tonic::codec::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "NotFound");
    p.shutdown().await;
}
