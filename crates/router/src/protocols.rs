//! The protocol check Kong performs *after* routing
//! (`kong/runloop/handler.lua`, access phase).

/// What the proxy should do with a request given the matched route's protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVerdict {
    /// Proceed.
    Ok,
    /// Route is https-only (has `https` but not `http`) and the forwarded proto
    /// is not https: answer `https_redirect_status_code` (426 "Please use HTTPS
    /// protocol" with `Connection: Upgrade`, `Upgrade: TLS/1.2, HTTP/1.1`; or a
    /// 301/302/307/308 redirect to `https://<forwarded host><request uri>`).
    HttpsRequired,
    /// gRPC route, gRPC content type, but not HTTP/2: 426 "Please use HTTP2
    /// protocol" (`connection: Upgrade`, `upgrade: HTTP/2`).
    Http2Required,
    /// gRPC route, request content type is not `application/grpc*`: 415
    /// "Non-gRPC request matched gRPC route".
    NonGrpcRequest,
    /// grpcs-only route hit over plain text: 200 with `content-type:
    /// application/grpc`, `grpc-status: 1`, `grpc-message: gRPC request matched
    /// gRPCs route`.
    GrpcsRequired,
}

/// Kong's post-match protocol checks, in Kong's order.
///
/// * `forwarded_proto`: the scheme (or trusted `X-Forwarded-Proto`).
/// * `content_type`: the request's Content-Type, if any (read only for gRPC routes).
/// * `http2`: whether the request came over HTTP/2.
pub fn check_protocols<'a>(
    protocols: &[String],
    forwarded_proto: &str,
    content_type: impl FnOnce() -> Option<&'a str>,
    http2: bool,
) -> ProtocolVerdict {
    let has = |p: &str| protocols.iter().any(|x| x == p);
    if has("https") && !has("http") && forwarded_proto != "https" {
        return ProtocolVerdict::HttpsRequired;
    }
    if has("grpc") || has("grpcs") {
        match content_type() {
            Some(ct) if ct.starts_with("application/grpc") => {
                if !http2 {
                    return ProtocolVerdict::Http2Required;
                }
            }
            _ => return ProtocolVerdict::NonGrpcRequest,
        }
        if !has("grpc") && forwarded_proto != "https" {
            return ProtocolVerdict::GrpcsRequired;
        }
    }
    ProtocolVerdict::Ok
}
