//! Parses a large declarative configuration: 10,000 services with a route each and
//! 100,000 consumers with a key-auth credential each. Prints the timings and the peak RSS.
//!
//!     cargo run --release -p tollgate-model --example declarative_bench [SERVICES] [CONSUMERS]

use std::fmt::Write as _;
use std::time::Instant;
use tollgate_model::declarative;
use tollgate_model::PluginCatalog;

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // Optional arguments: the number of services and of consumers.
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let services = args.next().unwrap_or(10_000);
    let consumers = args.next().unwrap_or(100_000);
    let t = Instant::now();
    let mut yaml = String::with_capacity(32 << 20);
    yaml.push_str("_format_version: \"3.0\"\nservices:\n");
    for i in 0..services {
        let _ = write!(
            yaml,
            "- name: service-{i}\n  url: http://upstream-{i}.example.com:8080/api\n  routes:\n  - name: route-{i}\n    paths: [/svc/{i}]\n    methods: [GET, POST]\n"
        );
    }
    yaml.push_str("consumers:\n");
    for i in 0..consumers {
        let _ = write!(
            yaml,
            "- username: user-{i}\n  keyauth_credentials:\n  - key: key-{i}\n"
        );
    }
    println!(
        "generated {} bytes of YAML in {:?}",
        yaml.len(),
        t.elapsed()
    );
    println!("peak RSS after generating: {}", peak_rss());

    let t = Instant::now();
    let v = declarative::load(&yaml).expect("yaml");
    println!(
        "YAML decoding alone: {:?} (peak RSS {})",
        t.elapsed(),
        peak_rss()
    );
    drop(v);

    let catalog = PluginCatalog::default();
    let t = Instant::now();
    let parsed = match declarative::parse(&yaml, &catalog) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("parse failed: {}", e.message());
            std::process::exit(1);
        }
    };
    let parse_time = t.elapsed();
    println!("parsed {} entities in {:?}", parsed.set.len(), parse_time);
    for (name, rows) in &parsed.set.entities {
        println!("  {name}: {}", rows.len());
    }
    println!("peak RSS (VmHWM): {}", peak_rss());

    let t = Instant::now();
    let exported = declarative::export(&parsed.set);
    println!("exported in {:?}", t.elapsed());
    drop(exported);
}
