//! normalize_path and upstream_path tests, including Kong's
//! `spec/fixtures/router_path_handling_tests.lua` table (ported verbatim).

use std::borrow::Cow;

use tollgate_router::PathHandling::{V0, V1};
use tollgate_router::*;

#[test]
fn normalize_cases() {
    let cases: &[(&str, &str)] = &[
        ("", ""),
        ("/", "/"),
        ("/a/b/c", "/a/b/c"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/../../c", "/c"),
        ("/../a", "/a"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("/.", "/"),
        ("/..", "/"),
        (".", ""),
        ("..", ""),
        ("./a", "a"),
        ("../a", "a"),
        ("//a//b///c", "/a/b/c"),
        ("/a//b", "/a/b"),
        ("/.hidden", "/.hidden"),
        ("/a/..b", "/a/..b"),
        ("/route./req", "/route./req"),
        ("/route../req", "/route../req"),
        // percent-decoding of unreserved / other characters
        ("/%61%62%63", "/abc"),
        ("/%7e", "/~"),
        ("/%20x", "/ x"),
        ("/route%2E/req", "/route./req"),
        ("/route%2e%2E/req", "/route../req"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E/b", "/a/b"),
        // reserved characters stay encoded, upper-cased
        ("/a%2fb", "/a%2Fb"),
        ("/a%2Fb", "/a%2Fb"),
        ("/a%3fb%3Db", "/a%3Fb%3Db"),
        ("/%25", "/%25"),
        ("/%2541", "/%2541"), // single pass: no double decoding
        // invalid escapes are left alone
        ("/%zz", "/%zz"),
        ("/%4", "/%4"),
        ("/%", "/%"),
        // non-ASCII
        ("/%C3%A9t%C3%A9", "/été"),
        ("/%FF", "/%FF"), // invalid UTF-8 stays encoded
        // if the decoded bytes are not UTF-8, all non-ASCII escapes stay encoded
        ("/caf%c3%a9/%ff", "/caf%C3%A9/%FF"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw), *want, "normalize({raw:?})");
    }
    assert!(matches!(
        normalize_path("/already/normal"),
        Cow::Borrowed(_)
    ));
    assert!(matches!(normalize_path("/with.dot/x"), Cow::Borrowed(_)));
    assert!(matches!(normalize_path("/a%2Fb"), Cow::Borrowed(_)));
    assert!(matches!(normalize_path("/a/./b"), Cow::Owned(_)));
}

#[test]
fn upstream_examples_from_brief() {
    assert_eq!(upstream_path(Some("/s"), "/r/x", 2, true, V0), "/s/x");
    assert_eq!(upstream_path(Some("/s"), "/rx", 2, true, V0), "/s/x");
    assert_eq!(upstream_path(Some("/s"), "/r", 2, true, V0), "/s");
    assert_eq!(upstream_path(Some("/s/"), "/r/x", 2, false, V0), "/s/r/x");
    assert_eq!(upstream_path(Some("/s"), "/rx", 2, true, V1), "/sx");
    assert_eq!(upstream_path(None, "/r/x", 2, true, V0), "/x");
    assert_eq!(upstream_path(None, "/r/x", 0, true, V0), "/r/x");
    assert_eq!(upstream_path(Some("/s"), "/", 0, false, V0), "/s");
    assert_eq!(sanitize_uri_postfix("../x"), "x");
    assert_eq!(sanitize_uri_postfix(".."), "");
    assert_eq!(PathHandling::parse("v1"), Some(V1));
}

type Row = (
    &'static str,
    Option<&'static str>,
    &'static [bool],
    &'static [PathHandling],
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const KONG_PATH_HANDLING: &[Row] = &[
    ("/", Some("/"), &[false, true], &[V0, V1], "/", "/"),
    ("/", Some("/"), &[false, true], &[V0, V1], "/route", "/route"),
    ("/", Some("/"), &[false, true], &[V0, V1], "/route/", "/route/"),
    ("/", Some("/"), &[false, true], &[V0, V1], "/routereq", "/routereq"),
    ("/", Some("/"), &[false, true], &[V0, V1], "/route/req", "/route/req"),
    ("/", Some("/route"), &[false], &[V0, V1], "/route", "/route"),
    ("/", Some("/route"), &[false], &[V0, V1], "/route/", "/route/"),
    ("/", Some("/route"), &[false], &[V0, V1], "/routereq", "/routereq"),
    ("/", Some("/route"), &[true], &[V0, V1], "/route", "/"),
    ("/", Some("/route"), &[true], &[V0, V1], "/route/", "/"),
    ("/", Some("/route"), &[true], &[V0, V1], "/routereq", "/req"),
    ("/", Some("/route/"), &[false], &[V0, V1], "/route/", "/route/"),
    ("/", Some("/route/"), &[false], &[V0, V1], "/route/req", "/route/req"),
    ("/", Some("/route/"), &[true], &[V0, V1], "/route/", "/"),
    ("/", Some("/route/"), &[true], &[V0, V1], "/route/req", "/req"),
    ("/srv", Some("/rou"), &[false], &[V0], "/roureq", "/srv/roureq"),
    ("/srv", Some("/rou"), &[false], &[V1], "/roureq", "/srvroureq"),
    ("/srv", Some("/rou"), &[true], &[V0], "/roureq", "/srv/req"),
    ("/srv", Some("/rou"), &[true], &[V1], "/roureq", "/srvreq"),
    ("/srv/", Some("/rou"), &[false], &[V0, V1], "/rou", "/srv/rou"),
    ("/srv/", Some("/rou"), &[true], &[V0], "/rou", "/srv"),
    ("/srv/", Some("/rou"), &[true], &[V1], "/rou", "/srv/"),
    ("/service", Some("/"), &[false, true], &[V0, V1], "/", "/service"),
    ("/service", Some("/"), &[false, true], &[V0], "/route", "/service/route"),
    ("/service", Some("/"), &[false, true], &[V1], "/route", "/serviceroute"),
    ("/service", Some("/"), &[false, true], &[V0], "/route/", "/service/route/"),
    ("/service", Some("/"), &[false, true], &[V1], "/route/", "/serviceroute/"),
    ("/service", Some("/"), &[false, true], &[V0], "/routereq", "/service/routereq"),
    ("/service", Some("/"), &[false, true], &[V1], "/routereq", "/serviceroutereq"),
    ("/service", Some("/"), &[false, true], &[V0], "/route/req", "/service/route/req"),
    ("/service", Some("/"), &[false, true], &[V1], "/route/req", "/serviceroute/req"),
    ("/service", Some("/route"), &[false], &[V0], "/route", "/service/route"),
    ("/service", Some("/route"), &[false], &[V1], "/route", "/serviceroute"),
    ("/service", Some("/route"), &[false], &[V0], "/route/", "/service/route/"),
    ("/service", Some("/route"), &[false], &[V1], "/route/", "/serviceroute/"),
    ("/service", Some("/route"), &[false], &[V0], "/routereq", "/service/routereq"),
    ("/service", Some("/route"), &[false], &[V1], "/routereq", "/serviceroutereq"),
    ("/service", Some("/route"), &[true], &[V0, V1], "/route", "/service"),
    ("/service", Some("/route"), &[true], &[V0, V1], "/route/", "/service/"),
    ("/service", Some("/route"), &[true], &[V0], "/routereq", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/routereq", "/servicereq"),
    ("/service", Some("/route/"), &[false], &[V0], "/route/", "/service/route/"),
    ("/service", Some("/route/"), &[false], &[V1], "/route/", "/serviceroute/"),
    ("/service", Some("/route/"), &[false], &[V0], "/route/req", "/service/route/req"),
    ("/service", Some("/route/"), &[false], &[V1], "/route/req", "/serviceroute/req"),
    ("/service", Some("/route/"), &[true], &[V0], "/route/", "/service/"),
    ("/service", Some("/route/"), &[true], &[V1], "/route/", "/service"),
    ("/service", Some("/route/"), &[true], &[V0], "/route/req", "/service/req"),
    ("/service", Some("/route/"), &[true], &[V1], "/route/req", "/servicereq"),
    ("/service/", Some("/"), &[false, true], &[V0], "/route/", "/service/route/"),
    ("/service/", Some("/"), &[false, true], &[V1], "/route/", "/service/route/"),
    ("/service/", Some("/"), &[false, true], &[V0, V1], "/", "/service/"),
    ("/service/", Some("/"), &[false, true], &[V0, V1], "/route", "/service/route"),
    ("/service/", Some("/"), &[false, true], &[V0, V1], "/routereq", "/service/routereq"),
    ("/service/", Some("/"), &[false, true], &[V0, V1], "/route/req", "/service/route/req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route", "/service/route"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route/", "/service/route/"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/routereq", "/service/routereq"),
    ("/service/", Some("/route"), &[true], &[V0], "/route", "/service"),
    ("/service/", Some("/route"), &[true], &[V1], "/route", "/service/"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route/", "/service/"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/routereq", "/service/req"),
    ("/service/", Some("/route/"), &[false], &[V0, V1], "/route/", "/service/route/"),
    ("/service/", Some("/route/"), &[false], &[V0, V1], "/route/req", "/service/route/req"),
    ("/service/", Some("/route/"), &[true], &[V0, V1], "/route/", "/service/"),
    ("/service/", Some("/route/"), &[true], &[V0, V1], "/route/req", "/service/req"),
    ("/", None, &[false, true], &[V0, V1], "/", "/"),
    ("/", None, &[false, true], &[V0, V1], "/route", "/route"),
    ("/", None, &[false, true], &[V0, V1], "/route/", "/route/"),
    ("/service", None, &[false, true], &[V0, V1], "/", "/service"),
    ("/service", None, &[false, true], &[V0], "/route", "/service/route"),
    ("/service", None, &[false, true], &[V1], "/route", "/serviceroute"),
    ("/service", None, &[false, true], &[V0], "/route/", "/service/route/"),
    ("/service", None, &[false, true], &[V1], "/route/", "/serviceroute/"),
    ("/service/", None, &[false, true], &[V0, V1], "/", "/service/"),
    ("/service/", None, &[false, true], &[V0, V1], "/route", "/service/route"),
    ("/service/", None, &[false, true], &[V0, V1], "/route/", "/service/route/"),
    ("/service", Some("/route"), &[true], &[V0], "/route./req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route./req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route./req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V0], "/route%2E/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route%2E/req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route%2E/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V0], "/route%2e/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route%2e/req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route%2e/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V0], "/route../req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route../req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route../req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V0], "/route%2E%2E/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route%2E%2E/req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route%2E%2E/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V0], "/route%2e%2E/req", "/service/req"),
    ("/service", Some("/route"), &[true], &[V1], "/route%2e%2E/req", "/servicereq"),
    ("/service/", Some("/route"), &[true], &[V0, V1], "/route%2e%2E/req", "/service/req"),
    ("/service", Some("/route"), &[false], &[V0], "/route./req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V1], "/route./req", "/serviceroute./req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route./req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V0], "/route%2E/req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V1], "/route%2E/req", "/serviceroute./req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route%2E/req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V0], "/route%2e/req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V1], "/route%2e/req", "/serviceroute./req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route%2e/req", "/service/route./req"),
    ("/service", Some("/route"), &[false], &[V0], "/route../req", "/service/route../req"),
    ("/service", Some("/route"), &[false], &[V1], "/route../req", "/serviceroute../req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route../req", "/service/route../req"),
    ("/service", Some("/route"), &[false], &[V0], "/route%2E%2E/req", "/service/route../req"),
    ("/service", Some("/route"), &[false], &[V1], "/route%2E%2E/req", "/serviceroute../req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route%2E%2E/req", "/service/route../req"),
    ("/service", Some("/route"), &[false], &[V0], "/route%2e%2E/req", "/service/route../req"),
    ("/service", Some("/route"), &[false], &[V1], "/route%2e%2E/req", "/serviceroute../req"),
    ("/service/", Some("/route"), &[false], &[V0, V1], "/route%2e%2E/req", "/service/route../req"),
];

fn route(id: String, host: &str, paths: Vec<String>) -> RouteSpec {
    RouteSpec {
        id,
        protocols: vec!["http".into()],
        hosts: vec![host.to_owned()],
        paths,
        ..Default::default()
    }
}

fn run(router: &Router, host: &str, raw_path: &str) -> (usize, String) {
    let path = normalize_path(raw_path);
    let req = RequestInfo {
        scheme: "http",
        method: "GET",
        host,
        port: 80,
        path: &path,
        sni: None,
        headers: &no_headers,
    };
    let m = router.find(&req).expect("route matches");
    (m.prefix_len, path.into_owned())
}

/// Every row of Kong's fixture, for the plain path (or host-only) route,
/// through the router (normalization + prefix_len) and `upstream_path`.
#[test]
fn kong_path_handling_fixture_plain() {
    let mut n = 0;
    for (i, &(service, route_path, strips, handlings, req, want)) in
        KONG_PATH_HANDLING.iter().enumerate()
    {
        for &strip in strips {
            for &ph in handlings {
                let host = format!("localbin-{i}.com");
                let paths = route_path.map(|p| vec![p.to_owned()]).unwrap_or_default();
                let router = Router::build(&[route(format!("r{i}"), &host, paths)]).unwrap();
                let (prefix_len, path) = run(&router, &host, req);
                let got = upstream_path(Some(service), &path, prefix_len, strip, ph);
                assert_eq!(
                    got,
                    want,
                    "row {}: service={service} route={route_path:?} strip={strip} {ph:?} req={req}",
                    i + 1
                );
                n += 1;
            }
        }
    }
    assert!(n > 150, "{n}");
}

/// Same table with the route path turned into a regex (`~/[0]?route`), as in
/// Kong's spec: Kong strips the whole regex match.
#[test]
fn kong_path_handling_fixture_regex() {
    for (i, &(service, route_path, strips, handlings, req, want)) in
        KONG_PATH_HANDLING.iter().enumerate()
    {
        let Some(route_path) = route_path else {
            continue;
        };
        let regex = format!("~/[0]?{}", &route_path[1..]);
        for &strip in strips {
            for &ph in handlings {
                let host = format!("localbin-{i}.com");
                let router =
                    Router::build(&[route(format!("r{i}"), &host, vec![regex.clone()])]).unwrap();
                let (prefix_len, path) = run(&router, &host, req);
                let got = upstream_path(Some(service), &path, prefix_len, strip, ph);
                assert_eq!(
                    got,
                    want,
                    "row {}: service={service} route={regex} strip={strip} {ph:?} req={req}",
                    i + 1
                );
            }
        }
    }
}
