//! Plugins end to end, part two: request-termination, ip-restriction (behind trusted
//! proxies), request-size-limiting, bot-detection, cors, jwt and hmac-auth through the
//! real binary, with credentials created through the Admin API.

use crate::plugin_support::{echo, get, ok, routes, send, until, until_with};
use crate::support::Gateway;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn b64(data: &[u8], url: bool) -> String {
    let a: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(a[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            for _ in c.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn hs256(secret: &str, claims: Value) -> String {
    let h = b64(br#"{"alg":"HS256","typ":"JWT"}"#, true);
    let c = b64(claims.to_string().as_bytes(), true);
    let signed = format!("{h}.{c}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", b64(sig.as_ref(), true))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An IMF-fixdate (`Date` header) for now.
fn http_date() -> String {
    let secs = now();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn request_termination_ip_restriction_and_size_limits() {
    let up = echo().await;
    // Behind a trusted proxy the client address comes from X-Forwarded-For.
    let g = Gateway::start_with(&[
        ("TOLLGATE_TRUSTED_IPS", "127.0.0.1"),
        ("TOLLGATE_REAL_IP_HEADER", "X-Forwarded-For"),
    ])
    .await;
    routes(
        &g,
        &up,
        &[
            ("term", "/term"),
            ("dbg", "/dbg"),
            ("ip", "/ip"),
            ("size", "/size"),
        ],
    )
    .await;
    ok(
        &g,
        "/routes/term/plugins",
        json!({"name": "request-termination"}),
    )
    .await;
    ok(
        &g,
        "/routes/dbg/plugins",
        json!({"name": "request-termination", "config": {"trigger": "x-debug", "echo": true, "status_code": 200}}),
    )
    .await;
    ok(
        &g,
        "/routes/ip/plugins",
        json!({"name": "ip-restriction", "config": {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.6.6.6"]}}),
    )
    .await;
    ok(
        &g,
        "/routes/size/plugins",
        json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 10, "size_unit": "bytes"}}),
    )
    .await;

    let r = until(&g, "/term", &[], 503).await;
    assert_eq!(r.body, json!({"message": "Service unavailable"}));
    let r = get(&g, "/dbg/x?q=1", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["uri"], "/x?q=1", "no trigger: proxied");
    let r = get(&g, "/dbg/x?q=1", &[("x-debug", "1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["request"]["path"], "/dbg/x");
    assert_eq!(r.body["request"]["query"]["q"], "1");
    assert_eq!(r.body["request"]["headers"]["x-debug"], "1");
    assert!(r.body["matched_route"]["id"].is_string());

    // An allowed address answers 200 with or without the plugin: wait for a denied one.
    until(&g, "/ip", &[("x-forwarded-for", "10.6.6.6")], 403).await;
    let r = get(&g, "/ip", &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_eq!(r.status, 200);
    let r = get(&g, "/ip", &[("x-forwarded-for", "2001:db8::7")]).await;
    assert_eq!(r.status, 200);
    for ip in ["10.6.6.6", "192.168.0.1", "2001:db9::1"] {
        let r = get(&g, "/ip", &[("x-forwarded-for", ip)]).await;
        assert_eq!(r.status, 403, "{ip}");
        assert_eq!(r.message(), format!("IP address not allowed: {ip}"));
    }
    let r = get(&g, "/ip", &[]).await;
    assert_eq!(r.message(), "IP address not allowed: 127.0.0.1");

    let post = |b: reqwest::Body| send(&g, Method::POST, "/size", &[], Some(b));
    // The size limit is the last plugin created: wait until it refuses.
    for _ in 0..250 {
        if post("0123456789X".into()).await.status == 413 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = post("0123456789".into()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["body_len"], 10);
    let r = post("0123456789X".into()).await;
    assert_eq!(
        (r.status.as_u16(), r.message()),
        (413, "Request size limit exceeded")
    );
    // Chunked (no Content-Length): the body itself is measured.
    assert_eq!(raw_chunked(&g, "/size", "0123456789ABC").await, 413);
    assert_eq!(raw_chunked(&g, "/size", "tiny").await, 200);
}

/// POSTs `body` with `Transfer-Encoding: chunked` over a raw connection; the status.
async fn raw_chunked(g: &Gateway, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = g.proxy.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn bot_detection_and_cors() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("bots", "/bots"), ("cors", "/cors")]).await;
    ok(
        &g,
        "/routes/bots/plugins",
        json!({"name": "bot-detection", "config": {"allow": ["Googlebot"], "deny": ["^evil"]}}),
    )
    .await;
    ok(
        &g,
        "/routes/cors/plugins",
        json!({"name": "cors", "config": {
            "origins": ["https://app.example.com", "https://.*\\.partner\\.io"],
            "headers": ["X-Token"], "exposed_headers": ["X-Trace"], "methods": ["GET", "POST"],
            "max_age": 600, "credentials": true
        }}),
    )
    .await;

    let r = until(&g, "/bots", &[("user-agent", "evil-scanner/1.0")], 403).await;
    assert_eq!(r.message(), "Forbidden");
    let r = get(&g, "/bots", &[("user-agent", "Go-http-client/1.1")]).await;
    assert_eq!(r.status, 403, "Kong's built-in list");
    let r = get(&g, "/bots", &[("user-agent", "Googlebot/2.1")]).await;
    assert_eq!(r.status, 200, "allowed explicitly");
    let r = get(
        &g,
        "/bots",
        &[(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )],
    )
    .await;
    assert_eq!(r.status, 200);

    // A preflight is answered by the gateway.
    let origin = [("origin", "https://a.partner.io")];
    until(&g, "/cors", &origin, 200).await;
    let r = send(
        &g,
        Method::OPTIONS,
        "/cors",
        &[
            ("origin", "https://a.partner.io"),
            ("access-control-request-method", "POST"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Value::String(String::new()), "not proxied");
    let h = &r.headers;
    assert_eq!(h["access-control-allow-origin"], "https://a.partner.io");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "X-Token");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["vary"], "Origin");
    // A simple request gets the headers on the upstream's response.
    let r = get(&g, "/cors", &[("origin", "https://app.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["method"], "GET");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "X-Trace");
    let r = get(&g, "/cors", &[("origin", "https://evil.com")]).await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_and_hmac_auth() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(
        &g,
        &up,
        &[("jwt", "/jwt"), ("hmac", "/hmac"), ("either", "/either")],
    )
    .await;
    let alice = ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers", json!({"username": "anon"})).await;
    let cred = ok(
        &g,
        "/consumers/alice/jwt",
        json!({"key": "alice-iss", "secret": "jwt-secret"}),
    )
    .await;
    assert_eq!(cred["algorithm"], "HS256");
    ok(
        &g,
        "/consumers/alice/hmac-auth",
        json!({"username": "alice-hmac", "secret": "hmac-secret"}),
    )
    .await;
    ok(
        &g,
        "/routes/jwt/plugins",
        json!({"name": "jwt", "config": {"claims_to_verify": ["exp"]}}),
    )
    .await;
    ok(
        &g,
        "/routes/hmac/plugins",
        json!({"name": "hmac-auth", "config": {"enforce_headers": ["date"], "hide_credentials": true}}),
    )
    .await;
    // Logical OR: jwt or hmac-auth, else the anonymous consumer.
    ok(
        &g,
        "/routes/either/plugins",
        json!({"name": "jwt", "config": {"anonymous": "anon"}}),
    )
    .await;
    ok(
        &g,
        "/routes/either/plugins",
        json!({"name": "hmac-auth", "config": {"anonymous": "anon"}}),
    )
    .await;

    // jwt
    let r = until(&g, "/jwt", &[], 401).await;
    assert_eq!(r.body, json!({"message": "Unauthorized"}));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let good = hs256("jwt-secret", json!({"iss": "alice-iss", "exp": now() + 60}));
    let bearer = format!("Bearer {good}");
    let r = get(&g, "/jwt", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.up("x-consumer-id"), alice["id"].as_str());
    assert_eq!(r.up("x-credential-identifier"), Some("alice-iss"));
    let r = get(&g, &format!("/jwt?jwt={good}"), &[]).await;
    assert_eq!(r.status, 200);
    let expired = hs256("jwt-secret", json!({"iss": "alice-iss", "exp": now() - 10}));
    let r = get(
        &g,
        "/jwt",
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"exp": "token expired"}));
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let forged = hs256("guess", json!({"iss": "alice-iss", "exp": now() + 60}));
    let r = get(
        &g,
        "/jwt",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(r.body, json!({"message": "Invalid signature"}));
    let huge = format!("Bearer {}", "x.".repeat(4000));
    for bad in [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ...",
        huge.as_str(),
    ] {
        let r = get(&g, "/jwt", &[("authorization", bad)]).await;
        assert_eq!(r.status, 401, "{bad:.30}");
        assert_eq!(r.message(), "Bad token; invalid JSON");
    }

    // hmac-auth
    let date = http_date();
    let sign = |secret: &str, signed: &str| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref(), false)
    };
    let auth = |sig: &str| {
        format!(
            "hmac username=\"alice-hmac\", algorithm=\"hmac-sha256\", headers=\"date @request-target\", signature=\"{sig}\""
        )
    };
    let signing = format!("date: {date}\n@request-target: get /hmac/x?y=1");
    let good = auth(&sign("hmac-secret", &signing));
    let r = get(
        &g,
        "/hmac/x?y=1",
        &[("date", &date), ("authorization", &good)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.up("x-consumer-username"), Some("alice"));
    assert_eq!(r.up("x-credential-identifier"), Some("alice-hmac"));
    assert_eq!(r.up("authorization"), None, "hide_credentials");
    let r = get(
        &g,
        "/hmac/x?y=2",
        &[("date", &date), ("authorization", &good)],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.message()),
        (401, "HMAC signature does not match")
    );
    assert_eq!(r.headers["www-authenticate"], "hmac");
    let r = get(&g, "/hmac/x?y=1", &[("authorization", &good)]).await;
    assert_eq!(
        r.message(),
        "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"
    );
    let huge = format!("hmac {}", "a".repeat(6000));
    for bad in ["hmac", "hmac username=\"alice-hmac\"", huge.as_str()] {
        let r = get(&g, "/hmac", &[("date", &date), ("authorization", bad)]).await;
        assert_eq!(
            (r.status.as_u16(), r.message()),
            (401, "HMAC signature cannot be verified"),
            "{bad:.30}"
        );
    }
    let r = get(&g, "/hmac", &[]).await;
    assert_eq!((r.status.as_u16(), r.message()), (401, "Unauthorized"));

    // Either: a JWT, an HMAC signature, or anonymous.
    let r = until_with(&g, "/either", &[], |r| {
        r.up("x-anonymous-consumer").is_some()
    })
    .await;
    assert_eq!(r.up("x-consumer-username"), Some("anon"));
    assert_eq!(r.up("x-anonymous-consumer"), Some("true"));
    let r = get(&g, "/either", &[("authorization", &bearer)]).await;
    assert_eq!(r.up("x-consumer-username"), Some("alice"));
    assert_eq!(r.up("x-anonymous-consumer"), None);
    let signing = format!("date: {date}\n@request-target: get /either");
    let hm = auth(&sign("hmac-secret", &signing));
    let r = get(&g, "/either", &[("date", &date), ("authorization", &hm)]).await;
    assert_eq!(r.up("x-credential-identifier"), Some("alice-hmac"));

    // A credential deleted through the Admin API stops working.
    assert_eq!(g.delete("/consumers/alice/jwt/alice-iss").await, 204);
    let r = until(&g, "/jwt", &[("authorization", &bearer)], 401).await;
    assert_eq!(
        r.body,
        json!({"message": "No credentials found for given 'iss'"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_and_bad_configs_of_the_new_plugins() {
    let g = Gateway::start().await;
    let (s, v) = g.get("/plugins/enabled").await;
    assert_eq!(s, 200);
    let en = v["enabled_plugins"].as_array().unwrap();
    for p in [
        "request-termination",
        "ip-restriction",
        "request-size-limiting",
        "bot-detection",
        "cors",
        "jwt",
        "hmac-auth",
    ] {
        assert!(en.contains(&json!(p)), "{p} enabled by default");
        let (s, v) = g.get(&format!("/schemas/plugins/{p}")).await;
        assert_eq!(s, 200, "{p}: {v}");
    }
    let (_, v) = g.get("/schemas/plugins/jwt").await;
    let config = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("config"))
        .unwrap();
    let field = |name: &str| {
        config["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name))
            .cloned()
            .unwrap()
    };
    assert_eq!(field("uri_param_names")["default"], json!(["jwt"]));
    assert_eq!(field("header_names")["default"], json!(["authorization"]));
    assert_eq!(field("key_claim_name")["default"], "iss");
    assert_eq!(field("maximum_expiration")["default"], 0);

    let bad = |name: &str, config: Value| {
        let g = &g;
        let name = name.to_owned();
        async move {
            let (s, v) = g
                .post("/plugins", json!({"name": name, "config": config}))
                .await;
            assert_eq!(s, 400, "{v}");
            assert_eq!(v["name"], "schema violation");
            v["fields"].clone()
        }
    };
    let f = bad("ip-restriction", json!({"allow": ["10.0.0.0/33"]})).await;
    assert_eq!(
        f["config"]["allow"][0],
        "invalid ip or cidr range: '10.0.0.0/33'"
    );
    let f = bad("ip-restriction", json!({})).await;
    assert_eq!(
        f["@entity"][0],
        "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
    );
    let f = bad("request-size-limiting", json!({"size_unit": "gigabytes"})).await;
    assert_eq!(
        f["config"]["size_unit"],
        "expected one of: megabytes, kilobytes, bytes"
    );
    let f = bad("request-termination", json!({"message": "x", "body": "y"})).await;
    assert_eq!(
        f["config"],
        "message cannot be used with content_type or body"
    );
    let f = bad("request-termination", json!({"status_code": 99})).await;
    assert_eq!(
        f["config"]["status_code"],
        "value should be between 100 and 599"
    );
    let f = bad("cors", json!({"methods": ["FETCH"]})).await;
    assert!(f["config"]["methods"][0]
        .as_str()
        .unwrap()
        .starts_with("expected one of"));
    let f = bad("cors", json!({"origins": ["("]})).await;
    assert_eq!(f["config"]["origins"][0], "'(' is not a valid regex");
    let f = bad("bot-detection", json!({"deny": ["[a-"]})).await;
    assert_eq!(f["config"]["deny"][0], "'[a-' is not a valid regex");
    let f = bad("jwt", json!({"maximum_expiration": 60})).await;
    assert_eq!(f["config"]["claims_to_verify"], "expected to contain: exp");
    let f = bad("jwt", json!({"claims_to_verify": ["iat"]})).await;
    assert!(f["config"]["claims_to_verify"][0]
        .as_str()
        .unwrap()
        .starts_with("expected one of"));
    let f = bad("hmac-auth", json!({"clock_skew": 0})).await;
    assert_eq!(f["config"]["clock_skew"], "value must be greater than 0");
    let f = bad("hmac-auth", json!({"algorithms": ["hmac-md5"]})).await;
    assert!(f["config"]["algorithms"][0]
        .as_str()
        .unwrap()
        .starts_with("expected one of"));
    // jwt and hmac-auth cannot be scoped to a consumer (Kong's no_consumer).
    let (s, c) = g.post("/consumers", json!({"username": "c"})).await;
    assert_eq!(s, 201);
    let (s, _) = g
        .post(
            "/plugins",
            json!({"name": "jwt", "consumer": {"id": c["id"]}}),
        )
        .await;
    assert_eq!(s, 400);
}

/// Runs the `openssl` CLI; its stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

/// An ES512 token signed by `openssl dgst -sha512` with `key` (a PEM path), its DER
/// signature turned into JWS's raw 132-byte `r || s`.
fn es512(key: &std::path::Path, claims: Value) -> String {
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"ES512","typ":"JWT"}"#, true),
        b64(claims.to_string().as_bytes(), true)
    );
    let data = key.with_extension("data");
    std::fs::write(&data, &signed).unwrap();
    let der = openssl(&[
        "dgst",
        "-sha512",
        "-sign",
        key.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    let mut at = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    let mut raw = Vec::new();
    for _ in 0..2 {
        let len = der[at + 1] as usize;
        let int = &der[at + 2..at + 2 + len];
        let int = &int[int.iter().take_while(|&&b| b == 0).count()..];
        raw.extend(std::iter::repeat_n(0u8, 66 - int.len()));
        raw.extend_from_slice(int);
        at += 2 + len;
    }
    format!("{signed}.{}", b64(&raw, true))
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_es512_with_an_openssl_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("p521.pem");
    let k = key.to_str().unwrap();
    openssl(&[
        "ecparam",
        "-name",
        "secp521r1",
        "-genkey",
        "-noout",
        "-out",
        k,
    ]);
    let public = String::from_utf8(openssl(&["ec", "-in", k, "-pubout"])).unwrap();

    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("jwt", "/jwt")]).await;
    let bob = ok(&g, "/consumers", json!({"username": "bob"})).await;
    let cred = ok(
        &g,
        "/consumers/bob/jwt",
        json!({"key": "bob-iss", "algorithm": "ES512", "rsa_public_key": public}),
    )
    .await;
    assert_eq!(cred["algorithm"], "ES512");
    ok(&g, "/routes/jwt/plugins", json!({"name": "jwt"})).await;
    until(&g, "/jwt", &[], 401).await;

    let token = es512(&key, json!({"iss": "bob-iss"}));
    let r = get(&g, "/jwt", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.up("x-consumer-id"), bob["id"].as_str());
    assert_eq!(r.up("x-credential-identifier"), Some("bob-iss"));

    // Malformed signatures are a 401, never a 500.
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut bad: Vec<String> = vec![
        format!("{signed}.{}", &sig[..sig.len() - 8]),
        format!("{signed}.{}", b64(&[0u8; 132], true)),
        format!("{signed}.{}", b64(&[0xffu8; 133], true)),
        format!("{signed}.AA"),
        format!("{signed}."),
    ];
    let mut flipped = sig.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    bad.push(format!("{signed}.{}", String::from_utf8(flipped).unwrap()));
    let other = es512(&key, json!({"iss": "bob-iss", "admin": true}));
    bad.push(format!("{}.{sig}", other.rsplit_once('.').unwrap().0));
    for t in bad {
        let r = get(&g, "/jwt", &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 401, "{t}: {:?}", r.body);
        assert_eq!(r.message(), "Invalid signature", "{t}");
    }
}
