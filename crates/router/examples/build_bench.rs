//! Builds 10,000 and 100,000 generated routes and measures build time and
//! lookup throughput.
//!
//! `cargo run --release -p tollgate-router --example build_bench`

use std::time::Instant;

use tollgate_router::{RequestInfo, RouteSpec, Router};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn route(i: usize) -> RouteSpec {
    let id = format!("00000000-0000-4000-8000-{:012x}", i);
    let mut r = RouteSpec {
        id,
        created_at: i as i64,
        protocols: vec!["http".into(), "https".into()],
        ..Default::default()
    };
    match i % 10 {
        0..=5 => {
            r.hosts = vec![format!("svc{}.example.com", i % 500)];
            r.paths = vec![format!("/api/v{}/res{}", i % 3, i)];
        }
        6 => {
            r.hosts = vec![format!("*.w{}.example.com", i % 50)];
            r.paths = vec![format!("/w/{i}")];
        }
        7 => {
            // 1 in 10 routes has a regex path
            r.hosts = vec![format!("svc{}.example.com", i % 500)];
            r.paths = vec![format!("~/users/(?<id>\\d+)/r{i}$")];
            r.regex_priority = (i % 5) as i64;
        }
        8 => {
            r.paths = vec![format!("/h/{i}")];
            r.headers = vec![("x-tenant".into(), vec![format!("t{i}")])];
        }
        _ => {
            r.methods = vec!["GET".into(), "POST".into()];
            r.paths = vec![format!("/p/{i}"), format!("/p2/{i}/x")];
        }
    }
    r
}

struct Req {
    host: String,
    path: String,
    tenant: String,
}

fn request_for(i: usize, rng: &mut Rng) -> Req {
    let tenant = format!("t{i}");
    match i % 10 {
        0..=5 => Req {
            host: format!("svc{}.example.com", i % 500),
            path: format!("/api/v{}/res{}/item/{}", i % 3, i, rng.below(100)),
            tenant,
        },
        6 => Req {
            host: format!("a.w{}.example.com", i % 50),
            path: format!("/w/{i}"),
            tenant,
        },
        7 => Req {
            host: format!("svc{}.example.com", i % 500),
            path: format!("/users/{}/r{i}", rng.below(100000)),
            tenant,
        },
        8 => Req {
            host: "other.example.org".into(),
            path: format!("/h/{i}"),
            tenant,
        },
        _ => Req {
            host: "x.example.org".into(),
            path: format!("/p2/{i}/x/y"),
            tenant,
        },
    }
}

fn run(n: usize) {
    let routes: Vec<RouteSpec> = (0..n).map(route).collect();
    let t = Instant::now();
    let router = Router::build(&routes).expect("build");
    let build = t.elapsed();
    println!(
        "{n:>7} routes ({} matchers): build {:.1} ms",
        router.matcher_count(),
        build.as_secs_f64() * 1e3
    );

    let mut rng = Rng(0x9E3779B97F4A7C15);
    let reqs: Vec<Req> = (0..20_000)
        .map(|_| {
            let i = rng.below(n as u64) as usize;
            request_for(i, &mut rng)
        })
        .collect();

    let lookup_all = |reqs: &[Req]| {
        let mut hits = 0usize;
        for q in reqs {
            let tenant = q.tenant.as_str();
            let headers = move |name: &str| {
                if name == "x-tenant" {
                    Some(tenant)
                } else {
                    None
                }
            };
            let req = RequestInfo {
                scheme: "http",
                method: "GET",
                host: &q.host,
                port: 80,
                path: &q.path,
                sni: None,
                headers: &headers,
            };
            if router.find(&req).is_some() {
                hits += 1;
            }
        }
        hits
    };
    // cold pass: regexes are compiled lazily on first use
    let t = Instant::now();
    let cold_hits = lookup_all(&reqs);
    let el = t.elapsed();
    println!(
        "         cold lookups (first use compiles regexes): {} in {:.1} ms = {:.0} lookups/s ({cold_hits} hits)",
        reqs.len(),
        el.as_secs_f64() * 1e3,
        reqs.len() as f64 / el.as_secs_f64()
    );

    let mut hits = 0usize;
    let iters = 5;
    let t = Instant::now();
    for _ in 0..iters {
        hits += lookup_all(&reqs);
    }
    let el = t.elapsed();
    let total = iters * reqs.len();
    println!(
        "         warm lookups: {total} in {:.1} ms = {:.0} lookups/s ({} hits)",
        el.as_secs_f64() * 1e3,
        total as f64 / el.as_secs_f64(),
        hits
    );

    if std::env::var("PER_KIND").is_ok() {
        for kind in 0..10 {
            let mut rng = Rng(7);
            let rs: Vec<Req> = (0..2000)
                .map(|_| {
                    let i = (rng.below(n as u64 / 10) * 10) as usize + kind;
                    request_for(i, &mut rng)
                })
                .collect();
            lookup_all(&rs);
            let t = Instant::now();
            lookup_all(&rs);
            println!(
                "kind {kind}: {:.2} us/lookup",
                t.elapsed().as_secs_f64() * 1e6 / 2000.0
            );
        }
    }

    // misses (unknown host, unknown path)
    let t = Instant::now();
    let mut miss_hits = 0;
    for i in 0..total {
        let path = if i % 2 == 0 {
            "/nothing/here"
        } else {
            "/api/v1/none"
        };
        let req = RequestInfo {
            scheme: "http",
            method: "GET",
            host: "svc1.example.com",
            port: 80,
            path,
            sni: None,
            headers: &tollgate_router::no_headers,
        };
        if router.find(&req).is_some() {
            miss_hits += 1;
        }
    }
    let el = t.elapsed();
    println!(
        "         misses:  {total} in {:.1} ms = {:.0} lookups/s ({} hits)",
        el.as_secs_f64() * 1e3,
        total as f64 / el.as_secs_f64(),
        miss_hits
    );
}

fn main() {
    run(10_000);
    run(100_000);
}
