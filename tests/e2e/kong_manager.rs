//! What Kong Manager (Kong's admin UI, a browser app) needs from the gateway, checked over
//! real sockets: CORS and preflights on the Admin API, the `GET /` fields it reads, the
//! calls its service pages make, and the GUI listener serving a build with `/kconfig.js`.
//! The browser run against a real build is `scripts/kong-manager-browser` (opt-in).

use crate::support::{free_port, Gateway};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UI: &str = "http://127.0.0.1:8002";

#[tokio::test]
async fn admin_api_answers_cors_like_kong() {
    let g = Gateway::start().await;
    let c = &g.client;

    // A simple GET names the caller's origin and allows credentials.
    let r = c
        .get(format!("{}/services", g.admin))
        .header("origin", UI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], UI);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    // Without an Origin: `*`. Errors carry the headers too.
    let r = c
        .get(format!("{}/services/nope", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // Preflights: 204 with the route's methods, the requested headers echoed.
    for (path, methods) in [
        ("/services", "GET, HEAD, OPTIONS, POST"),
        ("/services/abc", "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
        ("/services/abc/routes", "GET, HEAD, OPTIONS, POST"),
        ("/", "GET, HEAD, OPTIONS"),
        ("/schemas/plugins/key-auth", "GET, HEAD, OPTIONS"),
    ] {
        let r = c
            .request(Method::OPTIONS, format!("{}{path}", g.admin))
            .header("origin", UI)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-custom")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        let h = r.headers();
        assert_eq!(h["allow"], methods, "{path}");
        assert_eq!(h["access-control-allow-methods"], methods, "{path}");
        assert_eq!(h["access-control-allow-headers"], "content-type,x-custom");
        assert_eq!(h["access-control-allow-origin"], UI);
        assert_eq!(h["access-control-allow-credentials"], "true");
    }
    let r = c
        .request(Method::OPTIONS, format!("{}/services", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-headers"], "Content-Type");
    let r = c
        .request(Method::OPTIONS, format!("{}/no/such/admin/route", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // HEAD works wherever GET does.
    let r = c
        .head(format!("{}/services", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_gui_url_pins_the_allowed_origin() {
    let g = Gateway::start_with(&[(
        "TOLLGATE_ADMIN_GUI_URL",
        "http://gui.example:8002/manager, https://other.example",
    )])
    .await;
    for (origin, allowed) in [
        ("http://evil.example", "http://gui.example:8002"),
        ("https://other.example", "https://other.example"),
        ("http://gui.example:8002", "http://gui.example:8002"),
    ] {
        let r = g
            .client
            .get(format!("{}/", g.admin))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], allowed);
    }
}

#[tokio::test]
async fn root_and_service_pages_give_kong_manager_what_it_reads() {
    let g = Gateway::start().await;
    let (s, root) = g.get("/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(root["version"].as_str().unwrap().starts_with("3.9."));
    assert_eq!(root["edition"], "community");
    assert!(root["hostname"].is_string());
    assert!(root["plugins"]["available_on_server"]["key-auth"]["priority"].is_number());
    assert!(root["plugins"]["enabled_in_cluster"].is_array());
    let conf = &root["configuration"];
    assert!(conf["admin_listen"][0].is_string());
    assert!(conf["admin_gui_listeners"].is_array());
    let proxy = &conf["proxy_listeners"][0];
    assert!(proxy["port"].is_number() && proxy["ssl"].is_boolean());
    for k in ["database", "role", "router_flavor"] {
        assert!(conf[k].is_string(), "configuration.{k}");
    }
    // decK decodes these two with fixed JSON types when `configuration` is present.
    assert_eq!(conf["portal"], false);
    assert_eq!(conf["rbac"], "off");

    // The service form's body: url plus port and explicit nulls; the url's port wins,
    // as in Kong (the shorthand's values take precedence).
    let (s, svc) = g
        .post(
            "/services",
            json!({
                "name": "km-svc", "url": "http://upstream.example:8080/api", "port": 80,
                "retries": 5, "connect_timeout": 60000, "read_timeout": 60000,
                "write_timeout": 60000, "enabled": true, "tags": null,
                "ca_certificates": null, "client_certificate": null
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(svc["host"], "upstream.example");
    assert_eq!(svc["port"], 8080);
    assert_eq!(svc["path"], "/api");
    assert_eq!(svc["tags"], Value::Null);
    let id = svc["id"].as_str().unwrap();

    // Lists as the UI asks for them; lookup by name or id; nested lists.
    let (s, list) = g.get("/services?sort_desc=1&size=30").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], id);
    let (s, _) = g.get("/services?size=1000").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g.get("/services/km-svc").await.1["id"], id);
    assert_eq!(g.get(&format!("/services/{id}")).await.1["name"], "km-svc");
    let (s, r) = g
        .post(
            &format!("/services/{id}/routes"),
            json!({"name": "km-route", "paths": ["/km"], "tags": null}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (_, routes) = g
        .get(&format!("/services/{id}/routes?sort_desc=1&size=30"))
        .await;
    assert_eq!(routes["data"][0]["name"], "km-route");
    // Unset arrays are null, as Kong returns them, and the traditional router's routes
    // carry no expressions-router fields (decK compares them field by field).
    let route = &routes["data"][0];
    for k in [
        "hosts",
        "methods",
        "headers",
        "snis",
        "sources",
        "destinations",
        "tags",
    ] {
        assert_eq!(route[k], Value::Null, "{k}");
    }
    assert!(route.get("expression").is_none() && route.get("priority").is_none());
    let (s, _) = g
        .get(&format!("/services/{id}/plugins?sort_desc=1&size=30"))
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, p) = g
        .patch(&format!("/services/{id}"), json!({"retries": 2}))
        .await;
    assert_eq!((s, &p["retries"]), (StatusCode::OK, &json!(2)));
    let (s, schema) = g.get("/schemas/plugins/key-auth").await;
    assert_eq!(s, StatusCode::OK);
    assert!(schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["config"]["type"] == "record"));
    let (s, _) = g.get("/schemas/services").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g.delete("/routes/km-route").await, StatusCode::NO_CONTENT);
    assert_eq!(
        g.delete(&format!("/services/{id}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(g.get("/services/km-svc").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gui_listener_serves_a_build_with_kconfig() {
    let build = tempfile::tempdir().unwrap();
    std::fs::write(
        build.path().join("index.html"),
        "<html><script src=\"/__km_base__/kconfig.js\"></script>app</html>",
    )
    .unwrap();
    std::fs::create_dir(build.path().join("assets")).unwrap();
    std::fs::write(build.path().join("assets/app.js"), "load('/__km_base__/x')").unwrap();
    std::fs::write(
        build.path().join("assets/logo.png"),
        [0x89u8, b'P', b'N', b'G'],
    )
    .unwrap();

    let port = free_port();
    let g = Gateway::start_with(&[
        ("TOLLGATE_ADMIN_GUI_LISTEN", &format!("127.0.0.1:{port}")),
        ("TOLLGATE_ADMIN_GUI_DIR", build.path().to_str().unwrap()),
        ("TOLLGATE_ADMIN_GUI_PATH", "/manager"),
    ])
    .await;
    let ui = format!("http://127.0.0.1:{port}");
    let admin_port = g.admin.rsplit(':').next().unwrap().to_string();
    let get = |p: &str| g.client.get(format!("{ui}{p}")).send();

    let r = get("/manager/kconfig.js").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    let k = r.text().await.unwrap();
    assert!(k.starts_with("window.K_CONFIG = {"), "{k}");
    assert!(
        k.contains(&format!("'ADMIN_API_PORT': '{admin_port}'")),
        "{k}"
    );
    assert!(k.contains("'ADMIN_GUI_PATH': '/manager'"), "{k}");

    // The app's own routes fall back to index.html, with the base path filled in.
    for p in ["/manager", "/manager/", "/manager/services/create"] {
        let r = get(p).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
        assert_eq!(
            r.text().await.unwrap(),
            "<html><script src=\"/manager/kconfig.js\"></script>app</html>"
        );
    }
    let r = get("/manager/assets/app.js").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "load('/manager/x')");
    let r = get("/manager/assets/logo.png").await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().len(), 4);
    assert_eq!(
        get("/elsewhere").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = get("/manager/..%2f..%2fetc/passwd").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_named_gui_dir_must_hold_a_build() {
    let empty = tempfile::tempdir().unwrap();
    let prefix = tempfile::tempdir().unwrap();
    let out = crate::support::command(prefix.path())
        .arg("start")
        .env(
            "TOLLGATE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "TOLLGATE_PROXY_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("TOLLGATE_STATUS_LISTEN", "off")
        .env("TOLLGATE_ADMIN_GUI_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_gui_dir"), "{err}");
}
