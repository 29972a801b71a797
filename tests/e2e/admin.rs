//! The Admin API: every endpoint family and every error code, against the real binary,
//! once on each database (the embedded SQLite store, PostgreSQL and Cassandra).

use crate::support::{pages, Db, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

async fn root_status_endpoints_and_openapi(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (s, root) = g.get("/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(root["tagline"], "Welcome to kong");
    assert!(root["version"].as_str().unwrap().starts_with("3."));
    assert_eq!(root["edition"], "community");
    assert_eq!(root["configuration"]["database"], g.database);
    assert_eq!(root["configuration"]["portal"], false);
    assert!(root["plugins"]["available_on_server"].is_object());

    let (s, st) = g.get("/status").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["database"]["reachable"], true);
    assert!(st["server"]["total_requests"].is_number());
    let r = g
        .client
        .get(format!("{}/status/ready", g.status))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "ready");

    let (_, ep) = g.get("/endpoints").await;
    let eps: Vec<&str> = ep["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for must in [
        "/services",
        "/services/{services}/routes",
        "/consumers/{consumers}/key-auth",
        "/routes/{routes}/service",
        "/upstreams/{upstreams}/targets",
    ] {
        assert!(eps.contains(&must), "missing {must} in {eps:?}");
    }
    // The OpenAPI document lists exactly the served endpoints.
    let (_, doc) = g.get("/openapi.json").await;
    let mut doc_paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    doc_paths.sort();
    let mut sorted = eps.clone();
    sorted.sort();
    assert_eq!(doc_paths, sorted);
    assert!(doc["components"]["schemas"]["services"]["properties"]["host"].is_object());
    // Precise enough for a property-based tester (scripts/schemathesis): request bodies carry
    // the entity's fields, required ones, enums and bounds; creates link to the new entity.
    let create = &doc["paths"]["/services"]["post"];
    let body = &create["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["host"]));
    assert_eq!(body["additionalProperties"], false);
    assert_eq!(body["properties"]["port"]["maximum"], 65535);
    assert!(body["properties"]["protocol"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("grpcs")));
    let created = &create["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/services"
    );
    assert_eq!(
        created["links"]["get_services__services_"]["parameters"]["services"],
        "$response.body#/id"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["name"],
        "Kong-Admin-Token"
    );
    let nested = &doc["paths"]["/services/{services}/routes"]["post"]["requestBody"];
    assert!(nested["content"]["application/json"]["schema"]["properties"]["service"].is_null());

    let (s, nf) = g.get("/no-such-thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(nf, json!({"message": "Not found"}));
}

async fn services_crud_defaults_and_errors(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (s, svc) = g
        .post(
            "/services",
            json!({"name": "billing", "url": "https://billing.internal:8443/v1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(svc["protocol"], "https");
    assert_eq!(svc["host"], "billing.internal");
    assert_eq!(svc["port"], 8443);
    assert_eq!(svc["path"], "/v1");
    assert_eq!(svc["retries"], 5);
    assert_eq!(svc["connect_timeout"], 60000);
    assert_eq!(svc["enabled"], true);
    assert_eq!(svc["tags"], Value::Null);
    assert_eq!(svc["client_certificate"], Value::Null);
    let id = svc["id"].as_str().unwrap();

    assert_eq!(g.get("/services/billing").await.1["id"], id);
    assert_eq!(g.get(&format!("/services/{id}")).await.1["name"], "billing");

    // Missing required field: Kong's schema violation.
    let (s, e) = g.post("/services", json!({"name": "x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 2);
    assert_eq!(e["name"], "schema violation");
    assert_eq!(
        e["message"],
        "schema violation (host: required field missing)"
    );
    assert_eq!(e["fields"]["host"], "required field missing");

    // Several problems at once, unknown fields and wrong types included.
    let (s, e) = g
        .post(
            "/services",
            json!({"host": "a.com", "port": "eighty", "retries": 99999, "bogus": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["message"], "3 schema violations (bogus: unknown field; port: expected an integer; retries: value should be between 0 and 32767)");

    // Unique violation: 409, code 5.
    let (s, e) = g
        .post("/services", json!({"name": "billing", "host": "b.com"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(e["code"], 5);
    assert_eq!(
        e["message"],
        "UNIQUE violation detected on '{name=\"billing\"}'"
    );

    // PATCH changes only what is sent.
    let (s, p) = g.patch("/services/billing", json!({"retries": 2})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["retries"], 2);
    assert_eq!(p["host"], "billing.internal");

    // PUT replaces: fields left out return to their defaults.
    let (s, p) = g
        .put("/services/billing", json!({"host": "new.internal"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["id"], id);
    assert_eq!(p["retries"], 5);
    assert_eq!(p["protocol"], "http");
    assert_eq!(p["path"], Value::Null);

    // PUT by name creates, PUT by a client-chosen uuid creates with that id.
    let (s, p) = g
        .put("/services/fresh", json!({"host": "fresh.internal"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["name"], "fresh");
    let chosen = "0b6ce2ab-68a8-4bd8-9a0f-2f6a3c6e4c11";
    let (s, p) = g
        .put(
            &format!("/services/{chosen}"),
            json!({"host": "c.internal"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["id"], chosen);

    // Missing entities.
    assert_eq!(g.get("/services/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        g.get("/services/6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        g.patch("/services/nope", json!({"retries": 1})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(g.delete("/services/nope").await, StatusCode::NO_CONTENT);
    assert_eq!(g.delete("/services/fresh").await, StatusCode::NO_CONTENT);
    assert_eq!(g.get("/services/fresh").await.0, StatusCode::NOT_FOUND);
}

async fn routes_nested_foreign_keys_and_restrict(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (_, svc) = g
        .post("/services", json!({"name": "s1", "host": "up.internal"}))
        .await;
    let sid = svc["id"].as_str().unwrap();

    let (s, r) = g
        .post(
            "/services/s1/routes",
            json!({"name": "r1", "paths": ["/a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["service"], json!({"id": sid}));
    assert_eq!(r["protocols"], json!(["http", "https"]));
    assert_eq!(r["strip_path"], true);
    assert_eq!(r["https_redirect_status_code"], 426);
    assert_eq!(r["path_handling"], "v0");
    assert_eq!(r["hosts"], Value::Null);

    let (_, list) = g.get("/services/s1/routes").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(g.get("/routes/r1/service").await.1["id"], sid);
    assert_eq!(
        g.call(Method::DELETE, "/routes/r1/service", None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(g.get("/services/s1/routes/r1").await.1["name"], "r1");

    // A route with nothing to match on.
    let (s, e) = g.post("/routes", json!({"service": {"id": sid}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["message"], "schema violation (must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https')");

    // Paths must be normalized and regexes valid.
    let (_, e) = g.post("/routes", json!({"paths": ["/a/../b"]})).await;
    assert_eq!(
        e["fields"]["paths"][0],
        "non-normalized path, consider use '/b' instead"
    );
    let (_, e) = g.post("/routes", json!({"paths": ["~/(unclosed"]})).await;
    assert!(e["fields"]["paths"][0]
        .as_str()
        .unwrap()
        .starts_with("invalid regex"));

    // Dangling foreign key: code 4.
    let (s, e) = g
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"id": "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 4);
    assert_eq!(e["name"], "foreign key violation");

    // A service with routes cannot be deleted (Kong restricts).
    let (s, e) = g.call(Method::DELETE, "/services/s1", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        e["message"],
        "an existing 'routes' entity references this 'services' entity"
    );
    assert_eq!(g.delete("/routes/r1").await, StatusCode::NO_CONTENT);
    assert_eq!(g.delete("/services/s1").await, StatusCode::NO_CONTENT);
}

async fn forms_multipart_and_bad_bodies(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (s, svc) = g
        .form(
            Method::POST,
            "/services",
            &[
                ("name", "f1"),
                ("host", "f.internal"),
                ("port", "8080"),
                ("tags[]", "a"),
                ("tags[]", "b"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(svc["port"], 8080);
    assert_eq!(svc["tags"], json!(["a", "b"]));
    let (s, r) = g
        .form(
            Method::POST,
            "/routes",
            &[
                ("service.id", svc["id"].as_str().unwrap()),
                ("paths[]", "/f"),
                ("methods", "GET"),
                ("strip_path", "false"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["methods"], json!(["GET"]));
    assert_eq!(r["strip_path"], false);

    let form = reqwest::multipart::Form::new()
        .text("username", "mp-user")
        .text("custom_id", "c-1");
    let resp = g
        .client
        .post(format!("{}/consumers", g.admin))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.json::<Value>().await.unwrap()["custom_id"], "c-1");

    let resp = g
        .client
        .post(format!("{}/services", g.admin))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Cannot parse JSON body"
    );

    let big = "x".repeat(11 * 1024 * 1024);
    let resp = g
        .client
        .post(format!("{}/services", g.admin))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Payload too large"
    );

    let (s, e) = g.call(Method::DELETE, "/status", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["message"], "Method not allowed");
    let (s, e) = g.call(Method::PUT, "/services", Some(json!({}))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["message"], "Method not allowed");
    // RFC 9110: a 405 names what the resource does allow; an unknown method on a nested
    // path is refused before the ids in it are looked up.
    for (method, path, allow) in [
        ("TRACE", "/services", "GET, POST, HEAD, OPTIONS"),
        (
            "TRACE",
            "/acls/0/consumer",
            "GET, PUT, PATCH, HEAD, OPTIONS",
        ),
        (
            "POST",
            "/routes/not-a-route",
            "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
        ),
    ] {
        let r = g
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", g.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "Method not allowed"
        );
    }
}

async fn pagination_and_tags(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    for i in 0..25 {
        let tags = if i % 2 == 0 {
            json!(["even", "all"])
        } else {
            json!(["odd", "all"])
        };
        let (s, _) = g
            .post(
                "/consumers",
                json!({"username": format!("user{i}"), "tags": tags}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, p1) = g.get("/consumers?size=10").await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 10);
    let next = p1["next"].as_str().unwrap();
    assert!(next.starts_with("/consumers?offset="));
    assert!(next.contains("size=10"));
    let (_, p2) = g.get(next).await;
    let (_, p3) = g.get(p2["next"].as_str().unwrap()).await;
    assert_eq!(p3["data"].as_array().unwrap().len(), 5);
    assert_eq!(p3["next"], Value::Null);
    assert!(p3.get("offset").is_none());
    let mut ids: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| {
            p["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25);

    // Every store pages the same way: full pages exactly `size` long, no `next` after an
    // exactly full last page, never an entity twice — through tag filters and /tags too.
    for (first, want) in [
        ("/consumers?size=5", vec![5, 5, 5, 5, 5]),
        ("/consumers?tags=odd&size=5", vec![5, 5, 2]),
        ("/consumers?tags=even/odd&size=10", vec![10, 10, 5]),
        ("/consumers?tags=even,all&size=13", vec![13]),
        // Kong's `next` of /tags/{tag} carries no `size`: the rest comes in one page.
        ("/tags/odd?size=4", vec![4, 8]),
    ] {
        let got = pages(&g, first).await;
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(sizes, want, "{first}");
        let ids: HashSet<&str> = got
            .iter()
            .flatten()
            .map(|r| r["id"].as_str().or(r["entity_id"].as_str()).unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            want.iter().sum::<usize>(),
            "{first}: an entity twice"
        );
    }

    let (s, e) = g.get("/consumers?size=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 9);
    assert_eq!(e["message"], "size must be an integer between 1 and 1000");
    let (s, e) = g.get("/consumers?size=abc").await;
    assert_eq!((s, e["code"].clone()), (StatusCode::BAD_REQUEST, json!(9)));
    let (s, e) = g.get("/consumers?offset=garbage!").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 7);

    assert_eq!(
        g.get("/consumers?tags=even,all").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        13
    );
    assert_eq!(
        g.get("/consumers?tags=even/odd").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    let (s, e) = g.get("/consumers?tags=even,all/odd").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 11);
    assert_eq!(e["options"]["tags"], "invalid filter syntax");

    let (_, t) = g.get("/tags/odd").await;
    let rows = t["data"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[0]["entity_name"], "consumers");
    assert_eq!(rows[0]["tag"], "odd");
    let (_, t) = g.get("/tags?size=30").await;
    assert_eq!(t["data"].as_array().unwrap().len(), 30);
    assert!(t["next"].as_str().unwrap().starts_with("/tags?offset="));
}

async fn consumers_credentials_and_cascades(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (s, e) = g.post("/consumers", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["message"], "schema violation (at least one of these fields must be non-empty: 'custom_id', 'username')");
    let (_, c) = g
        .post(
            "/consumers",
            json!({"username": "alice", "custom_id": "A1"}),
        )
        .await;
    let cid = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        g.get("/consumers?custom_id=A1").await.1["data"][0]["id"],
        cid
    );

    let (s, k) = g.post("/consumers/alice/key-auth", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(k["key"].as_str().unwrap().len(), 32);
    assert_eq!(k["consumer"]["id"], cid);
    let (s, k2) = g
        .post("/consumers/alice/key-auth", json!({"key": "secret-key"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(g.get("/key-auths/secret-key").await.1["id"], k2["id"]);
    assert_eq!(
        g.get("/key-auths/secret-key/consumer").await.1["username"],
        "alice"
    );
    let (s, _) = g
        .post("/consumers/alice/key-auth", json!({"key": "secret-key"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, t) = g
        .post(
            "/consumers/alice/key-auth",
            json!({"key": "temp", "ttl": 100}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(t["ttl"].as_i64().unwrap() <= 100);

    // A client-chosen id through PUT, as decK sends credentials.
    let kid = "2f0e7c71-4a41-4c2f-9b0a-0b7a4ad6f3a1";
    let (s, k3) = g
        .put(
            &format!("/consumers/alice/key-auth/{kid}"),
            json!({"key": "deck-key"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{k3}");
    assert_eq!(k3["id"], kid);

    // Passwords are stored hashed (Kong's salted SHA-1), never in clear.
    let (s, b) = g
        .post(
            "/consumers/alice/basic-auth",
            json!({"username": "alice", "password": "hunter2"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(b["password"], "hunter2");
    assert_eq!(b["password"].as_str().unwrap().len(), 40);
    // A PATCH that does not send the password keeps the same hash.
    let (_, b2) = g
        .patch(
            &format!("/basic-auths/{}", b["id"].as_str().unwrap()),
            json!({"tags": ["x"]}),
        )
        .await;
    assert_eq!(b2["password"], b["password"]);

    let (s, a) = g
        .post("/consumers/alice/acls", json!({"group": "admins"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["group"], "admins");
    let (s, _) = g
        .post("/consumers/alice/acls", json!({"group": "admins"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, j) = g.post("/consumers/alice/jwt", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(j["algorithm"], "HS256");
    assert!(j["secret"].as_str().unwrap().len() >= 32);
    let (s, e) = g
        .post("/consumers/alice/jwt", json!({"algorithm": "RS256"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["fields"]["rsa_public_key"], "required field missing");
    let (s, _) = g
        .post(
            "/consumers/alice/hmac-auth",
            json!({"username": "alice-hmac"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // A credential belongs to its consumer: another consumer's path does not see it.
    g.post("/consumers", json!({"username": "bob"})).await;
    assert_eq!(
        g.get("/consumers/bob/key-auth/secret-key").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        g.get("/consumers/alice/key-auth").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Deleting the consumer cascades to every credential.
    assert_eq!(g.delete("/consumers/alice").await, StatusCode::NO_CONTENT);
    assert_eq!(
        g.get("/key-auths/secret-key").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(g.get("/acls").await.1["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        g.get("/basic-auths").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

fn cert_pair(name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

async fn certificates_snis_upstreams_targets_schemas_plugins(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (cert, key) = cert_pair("api.example.com");
    let (s, c) = g
        .post(
            "/certificates",
            json!({"cert": cert, "key": key, "snis": ["api.example.com", "*.example.org"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["snis"], json!(["*.example.org", "api.example.com"]));
    assert_eq!(
        g.get("/snis/api.example.com").await.1["certificate"]["id"],
        c["id"]
    );
    let cid = c["id"].as_str().unwrap();
    assert_eq!(
        g.get(&format!("/certificates/{cid}/snis")).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (_, other_key) = cert_pair("other");
    let (s, e) = g
        .post("/certificates", json!({"cert": cert, "key": other_key}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        e["message"],
        "schema violation (certificate does not match key)"
    );
    let (_, e) = g
        .post("/certificates", json!({"cert": "garbage", "key": key}))
        .await;
    assert!(e["fields"]["cert"]
        .as_str()
        .unwrap()
        .starts_with("invalid certificate"));
    // Deleting the certificate removes its SNIs.
    assert_eq!(
        g.delete(&format!("/certificates/{cid}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        g.get("/snis/api.example.com").await.0,
        StatusCode::NOT_FOUND
    );

    let (s, u) = g.post("/upstreams", json!({"name": "backend.svc"})).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["algorithm"], "round-robin");
    assert_eq!(u["slots"], 10000);
    assert_eq!(
        u["healthchecks"]["active"]["healthy"]["http_statuses"],
        json!([200, 302])
    );
    assert_eq!(
        u["healthchecks"]["passive"]["unhealthy"]["http_statuses"],
        json!([429, 500, 503])
    );
    let (_, e) = g.post("/upstreams", json!({"name": "1.2.3.4"})).await;
    assert_eq!(
        e["fields"]["name"],
        "Invalid name ('1.2.3.4'); no ip addresses allowed"
    );
    let (s, t) = g
        .post(
            "/upstreams/backend.svc/targets",
            json!({"target": "10.0.0.1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["target"], "10.0.0.1:8000");
    assert_eq!(t["weight"], 100);
    assert_eq!(
        g.get("/upstreams/backend.svc/targets/10.0.0.1:8000")
            .await
            .1["id"],
        t["id"]
    );
    let (s, _) = g
        .post(
            "/upstreams/backend.svc/targets",
            json!({"target": "10.0.0.1:8000"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (s, sch) = g.get("/schemas/services").await;
    assert_eq!(s, StatusCode::OK);
    let fields = sch["fields"].as_array().unwrap();
    let retries = fields.iter().find_map(|f| f.get("retries")).unwrap();
    assert_eq!(retries["default"], 5);
    assert_eq!(retries["between"], json!([0, 32767]));
    let (s, e) = g.get("/schemas/nope").await;
    assert_eq!(
        (s, e["message"].clone()),
        (StatusCode::NOT_FOUND, json!("No entity named 'nope'"))
    );
    let (s, v) = g
        .post("/schemas/services/validate", json!({"host": "ok.com"}))
        .await;
    assert_eq!(
        (s, v["message"].clone()),
        (StatusCode::OK, json!("schema validation successful"))
    );
    let (s, v) = g
        .post("/schemas/keyauth_credentials/validate", json!({"key": 1}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["fields"]["key"], "expected a string");

    // A plugin this build does not have may not be created (never fail open).
    let (_, en) = g.get("/plugins/enabled").await;
    assert!(en["enabled_plugins"].is_array());
    let (s, e) = g.post("/plugins", json!({"name": "ldap-auth"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        e["fields"]["name"],
        "plugin 'ldap-auth' not enabled; add it to the 'plugins' configuration property"
    );
    assert_eq!(
        g.get("/schemas/plugins/nope").await.0,
        StatusCode::NOT_FOUND
    );

    // /config belongs to DB-less mode.
    let (s, e) = g.post("/config", json!({"_format_version": "3.0"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        e["message"],
        "this endpoint is only available when Kong is configured to not use a database"
    );
}

async fn foreign_references_by_unique_field(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    // Kong resolves `"service": {"name": …}` (and `service.name=` in forms) to the id.
    let (_, svc) = g
        .post("/services", json!({"name": "billing", "host": "b.example"}))
        .await;
    let (s, r) = g
        .post(
            "/routes",
            json!({"name": "r1", "paths": ["/b"], "service": {"name": "billing"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["service"], json!({"id": svc["id"]}));
    let (s, r) = g
        .form(
            Method::POST,
            "/routes",
            &[("paths[]", "/c"), ("service.name", "billing")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["service"]["id"], svc["id"]);
    let (_, c) = g.post("/consumers", json!({"username": "ann"})).await;
    let (s, p) = g
        .put(
            "/plugins/5b3c1a64-9a51-4c2e-a6a4-0c6c3d8f9e10",
            json!({"name": "key-auth", "service": {"name": "billing"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["service"]["id"], svc["id"]);
    let (s, p) = g
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5},
                   "consumer": {"username": "ann"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["consumer"]["id"], c["id"]);

    let (s, e) = g
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"name": "nope"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], 13);
    assert_eq!(e["name"], "foreign keys unresolved");
    assert_eq!(
        e["message"],
        "foreign key unresolved (service.name: the foreign key cannot be resolved with \
         '{name=\"nope\"}' for an existing 'services' entity)"
    );
    assert_eq!(
        e["fields"]["service"]["name"],
        "the foreign key cannot be resolved with '{name=\"nope\"}' for an existing 'services' entity"
    );
    let (s, e) = g
        .patch("/routes/r1", json!({"service": {"name": "nope"}}))
        .await;
    assert_eq!((s, &e["code"]), (StatusCode::BAD_REQUEST, &json!(13)));
}

crate::on_each_database!(
    root_status_endpoints_and_openapi,
    services_crud_defaults_and_errors,
    routes_nested_foreign_keys_and_restrict,
    forms_multipart_and_bad_bodies,
    pagination_and_tags,
    consumers_credentials_and_cascades,
    certificates_snis_upstreams_targets_schemas_plugins,
    foreign_references_by_unique_field,
);
