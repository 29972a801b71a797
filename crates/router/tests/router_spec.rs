//! Route selection tests, largely ported from Kong's
//! `spec/01-unit/08-router_spec.lua` (traditional_compatible expectations).

use tollgate_router::*;

#[derive(Clone, Default)]
struct R(RouteSpec);

impl R {
    fn new(id: &str) -> R {
        R(RouteSpec {
            id: id.to_owned(),
            protocols: vec!["http".into(), "https".into()],
            ..Default::default()
        })
    }
    fn hosts(mut self, v: &[&str]) -> R {
        self.0.hosts = v.iter().map(|s| s.to_string()).collect();
        self
    }
    fn paths(mut self, v: &[&str]) -> R {
        self.0.paths = v.iter().map(|s| s.to_string()).collect();
        self
    }
    fn methods(mut self, v: &[&str]) -> R {
        self.0.methods = v.iter().map(|s| s.to_string()).collect();
        self
    }
    fn snis(mut self, v: &[&str]) -> R {
        self.0.snis = v.iter().map(|s| s.to_string()).collect();
        self
    }
    fn header(mut self, name: &str, vals: &[&str]) -> R {
        self.0.headers.push((
            name.to_owned(),
            vals.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }
    fn regex_priority(mut self, p: i64) -> R {
        self.0.regex_priority = p;
        self
    }
    fn created_at(mut self, t: i64) -> R {
        self.0.created_at = t;
        self
    }
    fn protocols(mut self, v: &[&str]) -> R {
        self.0.protocols = v.iter().map(|s| s.to_string()).collect();
        self
    }
}

fn build(rs: &[R]) -> Router {
    let specs: Vec<RouteSpec> = rs.iter().map(|r| r.0.clone()).collect();
    Router::build(&specs).expect("router builds")
}

/// A request. `host` may contain ":port" like a Host header; the port defaults
/// to 80 (http) / 443 (https) like the listener port.
#[derive(Clone)]
struct Q<'a> {
    method: &'a str,
    path: &'a str,
    host: &'a str,
    scheme: &'a str,
    sni: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
}

fn q<'a>(method: &'a str, path: &'a str, host: &'a str) -> Q<'a> {
    Q {
        method,
        path,
        host,
        scheme: "http",
        sni: None,
        headers: vec![],
    }
}

impl<'a> Q<'a> {
    fn h(mut self, name: &'a str, v: &'a str) -> Q<'a> {
        self.headers.push((name, v));
        self
    }
    fn https(mut self, sni: Option<&'a str>) -> Q<'a> {
        self.scheme = "https";
        self.sni = sni;
        self
    }
}

fn with_match<T>(router: &Router, q: &Q<'_>, f: impl FnOnce(Option<Match<'_>>) -> T) -> T {
    let (host, port) = match q.host.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap()),
        None => (q.host, if q.scheme == "https" { 443 } else { 80 }),
    };
    let path = normalize_path(q.path);
    let hs = q.headers.clone();
    let lookup = move |name: &str| hs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let req = RequestInfo {
        scheme: q.scheme,
        method: q.method,
        host,
        port,
        path: &path,
        sni: q.sni,
        headers: &lookup,
    };
    f(router.find(&req))
}

fn winner(router: &Router, q: &Q<'_>) -> Option<String> {
    with_match(router, q, |m| m.map(|m| m.route_id.to_owned()))
}

const ID: &str = "e8fb37f1-102d-461e-9c51-6608a6bb81";
fn id(n: u32) -> String {
    format!("{ID}{n:02}")
}

fn kong_use_case() -> Vec<R> {
    vec![
        R::new(&id(1)).hosts(&["domain-1.org", "domain-2.org"]),
        R::new(&id(2)).methods(&["TRACE"]),
        R::new(&id(3)).paths(&["/my-route"]),
        R::new(&id(4))
            .paths(&["/route-4"])
            .hosts(&["domain-1.org", "domain-2.org"]),
        R::new(&id(5))
            .hosts(&["domain-1.org", "domain-2.org"])
            .methods(&["POST", "PUT", "PATCH"]),
        R::new(&id(6))
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/route-6"]),
        R::new(&id(7))
            .hosts(&["domain-with-uri-1.org", "domain-with-uri-2.org"])
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/my-route-uri"]),
        R::new(&id(8)).paths(&["/serviceless"]),
        R::new(&id(9)).header("location", &["my-location-1", "my-location-2"]),
        R::new(&id(10))
            .header("location", &["my-location-1"])
            .header("version", &["v1", "v2"]),
        R::new(&id(11))
            .header("location", &["my-location-1", "my-location-2"])
            .paths(&["/headers-uri"]),
        R::new(&id(12))
            .hosts(&["domain-with-headers-1.org", "domain-with-headers-2.org"])
            .header("location", &["my-location-1", "my-location-2"])
            .methods(&["POST", "PUT", "PATCH"])
            .paths(&["/headers-host-uri-method"]),
        R::new(&id(13)).hosts(&["domain-1.org:321", "domain-2.org"]),
        R::new(&id(14)).hosts(&["domain-3.org:321"]),
        R::new(&id(15)).header(
            "user_agent",
            &[r"~*windows|linux|os\s+x\s*[\d\._]+|solaris|bsd"],
        ),
    ]
}

#[test]
fn kong_select_use_case() {
    let router = build(&kong_use_case());
    assert_eq!(router.len(), 15);
    let cases: Vec<(Q, Option<u32>)> = vec![
        (q("GET", "/", "domain-1.org"), Some(1)),
        // [host] ignores default port
        (q("GET", "/", "domain-1.org:80"), Some(1)),
        // [host] matches specific port
        (q("GET", "/", "domain-1.org:321"), Some(13)),
        // port-only route
        (q("GET", "/", "domain-3.org:321"), Some(14)),
        (q("GET", "/", "domain-3.org:123"), None),
        // [uri]
        (q("GET", "/my-route", "domain.org"), Some(3)),
        // [uri + empty host]
        (q("GET", "/my-route-uri", ""), Some(3)),
        // [method]
        (q("TRACE", "/", "domain.org"), Some(2)),
        // [host + uri]
        (q("GET", "/route-4", "domain-1.org"), Some(4)),
        // [host + method]
        (q("POST", "/", "domain-1.org"), Some(5)),
        // [uri + method]
        (q("PUT", "/route-6", "domain.org"), Some(6)),
        // [host + uri + method]
        (q("PUT", "/my-route-uri", "domain-with-uri-2.org"), Some(7)),
        // single [headers] value
        (q("GET", "/", "").h("location", "my-location-1"), Some(9)),
        (q("GET", "/", "").h("location", "my-location-2"), Some(9)),
        (q("GET", "/", "").h("location", "my-location-3"), None),
        // header regex, header name given with '_' in the route
        (
            q("GET", "/", "").h(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
            ),
            Some(15),
        ),
        // multiple [headers] values
        (
            q("GET", "/", "")
                .h("location", "my-location-1")
                .h("version", "v1"),
            Some(10),
        ),
        (
            q("GET", "/", "")
                .h("location", "my-location-1")
                .h("version", "v2"),
            Some(10),
        ),
        (
            q("GET", "/", "")
                .h("location", "my-location-2")
                .h("version", "v2"),
            Some(9),
        ),
        // [headers + uri]
        (
            q("GET", "/headers-uri", "").h("location", "my-location-2"),
            Some(11),
        ),
        // [host + headers + uri + method]
        (
            q(
                "PUT",
                "/headers-host-uri-method",
                "domain-with-headers-1.org",
            )
            .h("location", "my-location-2"),
            Some(12),
        ),
        // [serviceless]
        (q("GET", "/serviceless", ""), Some(8)),
        // misses
        (q("GET", "/", "domain-4.org"), None),
        (q("GET", "/", "domain-4.org"), None),
        (
            q("GET", "/my-route-uri", "domain-with-uri-3.org").h("x", "y"),
            Some(3),
        ),
        (q("GET", "/", "").h("location", "nope"), None),
        // does not match when given [uri] is in URI but not in prefix
        (q("GET", "/some-route/my-route", ""), None),
    ];
    for (i, (req, want)) in cases.iter().enumerate() {
        assert_eq!(
            winner(&router, req),
            want.map(id),
            "case {i}: {} {} host={}",
            req.method,
            req.path,
            req.host
        );
    }
    // both routes 1 and 13 match "domain-2.org" with equal priority: the ATC
    // router picks the greater uuid (…8113).
    assert_eq!(
        winner(&router, &q("GET", "/", "domain-2.org")),
        Some(id(13))
    );
}

#[test]
fn matched_fields() {
    let router = build(&kong_use_case());
    with_match(
        &router,
        &q("PUT", "/my-route-uri/x", "domain-with-uri-2.org"),
        |m| {
            let m = m.unwrap();
            assert_eq!(m.route_index, 6);
            assert_eq!(m.matched_host, Some("domain-with-uri-2.org"));
            assert_eq!(m.matched_method, Some("PUT"));
            assert_eq!(m.matched_path, Some("/my-route-uri"));
            assert_eq!(m.prefix_len, "/my-route-uri".len());
            assert!(m.captures.is_empty());
            assert_eq!(m.protocols, ["http".to_string(), "https".to_string()]);
        },
    );
    with_match(&router, &q("GET", "/", "domain-1.org:321"), |m| {
        let m = m.unwrap();
        assert_eq!(m.matched_host, Some("domain-1.org:321"));
        assert_eq!(m.matched_path, None);
        assert_eq!(m.prefix_len, 0);
    });
}

/// (description, routes, request, expected winner id)
type Case = (&'static str, Vec<R>, Q<'static>, Option<&'static str>);

#[test]
fn priority_rules_table() {
    let cases: Vec<Case> = vec![
        (
            "match_weight: methods+path beats a longer lone path",
            vec![
                R::new("a").paths(&["/foo/bar"]),
                R::new("b").paths(&["/foo"]).methods(&["GET"]),
            ],
            q("GET", "/foo/bar", "x.org"),
            Some("b"),
        ),
        (
            "match_weight: … but not when the method does not match",
            vec![
                R::new("a").paths(&["/foo/bar"]),
                R::new("b").paths(&["/foo"]).methods(&["GET"]),
            ],
            q("POST", "/foo/bar", "x.org"),
            Some("a"),
        ),
        (
            "match_weight: [host] and [uri] beat [method]",
            vec![
                R::new("m").methods(&["GET"]).paths(&["/"]),
                R::new("hu").hosts(&["x.org"]).paths(&["/"]),
            ],
            q("GET", "/", "x.org"),
            Some("hu"),
        ),
        (
            "plain host beats wildcard host (same weight)",
            vec![
                R::new("w1").hosts(&["*.route.com"]),
                R::new("w2").hosts(&["route.*"]),
                R::new("p1").hosts(&["plain.route.com"]),
                R::new("p2").hosts(&["route.com"]),
            ],
            q("GET", "/", "route.com"),
            Some("p2"),
        ),
        (
            "plain host beats wildcard host for a leftmost wildcard",
            vec![
                R::new("w1").hosts(&["*.route.com"]),
                R::new("p1").hosts(&["plain.route.com"]),
            ],
            q("GET", "/", "plain.route.com"),
            Some("p1"),
        ),
        (
            "wildcard host + path matches even if a similar plain host exists",
            vec![
                R::new("w").hosts(&["*.route.com"]).paths(&["/path1"]),
                R::new("p").hosts(&["plain.route.com"]).paths(&["/path2"]),
            ],
            q("GET", "/path1", "plain.route.com"),
            Some("w"),
        ),
        (
            "a route mixing plain and wildcard hosts is not PLAIN_HOST_ONLY",
            vec![
                R::new("mixed").hosts(&["a.org", "*.b.org"]),
                R::new("plain").hosts(&["a.org"]),
            ],
            q("GET", "/", "a.org"),
            Some("plain"),
        ),
        (
            "more headers first",
            vec![
                R::new("two")
                    .header("version", &["v1", "v2"])
                    .header("user_agent", &["foo", "bar"]),
                R::new("three")
                    .header("version", &["v1", "v2"])
                    .header("user_agent", &["foo", "bar"])
                    .header("location", &["east", "west"]),
            ],
            q("GET", "/", "")
                .h("version", "v1")
                .h("user-agent", "foo")
                .h("location", "west"),
            Some("three"),
        ),
        (
            "more headers beat a longer path",
            vec![
                R::new("long")
                    .header("version", &["v1"])
                    .paths(&["/my-route/hello"]),
                R::new("hdrs")
                    .header("version", &["v1"])
                    .header("location", &["us-east"])
                    .paths(&["/my-route"]),
            ],
            q("GET", "/my-route/hello", "domain.org")
                .h("version", "v1")
                .h("location", "us-east"),
            Some("hdrs"),
        ),
        (
            "regex beats prefix with the same weight",
            vec![
                R::new("prefix").paths(&["/my-route/hello"]),
                R::new("regex").paths(&[r"~/my-route/\w+"]),
            ],
            q("GET", "/my-route/hello", ""),
            Some("regex"),
        ),
        (
            "regex + host beats prefix",
            vec![
                R::new("prefix")
                    .paths(&["/my-route/hello"])
                    .hosts(&["x.org"]),
                R::new("regex")
                    .paths(&[r"~/my-route/\w+"])
                    .hosts(&["x.org"]),
            ],
            q("GET", "/my-route/hello", "x.org"),
            Some("regex"),
        ),
        (
            "PLAIN_HOST_ONLY outranks the header count (same weight)",
            vec![
                R::new("wild-hdr")
                    .hosts(&["*.x.org"])
                    .header("version", &["v1"]),
                R::new("plain").hosts(&["api.x.org"]).methods(&["GET"]),
            ],
            q("GET", "/", "api.x.org").h("version", "v1"),
            Some("plain"),
        ),
        (
            "the header count outranks REGEX_URL (same weight)",
            vec![
                R::new("regex").methods(&["GET"]).paths(&[r"~/p/\d+"]),
                R::new("hdr").header("version", &["v1"]).paths(&["/p"]),
            ],
            q("GET", "/p/1", "").h("version", "v1"),
            Some("hdr"),
        ),
        (
            "regex_priority does not outrank a higher header count",
            vec![
                R::new("rp")
                    .header("a", &["1"])
                    .paths(&[r"~/p"])
                    .regex_priority(100),
                R::new("hdrs")
                    .header("a", &["1"])
                    .header("b", &["2"])
                    .paths(&["/p"]),
            ],
            q("GET", "/p", "").h("a", "1").h("b", "2"),
            Some("hdrs"),
        ),
        (
            "regex_priority: higher first",
            vec![
                R::new("low").paths(&[r"~/users/\d+"]).regex_priority(1),
                R::new("high").paths(&[r"~/users/.*"]).regex_priority(10),
            ],
            q("GET", "/users/42", ""),
            Some("high"),
        ),
        (
            "regex_priority: negative ranks below zero",
            vec![
                R::new("neg").paths(&[r"~/users/\d+"]).regex_priority(-5),
                R::new("zero").paths(&[r"~/users/.*"]),
            ],
            q("GET", "/users/42", ""),
            Some("zero"),
        ),
        (
            "regex_priority is ignored for prefix paths",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["~/.*"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/"])
                    .hosts(&["domain-2.org"])
                    .regex_priority(5),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8103")
                    .paths(&["/v1"])
                    .hosts(&["domain-2.org"]),
            ],
            q("GET", "/v1", "domain-2.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8103"),
        ),
        (
            "longest prefix wins",
            vec![
                R::new("short").paths(&["/my-route"]),
                R::new("long").paths(&["/my-route/hello"]),
            ],
            q("GET", "/my-route/hello/world", ""),
            Some("long"),
        ),
        (
            "longest prefix wins with methods on both",
            vec![
                R::new("short").paths(&["/my-route"]).methods(&["GET"]),
                R::new("long").paths(&["/my-route/hello"]).methods(&["GET"]),
            ],
            q("GET", "/my-route/hello", ""),
            Some("long"),
        ),
        (
            "prefix is a byte prefix, not segment-aligned",
            vec![R::new("p").paths(&["/rou"])],
            q("GET", "/roureq", ""),
            Some("p"),
        ),
        (
            "root / acts as catch-all",
            vec![R::new("root").paths(&["/"]), R::new("x").paths(&["/x"])],
            q("GET", "/whatever", ""),
            Some("root"),
        ),
        (
            "equal priority: greater uuid wins (ATC)",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["/a"])
                    .created_at(1),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/b"])
                    .created_at(2),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8103")
                    .paths(&["/a"])
                    .created_at(3),
            ],
            q("GET", "/a", ""),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8103"),
        ),
        (
            "wildcard host with port vs wildcard host: tie, greater uuid",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101").hosts(&["route.*"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .hosts(&["route.*:80", "route.com.*"]),
            ],
            q("GET", "/", "route.org:80"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8102"),
        ),
        (
            "split: regex group and prefix group get separate priorities (regex part)",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["~/some/thing/else", "/foo"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/foo/bar"])
                    .hosts(&["domain-1.org"]),
            ],
            q("GET", "/some/thing/else", "domain-1.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8101"),
        ),
        (
            "split: regex group and prefix group get separate priorities (prefix part)",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["~/some/thing/else", "/foo"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/foo/bar"])
                    .hosts(&["domain-1.org"]),
            ],
            q("GET", "/foo/bar", "domain-1.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8102"),
        ),
        (
            "split: overlapping prefixes, short one",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["/foo", "/foo/bar/baz"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/foo/bar"])
                    .hosts(&["domain-1.org"]),
            ],
            q("GET", "/foo", "domain-1.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8101"),
        ),
        (
            "split: overlapping prefixes, middle one",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["/foo", "/foo/bar/baz"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/foo/bar"])
                    .hosts(&["domain-1.org"]),
            ],
            q("GET", "/foo/bar", "domain-1.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8102"),
        ),
        (
            "split: overlapping prefixes, long one",
            vec![
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
                    .paths(&["/foo", "/foo/bar/baz"])
                    .hosts(&["domain-1.org"]),
                R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
                    .paths(&["/foo/bar"])
                    .hosts(&["domain-1.org"]),
            ],
            q("GET", "/foo/bar/baz/x", "domain-1.org"),
            Some("e8fb37f1-102d-461e-9c51-6608a6bb8101"),
        ),
        (
            "snis count in match_weight (http request ignores sni)",
            vec![
                R::new("plain").hosts(&["x.org"]),
                R::new("sni")
                    .hosts(&["x.org"])
                    .snis(&["x.org"])
                    .protocols(&["https"]),
            ],
            q("GET", "/", "x.org"),
            Some("sni"),
        ),
    ];
    for (desc, routes, req, want) in &cases {
        let router = build(routes);
        assert_eq!(
            winner(&router, req).as_deref(),
            *want,
            "{desc}: {} {} host={}",
            req.method,
            req.path,
            req.host
        );
    }
}

#[test]
fn created_at_tie_break_option() {
    let specs: Vec<RouteSpec> = vec![
        R::new("e8fb37f1-102d-461e-9c51-6608a6bb8101")
            .paths(&["/a"])
            .created_at(5)
            .0,
        R::new("e8fb37f1-102d-461e-9c51-6608a6bb8103")
            .paths(&["/a"])
            .created_at(9)
            .0,
        R::new("e8fb37f1-102d-461e-9c51-6608a6bb8102")
            .paths(&["/a"])
            .created_at(5)
            .0,
    ];
    let kong = Router::build(&specs).unwrap();
    let by_age = Router::build_with(
        &specs,
        &BuildOptions {
            tie_break: TieBreak::CreatedAt,
        },
    )
    .unwrap();
    let r = q("GET", "/a", "");
    assert_eq!(
        winner(&kong, &r).unwrap(),
        "e8fb37f1-102d-461e-9c51-6608a6bb8103"
    );
    assert_eq!(
        winner(&by_age, &r).unwrap(),
        "e8fb37f1-102d-461e-9c51-6608a6bb8101"
    );
}

#[test]
fn priority_bits() {
    let r = R::new("x")
        .methods(&["GET"])
        .hosts(&["a.org"])
        .paths(&["/abc"])
        .header("a", &["1"])
        .header("b", &["2"])
        .0;
    let p = priority_of(&r, &["/abc"]);
    assert_eq!(p >> MATCH_WEIGHT_SHIFT, 4);
    assert_ne!(p & PLAIN_HOST_ONLY_BIT, 0);
    assert_eq!((p >> HEADER_COUNT_SHIFT) & 0xFF, 2);
    assert_eq!(p & REGEX_URL_BIT, 0);
    assert_eq!(p & 0x7FFFF, 4);

    let rx = R::new("y")
        .hosts(&["*.a.org"])
        .paths(&["~/x"])
        .regex_priority(3)
        .0;
    let p = priority_of(&rx, &["~/x"]);
    assert_eq!(p >> MATCH_WEIGHT_SHIFT, 2);
    assert_eq!(p & PLAIN_HOST_ONLY_BIT, 0);
    assert_ne!(p & REGEX_URL_BIT, 0);
    assert_eq!((p >> REGEX_PRIORITY_SHIFT) & 0xFFFF_FFFF, (1 << 31) + 3);
    assert_eq!(p & 0x7FFFF, 0);

    // a route with a regex and two prefix lengths becomes three matchers
    let router = build(&[R::new("z").paths(&["~/r", "/ab", "/cd", "/long"])]);
    assert_eq!(router.matcher_count(), 3);
    let prios: Vec<u64> = router.priorities().map(|(_, p)| p).collect();
    assert!(prios.windows(2).all(|w| w[0] >= w[1]));
    assert_ne!(prios[0] & REGEX_URL_BIT, 0);
    assert_eq!(prios[1] & 0x7FFFF, 5);
    assert_eq!(prios[2] & 0x7FFFF, 3);
}

#[test]
fn wildcard_hosts_and_ports() {
    let routes = vec![
        R::new(&id(1)).hosts(&["*.route.com"]),
        R::new(&id(2)).hosts(&["route.*"]),
        R::new(&id(3)).hosts(&["*.route.net:123"]),
        R::new(&id(4)).hosts(&["route.*:123"]),
    ];
    let router = build(&routes);
    let cases: Vec<(Q, Option<u32>)> = vec![
        (q("GET", "/", "foo.route.com"), Some(1)),
        (q("GET", "/", "a.b.route.com"), Some(1)),
        (q("GET", "/", "FOO.Route.COM"), Some(1)),
        (q("GET", "/", "route.com"), Some(2)), // route.* matches route.com
        (q("GET", "/", "route.org"), Some(2)),
        (q("GET", "/", "route.org:123"), Some(4)), // port-specific, greater uuid
        (q("GET", "/", "foo.route.com:123"), Some(1)),
        (q("GET", "/", "foo.route.net:123"), Some(3)),
        (q("GET", "/", "foo.route.net:124"), None),
        (q("GET", "/", "foo.route.net"), None),
        (q("GET", "/", "notroute.org"), None),
        (q("GET", "/", "xroute.com"), None),
    ];
    for (req, want) in &cases {
        assert_eq!(winner(&router, req), want.map(id), "host={}", req.host);
    }
    // prefers port-specific even for the default port (equal priority, uuid)
    let router = build(&[
        R::new(&id(1)).hosts(&["*.route.org"]),
        R::new(&id(2)).hosts(&["*.route.org:80"]),
    ]);
    assert_eq!(
        winner(&router, &q("GET", "/", "foo.route.org")),
        Some(id(2))
    );
    with_match(&router, &q("GET", "/", "foo.route.org"), |m| {
        assert_eq!(m.unwrap().matched_host, Some("*.route.org:80"))
    });
}

#[test]
fn headers_semantics() {
    let router = build(&[
        R::new("ci").header("X-Version", &["V1"]),
        R::new("rx").header("x-agent", &[r"~*^mozilla/\d"]),
    ]);
    assert_eq!(
        winner(&router, &q("GET", "/", "").h("x-version", "v1")).as_deref(),
        Some("ci")
    );
    assert_eq!(
        winner(&router, &q("GET", "/", "").h("x-version", "V1")).as_deref(),
        Some("ci")
    );
    assert_eq!(
        winner(&router, &q("GET", "/", "").h("x-version", "v2")),
        None
    );
    assert_eq!(
        winner(&router, &q("GET", "/", "").h("x-agent", "Mozilla/5.0")).as_deref(),
        Some("rx")
    );
    assert_eq!(
        winner(&router, &q("GET", "/", "").h("x-agent", "curl/8")),
        None
    );
}

#[test]
fn snis_only_considered_for_https() {
    let router = build(&[
        R::new("sni")
            .snis(&["api.example.com"])
            .paths(&["/s"])
            .protocols(&["https"]),
        R::new("wild")
            .snis(&["*.wild.com"])
            .paths(&["/w"])
            .protocols(&["https"]),
        R::new("pre")
            .snis(&["pre.*"])
            .paths(&["/p"])
            .protocols(&["https"]),
    ]);
    // plain http: SNI clause is skipped
    assert_eq!(
        winner(&router, &q("GET", "/s", "x")).as_deref(),
        Some("sni")
    );
    // https with the right SNI
    assert_eq!(
        winner(&router, &q("GET", "/s", "x").https(Some("api.example.com"))).as_deref(),
        Some("sni")
    );
    // https with the wrong / no SNI
    assert_eq!(
        winner(&router, &q("GET", "/s", "x").https(Some("other.com"))),
        None
    );
    assert_eq!(winner(&router, &q("GET", "/s", "x").https(None)), None);
    // wildcard snis
    assert_eq!(
        winner(&router, &q("GET", "/w", "x").https(Some("a.wild.com"))).as_deref(),
        Some("wild")
    );
    assert_eq!(
        winner(&router, &q("GET", "/w", "x").https(Some("wild.com"))),
        None
    );
    assert_eq!(
        winner(&router, &q("GET", "/p", "x").https(Some("pre.example.org"))).as_deref(),
        Some("pre")
    );
}

#[test]
fn methods_are_exact() {
    let router = build(&[R::new("g").methods(&["GET", "HEAD"])]);
    assert_eq!(winner(&router, &q("HEAD", "/", "")).as_deref(), Some("g"));
    assert_eq!(winner(&router, &q("POST", "/", "")), None);
    assert_eq!(winner(&router, &q("get", "/", "")), None);
}

#[test]
fn protocols_not_part_of_match() {
    let router = build(&[
        R::new("tls-only").paths(&["/secure"]).protocols(&["https"]),
        R::new("grpc")
            .paths(&["/grpc.Svc"])
            .protocols(&["grpc", "grpcs"]),
        R::new("stream").protocols(&["tcp"]),
    ]);
    with_match(&router, &q("GET", "/secure", "x"), |m| {
        let m = m.expect("https-only route is matched by plain http");
        assert_eq!(m.route_id, "tls-only");
        assert_eq!(
            check_protocols(m.protocols, "http", || None, false),
            ProtocolVerdict::HttpsRequired
        );
        assert_eq!(
            check_protocols(m.protocols, "https", || None, false),
            ProtocolVerdict::Ok
        );
    });
    with_match(&router, &q("POST", "/grpc.Svc/Call", "x"), |m| {
        let m = m.unwrap();
        assert_eq!(
            check_protocols(m.protocols, "http", || Some("text/plain"), true),
            ProtocolVerdict::NonGrpcRequest
        );
        assert_eq!(
            check_protocols(m.protocols, "http", || Some("application/grpc"), false),
            ProtocolVerdict::Http2Required
        );
        assert_eq!(
            check_protocols(m.protocols, "http", || Some("application/grpc+proto"), true),
            ProtocolVerdict::Ok
        );
    });
    let grpcs = ["grpcs".to_string()];
    assert_eq!(
        check_protocols(&grpcs, "http", || Some("application/grpc"), true),
        ProtocolVerdict::GrpcsRequired
    );
    // stream routes are not in the HTTP router
    assert_eq!(winner(&router, &q("GET", "/", "x")), None);
    assert_eq!(router.len(), 3);
    assert_eq!(router.matcher_count(), 2);
}

#[test]
fn regex_captures() {
    let router =
        build(&[R::new("u").paths(&[r"~/users/(?P<user_id>\d+)/profile/?(?P<scope>[a-z]*)"])]);
    with_match(&router, &q("GET", "/users/1984/profile", ""), |m| {
        let m = m.unwrap();
        assert_eq!(m.captures.get(0), Some("/users/1984/profile"));
        assert_eq!(m.captures.get(1), Some("1984"));
        assert_eq!(m.captures.name("user_id"), Some("1984"));
        assert_eq!(m.captures.get(2), Some(""));
        assert_eq!(m.captures.name("scope"), Some(""));
        assert_eq!(m.captures.unnamed.len(), 3);
        assert_eq!(m.prefix_len, "/users/1984/profile".len());
        assert_eq!(
            m.matched_path,
            Some(r"~/users/(?P<user_id>\d+)/profile/?(?P<scope>[a-z]*)")
        );
    });
    with_match(&router, &q("GET", "/users/1984/profile/email", ""), |m| {
        let m = m.unwrap();
        assert_eq!(m.captures.get(2), Some("email"));
        assert_eq!(m.captures.name("scope"), Some("email"));
        assert_eq!(m.captures.get(0), Some("/users/1984/profile/email"));
    });

    // optional group that does not participate (Kong #13014), `(?<name>` syntax
    let router = build(&[R::new("o").paths(&[r"~/(users/)?1984/(?<subpath>profile)$"])]);
    with_match(&router, &q("GET", "/1984/profile", ""), |m| {
        let c = m.unwrap().captures;
        assert_eq!(c.get(1), None);
        assert_eq!(c.name("subpath"), Some("profile"));
        assert_eq!(c.name("scope"), None);
    });

    // captures come from the normalized path (Kong #7913)
    let router =
        build(&[R::new("n")
            .paths(&[r"~/users/(?P<fullname>[a-zA-Z\s\d%]+)/profile/?(?P<scope>[a-z]*)"])]);
    with_match(&router, &q("GET", "/users/%6aohn%20doe/profile", ""), |m| {
        let c = m.unwrap().captures;
        assert_eq!(c.get(1), Some("john doe"));
        assert_eq!(c.name("fullname"), Some("john doe"));
        assert_eq!(c.get(0), Some("/users/john doe/profile"));
    });

    // no captures without groups, nor for prefix paths
    let router = build(&[
        R::new("g").paths(&[r"~/users/\d+/profile"]),
        R::new("p").paths(&["/hello"]),
    ]);
    with_match(&router, &q("GET", "/users/1984/profile", ""), |m| {
        let m = m.unwrap();
        assert!(m.captures.is_empty());
        assert_eq!(m.prefix_len, "/users/1984/profile".len());
    });
    with_match(&router, &q("GET", "/hello/world", ""), |m| {
        let m = m.unwrap();
        assert!(m.captures.is_empty());
        assert_eq!(m.prefix_len, 6);
    });
}

#[test]
fn regex_anchoring_and_normalization() {
    let router = build(&[R::new("r").paths(&[r"~/route/(fixture)"])]);
    // anchored at the start
    assert_eq!(
        winner(&router, &q("GET", "/route/fixture", "")).as_deref(),
        Some("r")
    );
    assert_eq!(
        winner(&router, &q("GET", "/prefix/route/fixture", "")),
        None
    );
    // not anchored at the end
    assert_eq!(
        winner(&router, &q("GET", "/route/fixture/more", "")).as_deref(),
        Some("r")
    );
    // matched against the normalized path
    assert_eq!(
        winner(&router, &q("GET", "/route/%66ixture", "")).as_deref(),
        Some("r")
    );
    assert_eq!(
        winner(&router, &q("GET", "/x/../route/./fixture", "")).as_deref(),
        Some("r")
    );

    // Kong normalization stopgap cases
    let router = build(&[
        R::new("plain").paths(&["/plain/a.b%2Ec"]),
        R::new("reg").paths(&[r"~/reg/\d+%2F\d+"]),
        R::new("reg2").paths(&[r"~/reg2/a\.b"]),
    ]);
    assert_eq!(winner(&router, &q("GET", "/plain/a.b%2Ec", "")), None); // %2E decoded → "a.b.c"
    assert_eq!(
        winner(&router, &q("GET", "/reg/12%2f34", "")).as_deref(),
        Some("reg")
    );
    assert_eq!(
        winner(&router, &q("GET", "/reg2/a%2Eb", "")).as_deref(),
        Some("reg2")
    );

    // `^` is prepended textually like Kong: only the first alternative is anchored
    let router = build(&[R::new("alt").paths(&["~/a|/b"])]);
    with_match(&router, &q("GET", "/x/b", ""), |m| {
        let m = m.unwrap();
        assert_eq!(m.route_id, "alt");
        assert_eq!(m.prefix_len, 2);
    });
}

#[test]
fn build_error_names_route_and_regex() {
    let specs = vec![
        R::new("ok").paths(&["/x"]).0,
        R::new("bad-route").paths(&["~/x(["]).0,
    ];
    match Router::build(&specs) {
        Err(BuildError::InvalidRegex {
            route_id, regex, ..
        }) => {
            assert_eq!(route_id, "bad-route");
            assert_eq!(regex, "~/x([");
        }
        other => panic!("expected error, got {other:?}"),
    }
    let specs = vec![R::new("bad-header").header("x", &["~*(("]).0];
    let err = Router::build(&specs).unwrap_err();
    assert!(err.to_string().contains("bad-header"), "{err}");
}

#[test]
fn many_regex_routes_use_regex_set() {
    // enough regexes on one host to trigger the RegexSet pre-filter
    let mut routes = Vec::new();
    for i in 0..40 {
        routes.push(
            R::new(&format!("r{i:02}"))
                .hosts(&["h.org"])
                .paths(&[&format!(r"~/items/(?<n>\d+)/k{i}$")])
                .regex_priority(i),
        );
    }
    routes.push(
        R::new("catch")
            .hosts(&["h.org"])
            .paths(&[r"~/items/.*"])
            .regex_priority(-1),
    );
    let router = build(&routes);
    for i in [0, 7, 39] {
        let path = format!("/items/5/k{i}");
        let req = q("GET", &path, "h.org");
        with_match(&router, &req, |m| {
            let m = m.unwrap();
            assert_eq!(m.route_id, format!("r{i:02}"));
            assert_eq!(m.captures.name("n"), Some("5"));
        });
    }
    assert_eq!(
        winner(&router, &q("GET", "/items/5/k99", "h.org")).as_deref(),
        Some("catch")
    );
    assert_eq!(winner(&router, &q("GET", "/other", "h.org")), None);
}

#[test]
fn uppercase_request_host_is_lowercased() {
    let router = build(&[R::new("a").hosts(&["Example.COM"])]);
    assert_eq!(
        winner(&router, &q("GET", "/", "EXAMPLE.com")).as_deref(),
        Some("a")
    );
}

#[test]
fn router_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
    let r = Router::build(&[]).unwrap();
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
}
