//! Prints peak RSS after each stage of parsing a declarative file (memory investigation).
fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let path = std::env::args().nth(1).expect("file");
    let text = std::fs::read_to_string(path).unwrap();
    println!("text read: {}", hwm());
    let v = tollgate_model::declarative::load(&text).unwrap();
    println!("loaded value: {}", hwm());
    drop(v);
    let cat = tollgate_model::PluginCatalog::default();
    let p = tollgate_model::declarative::parse(&text, &cat).unwrap();
    println!("parsed set ({}): {}", p.set.len(), hwm());
    let json =
        serde_json::to_string(&serde_json::json!({"_format_version": "3.0", "x": 1})).unwrap();
    drop(json);
    let v = tollgate_model::declarative::export(&p.set);
    drop(p);
    let text = serde_json::to_string(&v).unwrap();
    drop(v);
    println!("as json text {} bytes: {}", text.len(), hwm());
    let p = tollgate_model::declarative::parse(&text, &cat).unwrap();
    println!("parsed from json ({}): {}", p.set.len(), hwm());
}
