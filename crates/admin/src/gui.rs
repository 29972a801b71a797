//! Serves a Kong Manager build on `admin_gui_listen`, as Kong serves its bundled copy
//! (`kong/templates/nginx_kong_gui_include.lua`): static files under `admin_gui_path`, any
//! other path answered with `index.html` (the app routes in the browser), a generated
//! `/kconfig.js` telling the app where the Admin API is, and the `/__km_base__/` placeholder
//! of the build replaced by the GUI's base path.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Where the build is and how it is exposed.
#[derive(Clone, Debug)]
pub struct GuiConfig {
    /// The build's directory (Kong Manager's `dist/`, Kong's `<prefix>/gui`).
    pub dir: PathBuf,
    /// `admin_gui_path`: `/` or a path like `/manager`.
    pub base_path: String,
    /// The body of `/kconfig.js`, see [`kconfig_js`].
    pub kconfig: String,
}

/// `window.K_CONFIG` as Kong generates it (`kong/admin_gui/init.lua` `generate_kconfig`):
/// the app uses `ADMIN_API_URL` when set, else the page's host with `ADMIN_API_PORT` (or
/// `ADMIN_API_SSL_PORT`).
pub fn kconfig_js(
    gui_path: &str,
    api_url: &str,
    api_port: Option<u16>,
    api_ssl_port: Option<u16>,
) -> String {
    let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
    let entries = [
        ("ADMIN_GUI_PATH", gui_path.to_string()),
        ("ADMIN_API_URL", api_url.to_string()),
        ("ADMIN_API_PORT", port(api_port)),
        ("ADMIN_API_SSL_PORT", port(api_ssl_port)),
        // Tollgate never phones home, whatever anonymous_reports says.
        ("ANONYMOUS_REPORTS", "false".to_string()),
    ];
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            format!(
                "  '{k}': '{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            )
        })
        .collect();
    format!("window.K_CONFIG = {{\n{}\n}}\n", body.join(",\n"))
}

pub fn router(cfg: GuiConfig) -> Router {
    Router::new().fallback(serve).with_state(Arc::new(cfg))
}

/// The path under the GUI's base, or `None` when the request is outside it.
fn relative<'a>(base: &str, path: &'a str) -> Option<&'a str> {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(base) {
        Some("") => Some("/"),
        Some(rest) if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// A file inside `dir` for a URL path; `None` for anything that could step outside it.
fn file_in(dir: &Path, rel: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rel)
        .decode_utf8()
        .ok()?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(rel))
}

fn content_type(p: &Path) -> (&'static str, bool) {
    // (MIME type, whether the file is text in which the base placeholder is replaced)
    match p.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => ("text/html; charset=utf-8", true),
        "js" | "mjs" => ("application/javascript; charset=utf-8", true),
        "css" => ("text/css; charset=utf-8", true),
        "json" | "map" => ("application/json", true),
        "svg" => ("image/svg+xml", true),
        "txt" => ("text/plain; charset=utf-8", true),
        "png" => ("image/png", false),
        "jpg" | "jpeg" => ("image/jpeg", false),
        "gif" => ("image/gif", false),
        "ico" => ("image/x-icon", false),
        "woff" => ("font/woff", false),
        "woff2" => ("font/woff2", false),
        "ttf" => ("font/ttf", false),
        "wasm" => ("application/wasm", false),
        _ => ("application/octet-stream", false),
    }
}

fn with_headers(mut r: Response, content_type: &'static str, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert("x-frame-options", HeaderValue::from_static("sameorigin"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "referrer-policy",
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    r
}

async fn serve(State(cfg): State<Arc<GuiConfig>>, uri: Uri) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "Not Found").into_response();
    let Some(rel) = relative(&cfg.base_path, uri.path()) else {
        return not_found();
    };
    match rel {
        "/robots.txt" => {
            let r = "User-agent: *\nDisallow: /".into_response();
            return with_headers(r, "text/plain; charset=utf-8", "no-cache");
        }
        "/kconfig.js" => {
            let r = cfg.kconfig.clone().into_response();
            return with_headers(r, "application/javascript; charset=utf-8", "no-cache");
        }
        _ => {}
    }
    let Some(wanted) = file_in(&cfg.dir, rel) else {
        return not_found();
    };
    // try_files $path /index.html: unknown paths are the app's own routes.
    let is_asset = tokio::fs::metadata(&wanted)
        .await
        .is_ok_and(|m| m.is_file());
    let path = if is_asset {
        wanted
    } else {
        cfg.dir.join("index.html")
    };
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return not_found();
    };
    let (ctype, text) = content_type(&path);
    let body = if text {
        let base = format!("{}/", cfg.base_path.trim_end_matches('/'));
        let s = String::from_utf8_lossy(&bytes);
        if s.contains("/__km_base__/") {
            s.replace("/__km_base__/", &base).into_bytes()
        } else {
            bytes
        }
    } else {
        bytes
    };
    let cache = if is_asset && !path.ends_with("index.html") {
        "public, max-age=7776000"
    } else {
        "no-store, no-cache, must-revalidate, proxy-revalidate, max-age=0"
    };
    with_headers(body.into_response(), ctype, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_build() {
        let d = Path::new("/srv/gui");
        assert_eq!(
            file_in(d, "/assets/a.js"),
            Some(PathBuf::from("/srv/gui/assets/a.js"))
        );
        assert_eq!(file_in(d, "/../etc/passwd"), None);
        assert_eq!(file_in(d, "/a/%2e%2e/%2e%2e/etc/passwd"), None);
        assert_eq!(relative("/", "/services"), Some("/services"));
        assert_eq!(relative("/manager", "/manager"), Some("/"));
        assert_eq!(relative("/manager/", "/manager/x"), Some("/x"));
        assert_eq!(relative("/manager", "/managerx"), None);
    }

    #[test]
    fn kconfig_names_the_admin_api() {
        let k = kconfig_js("/", "http://127.0.0.1:8001", Some(8001), None);
        assert!(k.starts_with("window.K_CONFIG = {\n"));
        assert!(k.contains("'ADMIN_API_URL': 'http://127.0.0.1:8001'"));
        assert!(k.contains("'ADMIN_API_PORT': '8001'"));
        assert!(k.contains("'ADMIN_API_SSL_PORT': ''"));
        assert!(kconfig_js("/", "a'b", None, None).contains("'a\\'b'"));
    }
}
