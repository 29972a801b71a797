use super::*;
use crate::testing::{defaults, fixture, parts, ALICE};
use crate::ConsumerIndex;

fn validate(config: Value) -> Result<Map<String, Value>, String> {
    crate::testing::validated(&SPEC, config)
}

fn plugin(config: Value, id: &str) -> Box<dyn Plugin> {
    crate::testing::bound(&SPEC, config, id)
}

fn access(
    p: &dyn Plugin,
    ix: &ConsumerIndex,
    uri: &str,
    h: &[(&str, &str)],
) -> (Flow, Vec<(HeaderName, HeaderValue)>) {
    let mut parts = parts("GET", uri, h);
    let mut cx = RequestCx::new(&mut parts, [10, 0, 0, 1].into(), ix);
    let f = p.access(&mut cx).unwrap();
    let h = cx.take_response_headers();
    (f, h)
}

fn get<'a>(h: &'a [(HeaderName, HeaderValue)], n: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k == n)
        .map(|(_, v)| v.to_str().unwrap())
}

#[test]
fn calendar_windows_are_utc() {
    // 2024-02-29T13:45:17Z
    let t = 1_709_214_317;
    assert_eq!(Period::Second.start(t), t);
    assert_eq!(Period::Minute.start(t), 1_709_214_300);
    assert_eq!(Period::Hour.start(t), 1_709_211_600);
    assert_eq!(Period::Day.start(t), 1_709_164_800);
    assert_eq!(Period::Month.start(t), 1_706_745_600); // 2024-02-01
    assert_eq!(Period::Year.start(t), 1_704_067_200); // 2024-01-01
    assert_eq!(Period::Year.start(0), 0);
    for d in [0i64, 59, 365, 10_957, 19_782, 50_000] {
        let (y, m, dd) = civil_from_days(d);
        assert_eq!(days_from_civil(y, m, dd), d);
    }
}

#[test]
fn schema_follows_kong() {
    let e = validate(json!({})).unwrap_err();
    assert!(e.contains("at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"), "{e}");
    let c = validate(json!({"minute": 5})).unwrap();
    assert_eq!(c["limit_by"], "consumer");
    assert_eq!(c["policy"], "local");
    assert_eq!(c["error_code"], 429);
    assert_eq!(c["error_message"], "API rate limit exceeded");
    assert_eq!(c["fault_tolerant"], true);
    assert_eq!(c["hide_client_headers"], false);
    assert_eq!(c["sync_rate"], -1);
    let e = validate(json!({"second": 10, "minute": 5})).unwrap_err();
    assert!(
        e.contains("The limit for minute(5.0) cannot be lower than the limit for second(10.0)"),
        "{e}"
    );
    // (DB-less nodes leave `cluster` out: tests/e2e/rate_limiting.rs)
    let c = validate(json!({"minute": 5, "policy": "cluster"})).unwrap();
    assert_eq!(c["policy"], "cluster");
    let e = validate(json!({"minute": 5, "policy": "cluster", "sync_rate": 1})).unwrap_err();
    assert!(e.contains(ERR_SYNC_RATE_POLICY), "{e}");
    let e = validate(json!({"minute": 5, "limit_by": "header"})).unwrap_err();
    assert!(
        e.contains("header_name") && e.contains("required field missing"),
        "{e}"
    );
    let e = validate(json!({"minute": 5, "limit_by": "path"})).unwrap_err();
    assert!(e.contains("path"), "{e}");
    let e = validate(json!({"minute": 5, "policy": "redis"})).unwrap_err();
    assert!(e.contains("host: required field missing"), "{e}");
    let c =
        validate(json!({"minute": 5, "policy": "redis", "redis": {"host": "127.0.0.1"}})).unwrap();
    assert_eq!(c["redis"]["port"], 6379);
    assert_eq!(c["redis"]["timeout"], 2000);
    let e = validate(json!({"minute": 5, "sync_rate": 1})).unwrap_err();
    assert!(e.contains(ERR_SYNC_RATE_POLICY), "{e}");
    validate(json!({"minute": 5, "policy": "redis", "redis": {"host": "h"}, "sync_rate": 1}))
        .unwrap();
    let e = validate(
        json!({"minute": 5, "policy": "redis", "redis": {"host": "h"}, "sync_rate": 0.01}),
    )
    .unwrap_err();
    assert!(e.contains(ERR_SYNC_RATE_MIN), "{e}");
    let e = validate(json!({"minute": 0})).unwrap_err();
    assert!(e.contains("minute"), "{e}");
}

#[test]
fn headers_math_follows_kong() {
    let now = 1_709_214_317; // 17 s into the minute, 45:17 into the hour
    let u = |period, limit, used: f64| Usage {
        period,
        limit,
        remaining: limit - used,
    };
    // Under the limits: every remaining counts this request.
    let (h, stop) = headers(
        &[u(Period::Minute, 10.0, 3.0), u(Period::Hour, 100.0, 50.0)],
        now,
        false,
    );
    assert_eq!(stop, None);
    assert_eq!(get(&h, "x-ratelimit-limit-minute"), Some("10"));
    assert_eq!(get(&h, "x-ratelimit-remaining-minute"), Some("6"));
    assert_eq!(get(&h, "x-ratelimit-remaining-hour"), Some("49"));
    assert_eq!(get(&h, "ratelimit-limit"), Some("10"));
    assert_eq!(get(&h, "ratelimit-remaining"), Some("6"));
    assert_eq!(get(&h, "ratelimit-reset"), Some("43"));
    // Equal remaining: the longer window wins.
    let (h, _) = headers(
        &[u(Period::Second, 5.0, 0.0), u(Period::Minute, 5.0, 0.0)],
        now,
        false,
    );
    assert_eq!(get(&h, "ratelimit-reset"), Some("43"));
    // Exhausted hour: the stop period shows 0, the others are not decremented.
    let (h, stop) = headers(
        &[u(Period::Minute, 10.0, 3.0), u(Period::Hour, 100.0, 100.0)],
        now,
        false,
    );
    assert_eq!(stop, Some(3600 - 45 * 60 - 17));
    assert_eq!(get(&h, "x-ratelimit-remaining-minute"), Some("7"));
    assert_eq!(get(&h, "x-ratelimit-remaining-hour"), Some("0"));
    assert_eq!(get(&h, "ratelimit-remaining"), Some("0"));
    // Fractional limits print as Lua numbers; second windows reset in 1.
    let (h, _) = headers(&[u(Period::Second, 2.5, 0.0)], now, false);
    assert_eq!(get(&h, "x-ratelimit-limit-second"), Some("2.5"));
    assert_eq!(get(&h, "ratelimit-reset"), Some("1"));
    let (h, stop) = headers(&[u(Period::Second, 1.0, 1.0)], now, true);
    assert!(h.is_empty() && stop.is_some());
}

#[test]
fn local_policy_limits_and_answers_kong_error() {
    let ix = fixture();
    let p = plugin(
        json!({"minute": 2, "limit_by": "ip", "error_message": "slow down"}),
        "rl-local-1",
    );
    let (f, h) = access(&*p, &ix, "/", &[]);
    assert!(f.is_continue());
    assert_eq!(get(&h, "x-ratelimit-remaining-minute"), Some("1"));
    let (f, h) = access(&*p, &ix, "/", &[]);
    assert!(f.is_continue());
    assert_eq!(get(&h, "x-ratelimit-remaining-minute"), Some("0"));
    let (f, _) = access(&*p, &ix, "/", &[]);
    let e = f.unwrap_exit();
    assert_eq!(e.status, 429);
    assert_eq!(e.message(), "slow down");
    assert_eq!(get(&e.headers, "x-ratelimit-remaining-minute"), Some("0"));
    assert!(get(&e.headers, "retry-after").is_some());
    // Another plugin id counts apart.
    let q = plugin(json!({"minute": 2, "limit_by": "ip"}), "rl-local-2");
    assert!(access(&*q, &ix, "/", &[]).0.is_continue());
}

#[test]
fn identifiers_follow_kong_fallbacks() {
    let ix = fixture();
    let mk = |cfg: Value| build(&Value::Object(defaults(&SPEC, cfg))).unwrap();
    let id = |p: &RateLimiting, uri: &str, h: &[(&str, &str)], consumer: bool| {
        let mut parts = parts("GET", uri, h);
        let mut cx = RequestCx::new(&mut parts, [10, 0, 0, 1].into(), &ix)
            .with_route(Some("r"), Some("svc"));
        if consumer {
            let c = ix.consumer_by_id(ALICE).unwrap();
            cx.authenticate(c, None);
        }
        p.identifier(&cx)
    };
    let c = mk(json!({"minute": 1}));
    assert_eq!(id(&c, "/", &[], false), "10.0.0.1");
    assert_eq!(id(&c, "/", &[], true), ALICE);
    let c = mk(json!({"minute": 1, "limit_by": "credential"}));
    assert_eq!(id(&c, "/", &[], true), "10.0.0.1");
    let c = mk(json!({"minute": 1, "limit_by": "service"}));
    assert_eq!(id(&c, "/", &[], false), "svc");
    let c = mk(json!({"minute": 1, "limit_by": "header", "header_name": "x-tenant"}));
    assert_eq!(id(&c, "/", &[("x-tenant", "t1")], false), "t1");
    assert_eq!(id(&c, "/", &[], false), "10.0.0.1");
    let c = mk(json!({"minute": 1, "limit_by": "path", "path": "/a"}));
    assert_eq!(id(&c, "/a", &[], false), "/a");
    assert_eq!(id(&c, "/b", &[], false), "10.0.0.1");
}

#[test]
fn local_store_is_bounded_and_expires() {
    let s = store::LocalStore::new();
    let w = |ttl, limit| LocalWindow {
        start_ms: 0,
        period: "second",
        ttl,
        limit,
    };
    let count = |prefix: &str, w: LocalWindow, now| {
        let mut key = prefix.to_owned();
        let mut usage = [0];
        s.usage_and_increment(&mut key, &[w], now, &mut usage);
        // The prefix is left as it was.
        assert_eq!(key, prefix);
        usage[0]
    };
    assert_eq!(count("a:", w(1, 5.0), 100), 0);
    assert_eq!(count("a:", w(1, 5.0), 100), 1);
    // Expired: counts from zero again.
    assert_eq!(count("a:", w(1, 5.0), 101), 0);
    // At the limit: not counted.
    assert_eq!(count("b:", w(60, 1.0), 100), 0);
    assert_eq!(count("b:", w(60, 1.0), 100), 1);
    assert_eq!(count("b:", w(60, 1.0), 100), 1);
    assert!(s.counters() <= 2);
}

#[test]
fn local_windows_count_together() {
    // Two windows of one identifier: a request is counted in both or in neither.
    let s = store::LocalStore::new();
    let ws = [
        LocalWindow {
            start_ms: 1000,
            period: "second",
            ttl: 1,
            limit: 2.0,
        },
        LocalWindow {
            start_ms: 0,
            period: "minute",
            ttl: 60,
            limit: 10.0,
        },
    ];
    let mut key = String::from("p:10.0.0.1:");
    let mut usage = [0; 2];
    for want in [[0, 0], [1, 1], [2, 2], [2, 2]] {
        s.usage_and_increment(&mut key, &ws, 1, &mut usage);
        assert_eq!(usage, want);
    }
    // The next second: a new window, the minute's count goes on.
    let next = [
        LocalWindow {
            start_ms: 2000,
            ..ws[0]
        },
        ws[1],
    ];
    s.usage_and_increment(&mut key, &next, 2, &mut usage);
    assert_eq!(usage, [0, 2]);
    s.usage_and_increment(&mut key, &next, 2, &mut usage);
    assert_eq!(usage, [1, 3]);
}

#[test]
fn header_numbers_are_lua_numbers() {
    for (n, s) in [
        (0.0, "0"),
        (7.0, "7"),
        (4095.0, "4095"),
        (4096.0, "4096"),
        (999_999_999.0, "999999999"),
        (-3.0, "-3"),
        (1.5, "1.5"),
        (1e15, "1000000000000000"),
    ] {
        assert_eq!(number_value(n).to_str().unwrap(), s, "{n}");
        assert_eq!(lua_number(n), s, "{n}");
    }
    let mut out = String::new();
    push_ip(&mut out, [10, 0, 200, 1].into());
    assert_eq!(out, "10.0.200.1");
    out.clear();
    push_ip(&mut out, "2001:db8::1".parse().unwrap());
    assert_eq!(out, "2001:db8::1");
}
