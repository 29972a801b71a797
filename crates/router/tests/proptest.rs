//! Property tests: `find` never panics and always agrees with a linear scan of
//! all matchers in priority order (i.e. the candidate indexes lose nothing), and a
//! router changed route by route with `update` routes as a fresh build of its routes.

use proptest::prelude::*;
use tollgate_router::*;

fn host_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.com".to_string()),
        Just("b.a.com".to_string()),
        Just("*.a.com".to_string()),
        Just("a.*".to_string()),
        Just("a.com:8080".to_string()),
        Just("*.com".to_string()),
        Just("x*".to_string()),
        "[a-c.]{1,6}",
    ]
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        "/[a-c/]{0,6}",
        Just(r"~/a/\d+".to_string()),
        Just(r"~/(?<x>[ab]+)/c".to_string()),
        Just("~/a|/b".to_string()),
        Just("~(?i)/A".to_string()),
        Just("~/b.*$".to_string()),
    ]
}

prop_compose! {
    fn route_strategy()(
        hosts in proptest::collection::vec(host_strategy(), 0..3),
        paths in proptest::collection::vec(path_strategy(), 0..3),
        methods in proptest::collection::vec(prop_oneof![Just("GET".to_string()), Just("POST".to_string())], 0..2),
        hv in proptest::collection::vec(prop_oneof![Just("v1".to_string()), Just("~*^v\\d".to_string())], 0..2),
        snis in proptest::collection::vec(prop_oneof![Just("a.com".to_string()), Just("*.a.com".to_string())], 0..2),
        regex_priority in -3i64..3,
        created_at in 0i64..5,
        idn in 0u32..1000,
    ) -> RouteSpec {
        RouteSpec {
            id: format!("00000000-0000-4000-8000-{idn:012}"),
            created_at,
            protocols: vec!["http".into(), "https".into()],
            methods,
            hosts,
            paths,
            headers: if hv.is_empty() { vec![] } else { vec![("x-v".into(), hv)] },
            snis,
            regex_priority,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn find_agrees_with_linear_scan(
        routes in proptest::collection::vec(route_strategy(), 0..25),
        host in "[a-cA-C.]{0,8}",
        port in prop_oneof![Just(80u16), Just(8080u16), any::<u16>()],
        raw_path in "[a-c/%.0-9]{0,12}",
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        https in any::<bool>(),
        sni in proptest::option::of("[a-c.]{0,6}"),
        header in proptest::option::of("[vV0-9]{0,3}"),
    ) {
        let router = Router::build(&routes).unwrap();
        let path = normalize_path(&raw_path);
        let hv: Option<&str> = header.as_deref();
        let lookup = move |n: &str| if n == "x-v" { hv } else { None };
        let req = RequestInfo {
            scheme: if https { "https" } else { "http" },
            method,
            host: &host,
            port,
            path: &path,
            sni: sni.as_deref(),
            headers: &lookup,
        };
        let a = router.find(&req);
        let b = router.find_linear(&req);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn updated_router_routes_as_a_fresh_build(
        first in proptest::collection::vec(route_strategy(), 0..12),
        steps in proptest::collection::vec(
            proptest::collection::vec((0usize..16, proptest::option::of(route_strategy())), 1..4),
            1..12,
        ),
        created_at_ties in any::<bool>(),
        requests in proptest::collection::vec(
            ("[a-cA-C.]{0,8}", prop_oneof![Just(80u16), Just(8080u16)], "[a-c/0-9]{0,8}",
             prop_oneof![Just("GET"), Just("POST")], any::<bool>(),
             proptest::option::of("[a-c.]{0,6}"), proptest::option::of("[vV0-9]{0,3}")),
            8,
        ),
    ) {
        let opts = BuildOptions {
            tie_break: if created_at_ties { TieBreak::CreatedAt } else { TieBreak::KongAtc },
        };
        let mut router = Router::build_with(&first, &opts).unwrap();
        let mut slots: Vec<Option<RouteSpec>> = first.into_iter().map(Some).collect();
        for batch in steps {
            for (slot, spec) in &batch {
                if slots.len() <= *slot {
                    slots.resize(*slot + 1, None);
                }
                slots[*slot] = spec.clone();
            }
            router = router.update(batch).unwrap();
            // The fresh build of the same routes, in slot order.
            let (at, specs): (Vec<usize>, Vec<RouteSpec>) = slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.clone()?)))
                .unzip();
            let fresh = Router::build_with(&specs, &opts).unwrap();
            prop_assert_eq!(router.len(), fresh.len());
            prop_assert_eq!(router.matcher_count(), fresh.matcher_count());
            let prios: Vec<(usize, u64)> = fresh.priorities().map(|(i, p)| (at[i], p)).collect();
            prop_assert_eq!(router.priorities().collect::<Vec<_>>(), prios);
            for (host, port, raw_path, method, https, sni, header) in &requests {
                let path = normalize_path(raw_path);
                let hv: Option<&str> = header.as_deref();
                let lookup = move |n: &str| if n == "x-v" { hv } else { None };
                let req = RequestInfo {
                    scheme: if *https { "https" } else { "http" },
                    method,
                    host,
                    port: *port,
                    path: &path,
                    sni: sni.as_deref(),
                    headers: &lookup,
                };
                let a = router.find(&req);
                let b = fresh.find(&req).map(|mut m| {
                    m.route_index = at[m.route_index];
                    m
                });
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(a, router.find_linear(&req));
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_strings(
        host in any::<String>(),
        raw_path in any::<String>(),
        method in any::<String>(),
        scheme in any::<String>(),
        service in proptest::option::of(any::<String>()),
        prefix_len in any::<usize>(),
        strip in any::<bool>(),
        v1 in any::<bool>(),
    ) {
        let routes = vec![
            RouteSpec { id: "a".into(), hosts: vec!["*.x".into()], paths: vec!["/p".into()], ..Default::default() },
            RouteSpec { id: "b".into(), paths: vec![r"~/(?<n>\d+)".into()], ..Default::default() },
            RouteSpec { id: "c".into(), ..Default::default() },
        ];
        let router = Router::build(&routes).unwrap();
        let path = normalize_path(&raw_path);
        let req = RequestInfo {
            scheme: &scheme,
            method: &method,
            host: &host,
            port: 0,
            path: &path,
            sni: Some(&host),
            headers: &no_headers,
        };
        prop_assert!(router.find(&req).is_some()); // route "c" matches everything
        let ph = if v1 { PathHandling::V1 } else { PathHandling::V0 };
        let _ = upstream_path(service.as_deref(), &path, prefix_len, strip, ph);
    }
}
