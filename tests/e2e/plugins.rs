//! Plugins end to end: key-auth, basic-auth and acl through the real binary; Kong's
//! scoping precedence as a client sees it; anonymous consumers; consumer headers
//! upstream; credentials taking effect without a restart (on each database); schemas and
//! bad configs.

use crate::plugin_support::{echo, get, ok, routes, send, until, until_with, Resp};
use crate::support::{Db, Gateway};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// `X-Consumer-Groups` as the upstream got it, sorted (the store's order is by id).
fn groups(r: &Resp) -> Vec<&str> {
    let mut g: Vec<&str> = r
        .up("x-consumer-groups")
        .unwrap_or("")
        .split(", ")
        .collect();
    g.sort_unstable();
    g
}

fn basic(user_pw: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("Basic ");
    for c in user_pw.as_bytes().chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in c.len()..3 {
            out.push('=');
        }
    }
    out
}

async fn key_auth_end_to_end(db: Db) {
    let up = echo().await;
    let g = Gateway::start_on(db, &[]).await;
    routes(&g, &up, &[("r", "/ka")]).await;
    let alice = ok(
        &g,
        "/consumers",
        json!({"username": "alice", "custom_id": "A-1"}),
    )
    .await;
    let cred = ok(&g, "/consumers/alice/key-auth", json!({"key": "secret"})).await;
    let plugin = ok(&g, "/routes/r/plugins", json!({"name": "key-auth"})).await;

    let r = until(&g, "/ka", &[], 401).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.message(), "No API key found in request");
    assert_eq!(r.headers["www-authenticate"], "Key");
    assert!(r.headers.contains_key("x-kong-request-id"));

    let r = get(&g, "/ka", &[("apikey", "wrong")]).await;
    assert_eq!((r.status.as_u16(), r.message()), (401, "Unauthorized"));
    let r = get(&g, "/ka?apikey=a&apikey=b", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.message()),
        (401, "Duplicate API key found")
    );
    let r = get(&g, "/ka?apikey=", &[]).await;
    assert_eq!(r.message(), "No API key found in request");

    // Authenticated: Kong's consumer headers upstream, forged ones replaced or removed.
    let r = get(
        &g,
        "/ka",
        &[
            ("apikey", "secret"),
            ("x-consumer-username", "mallory"),
            ("x-anonymous-consumer", "true"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.up("x-consumer-id"), alice["id"].as_str());
    assert_eq!(r.up("x-consumer-username"), Some("alice"));
    assert_eq!(r.up("x-consumer-custom-id"), Some("A-1"));
    assert_eq!(r.up("x-credential-identifier"), cred["id"].as_str());
    assert_eq!(r.up("x-anonymous-consumer"), None);
    assert_eq!(
        r.up("apikey"),
        Some("secret"),
        "kept without hide_credentials"
    );
    let r = get(&g, "/ka/x?apikey=secret&y=1", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["uri"], "/x?apikey=secret&y=1");

    // A credential created through the Admin API works once the change lands, and stops
    // working when deleted.
    ok(&g, "/consumers/alice/key-auth", json!({"key": "fresh"})).await;
    assert_eq!(
        until(&g, "/ka", &[("apikey", "fresh")], 200).await.status,
        200
    );
    assert_eq!(g.delete("/consumers/alice/key-auth/fresh").await, 204);
    assert_eq!(
        until(&g, "/ka", &[("apikey", "fresh")], 401).await.status,
        401
    );
    // A credential with a ttl stops working when it expires.
    ok(
        &g,
        "/consumers/alice/key-auth",
        json!({"key": "brief", "ttl": 2}),
    )
    .await;
    // Expiries are whole seconds (as Kong's `ngx.time() + ttl`): a ttl of 2 lasts 1 to 2 s.
    assert_eq!(
        until(&g, "/ka", &[("apikey", "brief")], 200).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&g, "/ka", &[("apikey", "brief")]).await.status, 401);

    // hide_credentials, key_in_body (JSON, form, multipart), realm.
    let (s, v) = g
        .patch(
            &format!("/plugins/{}", plugin["id"].as_str().unwrap()),
            json!({"config": {"hide_credentials": true, "key_in_body": true, "realm": "kong"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = until(&g, "/ka", &[], 401).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut r = r;
    while r.headers["www-authenticate"] != "Key realm=\"kong\"" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = get(&g, "/ka", &[]).await;
    }
    assert_eq!(r.headers["www-authenticate"], "Key realm=\"kong\"");
    let r = get(&g, "/ka/x?y=1&apikey=secret", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["uri"], "/x?y=1");
    let r = get(&g, "/ka", &[("apikey", "secret")]).await;
    assert_eq!(r.up("apikey"), None);
    let r = send(
        &g,
        Method::POST,
        "/ka",
        &[("content-type", "application/json")],
        Some(r#"{"apikey":"secret","a":1}"#.into()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["body"], r#"{"a":1}"#);
    assert_eq!(r.up("content-length"), Some("7"));
    let r = send(
        &g,
        Method::POST,
        "/ka",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("a=1&apikey=secret".into()),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["body"].as_str()),
        (200, Some("a=1"))
    );
    let mp = "--B\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nsecret\r\n--B--\r\n";
    let r = send(
        &g,
        Method::POST,
        "/ka",
        &[("content-type", "multipart/form-data; boundary=B")],
        Some(mp.into()),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &g,
        Method::POST,
        "/ka",
        &[("content-type", "application/json")],
        Some("{not json".into()),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.message()),
        (401, "No API key found in request")
    );
}

async fn basic_auth_and_acl(db: Db) {
    let up = echo().await;
    let g = Gateway::start_on(db, &[]).await;
    routes(&g, &up, &[("r", "/ba"), ("d", "/deny")]).await;
    let alice = ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers", json!({"username": "bob"})).await;
    ok(&g, "/consumers", json!({"username": "carol"})).await;
    let cred = ok(
        &g,
        "/consumers/alice/basic-auth",
        json!({"username": "alice", "password": "pw"}),
    )
    .await;
    ok(
        &g,
        "/consumers/bob/basic-auth",
        json!({"username": "bob", "password": "pw"}),
    )
    .await;
    ok(
        &g,
        "/consumers/carol/basic-auth",
        json!({"username": "carol", "password": "pw"}),
    )
    .await;
    ok(&g, "/consumers/alice/acls", json!({"group": "admins"})).await;
    ok(&g, "/consumers/alice/acls", json!({"group": "ops"})).await;
    ok(&g, "/consumers/bob/acls", json!({"group": "users"})).await;
    ok(&g, "/routes/r/plugins", json!({"name": "basic-auth"})).await;
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "acl", "config": {"allow": ["admins"]}}),
    )
    .await;
    ok(
        &g,
        "/routes/d/plugins",
        json!({"name": "basic-auth", "config": {"realm": "deny-realm", "hide_credentials": true}}),
    )
    .await;
    ok(
        &g,
        "/routes/d/plugins",
        json!({"name": "acl", "config": {"deny": ["users"], "hide_groups_header": true}}),
    )
    .await;

    // Stored as Kong stores it: never the plain password.
    let pw = cred["password"].as_str().unwrap();
    assert!(pw.len() == 40 && pw != "pw" && pw.bytes().all(|b| b.is_ascii_hexdigit()));

    let r = until(&g, "/ba", &[], 401).await;
    assert_eq!((r.status.as_u16(), r.message()), (401, "Unauthorized"));
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"service\"");

    // Malformed credentials are a 401, never a 500.
    let huge = format!("Basic {}", "A".repeat(6000));
    for bad in [
        basic("alice:wrong"),
        basic("nobody:pw"),
        basic("nocolon"),
        "Basic !!!not-base64!!!".into(),
        "Basic YWxp!!Y2U6cHc=".into(),
        "Bearer abc".into(),
        huge,
    ] {
        let r = get(&g, "/ba", &[("authorization", &bad)]).await;
        assert_eq!(r.status, 401, "{bad:.40}");
    }

    // The acl created after basic-auth lands a moment later (the groups header is its).
    let good = basic("alice:pw");
    let r = until_with(&g, "/ba", &[("authorization", &good)], |r| {
        r.up("x-consumer-groups").is_some()
    })
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.up("x-consumer-id"), alice["id"].as_str());
    assert_eq!(r.up("x-credential-identifier"), Some("alice"));
    assert_eq!(groups(&r), ["admins", "ops"]);
    assert_eq!(r.up("authorization"), Some(good.as_str()));
    let r = get(&g, "/ba", &[("proxy-authorization", &good)]).await;
    assert_eq!(r.status, 200);

    // acl: bob is not in `admins`; carol has no groups at all.
    for who in ["bob:pw", "carol:pw"] {
        let r = get(&g, "/ba", &[("authorization", &basic(who))]).await;
        assert_eq!(
            (r.status.as_u16(), r.message()),
            (403, "You cannot consume this service"),
            "{who}"
        );
    }

    // deny list, hidden groups header, hidden credentials, realm.
    // The route's own basic-auth (created after the service's) decides once it lands.
    let r = until_with(&g, "/deny", &[], |r| {
        r.headers
            .get("www-authenticate")
            .is_some_and(|v| v == "Basic realm=\"deny-realm\"")
    })
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"deny-realm\"");
    // …and the route's acl, created last.
    let r = until(&g, "/deny", &[("authorization", &basic("bob:pw"))], 403).await;
    assert_eq!(r.status, 403);
    let r = get(&g, "/deny", &[("authorization", &basic("alice:pw"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.up("x-consumer-groups"), None);
    assert_eq!(r.up("authorization"), None);
    let r = get(&g, "/deny", &[("authorization", &basic("carol:pw"))]).await;
    assert_eq!(r.status, 200, "deny with no groups lets through");

    // A group added through the Admin API takes effect.
    ok(&g, "/consumers/bob/acls", json!({"group": "admins"})).await;
    let r = until(&g, "/ba", &[("authorization", &basic("bob:pw"))], 200).await;
    assert_eq!(r.status, 200);
    assert_eq!(groups(&r), ["admins", "users"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_consumers_and_logical_or() {
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    for (name, path) in [
        ("anon", "/anon"),
        ("ghost", "/ghost"),
        ("either", "/either"),
    ] {
        ok(
            &g,
            "/services/s/routes",
            json!({"name": name, "paths": [path]}),
        )
        .await;
    }
    let anon = ok(&g, "/consumers", json!({"username": "anonymous-user"})).await;
    ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers/alice/key-auth", json!({"key": "secret"})).await;
    ok(
        &g,
        "/consumers/alice/basic-auth",
        json!({"username": "alice", "password": "pw"}),
    )
    .await;
    ok(&g, "/consumers/alice/acls", json!({"group": "members"})).await;
    // anonymous by id here, by username below.
    ok(
        &g,
        "/routes/anon/plugins",
        json!({"name": "key-auth", "config": {"anonymous": anon["id"]}}),
    )
    .await;
    ok(
        &g,
        "/routes/ghost/plugins",
        json!({"name": "key-auth", "config": {"anonymous": "does-not-exist"}}),
    )
    .await;
    // key-auth OR basic-auth, then acl: only real members pass.
    for p in [
        json!({"name": "key-auth", "config": {"anonymous": "anonymous-user"}}),
        json!({"name": "basic-auth", "config": {"anonymous": "anonymous-user"}}),
        json!({"name": "acl", "config": {"allow": ["members"]}}),
    ] {
        ok(&g, "/routes/either/plugins", p).await;
    }

    let r = until_with(&g, "/anon", &[], |r| r.up("x-anonymous-consumer").is_some()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.up("x-anonymous-consumer"), Some("true"));
    assert_eq!(r.up("x-consumer-username"), Some("anonymous-user"));
    assert_eq!(r.up("x-consumer-id"), anon["id"].as_str());
    assert_eq!(r.up("x-credential-identifier"), None);
    let r = get(&g, "/anon", &[("apikey", "wrong")]).await;
    assert_eq!(r.up("x-anonymous-consumer"), Some("true"));
    let r = get(&g, "/anon", &[("apikey", "secret")]).await;
    assert_eq!(r.up("x-consumer-username"), Some("alice"));
    assert_eq!(r.up("x-anonymous-consumer"), None);

    // An anonymous consumer that does not exist fails the request (Kong's 500).
    let r = until(&g, "/ghost", &[], 500).await;
    assert_eq!(
        (r.status.as_u16(), r.message()),
        (500, "An unexpected error occurred")
    );
    assert_eq!(get(&g, "/ghost", &[("apikey", "secret")]).await.status, 200);

    let r = until(&g, "/either", &[], 403).await;
    assert_eq!(r.status, 401, "anonymous (no credential) has no groups");
    let r = get(&g, "/either", &[("apikey", "secret")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.up("x-consumer-groups"), Some("members"));
    let r = get(&g, "/either", &[("authorization", &basic("alice:pw"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.up("x-credential-identifier"), Some("alice"));
}

/// Route+Service > Route > Service > Global, observed through key-auth's `key_names`
/// (the bundled plugins are all `no_consumer`; the consumer rules are unit-tested in
/// `tollgate-plugins`).
async fn precedence_as_a_client_sees_it(db: Db) {
    let up = echo().await;
    let g = Gateway::start_on(db, &[]).await;
    let s1 = ok(&g, "/services", json!({"name": "s1", "url": up})).await;
    ok(&g, "/services", json!({"name": "s2", "url": up})).await;
    let r1 = ok(
        &g,
        "/services/s1/routes",
        json!({"name": "r1", "paths": ["/p1"]}),
    )
    .await;
    ok(
        &g,
        "/services/s1/routes",
        json!({"name": "r2", "paths": ["/p2"]}),
    )
    .await;
    ok(
        &g,
        "/services/s1/routes",
        json!({"name": "r4", "paths": ["/p4"]}),
    )
    .await;
    ok(
        &g,
        "/services/s2/routes",
        json!({"name": "r3", "paths": ["/p3"]}),
    )
    .await;
    ok(&g, "/routes", json!({"name": "r5", "paths": ["/p5"]})).await;
    ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers/alice/key-auth", json!({"key": "secret"})).await;
    let ka = |names: &[&str]| json!({"name": "key-auth", "config": {"key_names": names}});
    ok(&g, "/plugins", ka(&["g"])).await;
    ok(&g, "/services/s1/plugins", ka(&["s"])).await;
    let r2 = ok(&g, "/routes/r2/plugins", ka(&["r"])).await;
    let mut rs = ka(&["rs"]);
    rs["route"] = json!({"id": r1["id"]});
    rs["service"] = json!({"id": s1["id"]});
    ok(&g, "/plugins", rs).await;

    // The route+service configuration is the last one created: wait until it decides /p1
    // (its key passes and the global's does not), so every earlier one serves too.
    for _ in 0..250 {
        let rs_ok = get(&g, "/p1", &[("rs", "secret")]).await.status == 200;
        if rs_ok && get(&g, "/p1", &[("g", "secret")]).await.status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (path, name) in [("/p1", "rs"), ("/p2", "r"), ("/p4", "s"), ("/p3", "g")] {
        let r = until(&g, path, &[(name, "secret")], 200).await;
        assert_eq!(r.status, 200, "{path} takes key name {name}");
        for other in ["rs", "r", "s", "g"].iter().filter(|o| **o != name) {
            let r = get(&g, path, &[(other, "secret")]).await;
            assert_eq!(r.status, 401, "{path} ignores {other}");
        }
    }
    // A route without a service: global plugins still run, then Kong's 503.
    let r = until(&g, "/p5", &[], 401).await;
    assert_eq!(r.status, 401);
    let r = get(&g, "/p5", &[("g", "secret")]).await;
    assert_eq!(r.status, 503);

    // A disabled configuration does not shadow a less specific one.
    let (s, _) = g
        .patch(
            &format!("/plugins/{}", r2["id"].as_str().unwrap()),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(until(&g, "/p2", &[("s", "secret")], 200).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_and_bad_configs() {
    let g = Gateway::start().await;
    let (s, v) = g.get("/schemas/plugins/key-auth").await;
    assert_eq!(s, 200);
    let fields = v["fields"].as_array().unwrap();
    let config = fields.iter().find_map(|f| f.get("config")).unwrap();
    let cfg_fields = config["fields"].as_array().unwrap();
    let key_names = cfg_fields.iter().find_map(|f| f.get("key_names")).unwrap();
    assert_eq!(key_names["default"], json!(["apikey"]));
    assert_eq!(key_names["required"], true);
    let consumer = fields.iter().find_map(|f| f.get("consumer")).unwrap();
    assert!(consumer.get("eq").is_some(), "no_consumer: {consumer}");
    let (s, v) = g.get("/schemas/plugins/basic-auth").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = g.get("/plugins/enabled").await;
    assert_eq!(s, 200);
    let en = v["enabled_plugins"].as_array().unwrap();
    for p in ["key-auth", "basic-auth", "acl"] {
        assert!(en.contains(&json!(p)), "{p} enabled by default");
    }

    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "key-auth", "config": {"key_names": ["bad header!"]}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["name"], "schema violation");
    assert_eq!(
        v["fields"]["config"]["key_names"][0],
        "bad header name 'bad header!', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
    );
    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "key-auth", "config": {"hide_credentials": "yes", "nope": 1}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["fields"]["config"]["hide_credentials"],
        "expected a boolean"
    );
    assert_eq!(v["fields"]["config"]["nope"], "unknown field");
    let (s, v) = g
        .post("/plugins", json!({"name": "acl", "config": {}}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["fields"]["@entity"][0],
        "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
    );
    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["fields"]["@entity"][0],
        "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
    );
    let alice = ok(&g, "/consumers", json!({"username": "alice"})).await;
    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "key-auth", "consumer": {"id": alice["id"]}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["fields"]["consumer"], "value must be null", "{v}");
    let (s, v) = g.post("/plugins", json!({"name": "ldap-auth"})).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["fields"]["name"],
        "plugin 'ldap-auth' not enabled; add it to the 'plugins' configuration property"
    );

    // The `plugins` key narrows what is enabled.
    let g2 = Gateway::start_with(&[("TOLLGATE_PLUGINS", "acl")]).await;
    let (s, v) = g2.post("/plugins", json!({"name": "key-auth"})).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["fields"]["name"],
        "plugin 'key-auth' not enabled; add it to the 'plugins' configuration property"
    );
    let (_, v) = g2.get("/plugins/enabled").await;
    assert_eq!(v["enabled_plugins"], json!(["acl"]));
}

crate::on_each_database!(
    key_auth_end_to_end,
    basic_auth_and_acl,
    precedence_as_a_client_sees_it
);
