//! Bad deployment files are rejected with `file:line:column` before any AWS call: through
//! the library (the fake records zero calls) and through the real binary (its endpoint is a
//! loopback listener that must see no connection).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::Command;

use tollgate_ecs::fake::FakeEcs;
use tollgate_ecs::rollout::{deploy_file, Collect, Error};

const GOOD: &str = r#"clusters: [alpha, beta]
task_definitions:
  gateway:
    family: tollgate-gateway
    containers:
      - name: tollgate
        image: ghcr.io/example/tollgate:1
tasks:
  - name: migrations
    cluster: alpha
    task_definition: gateway
services:
  - name: gateway
    clusters: [alpha, beta]
    task_definition: gateway
    desired_count: 2
    after: [migrations]
"#;

/// (what, file text, expected "line:column: message" after the file name)
fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "unknown cluster",
            GOOD.replace(
                "clusters: [alpha, beta]\n    task",
                "clusters: [alpha, gamma]\n    task",
            ),
            "14:23: unknown cluster \"gamma\" (declared clusters: alpha, beta)",
        ),
        (
            "cycle in the order",
            GOOD.replace(
                "    task_definition: gateway\nservices",
                "    task_definition: gateway\n    after: [gateway]\nservices",
            ),
            "12:13: cycle in the rollout order: migrations after gateway after migrations",
        ),
        (
            "missing image",
            GOOD.replace("        image: ghcr.io/example/tollgate:1\n", ""),
            "6:9: task_definitions.gateway.containers[0]: missing field `image`",
        ),
        (
            "empty image",
            GOOD.replace("image: ghcr.io/example/tollgate:1", "image: \"\""),
            "7:16: container \"tollgate\" has an empty image",
        ),
        (
            "unknown step in after",
            GOOD.replace("after: [migrations]", "after: [migration]"),
            "17:13: unknown step \"migration\" in `after`",
        ),
        (
            "unknown task definition",
            GOOD.replace(
                "    task_definition: gateway\n    desired",
                "    task_definition: gw\n    desired",
            ),
            "15:22: unknown task definition \"gw\" (declared: gateway)",
        ),
        (
            "unknown field",
            GOOD.replace("desired_count: 2", "desired_count: 2\n    desiredCount: 3"),
            "17:5: services[0]: unknown field `desiredCount`",
        ),
        (
            "bad duration",
            format!("settings:\n  wait_timeout: 10 minutes\n{GOOD}"),
            "2:17: settings.wait_timeout: invalid duration \"10 minutes\" (use e.g. 90s, 15m, 1h)",
        ),
        (
            "yaml syntax",
            GOOD.replace(
                "clusters: [alpha, beta]\ntask",
                "clusters: [alpha, beta\ntask",
            ),
            "2:",
        ),
    ]
}

#[tokio::test]
async fn rejected_before_any_call_with_the_position() {
    let dir = tempfile::tempdir().unwrap();
    for (what, text, expected) in cases() {
        let path = dir.path().join("deploy.yml");
        std::fs::write(&path, &text).unwrap();
        let fake = FakeEcs::new(&["alpha", "beta"]);
        let err = deploy_file(&fake, &path, &Collect::default())
            .await
            .expect_err(what);
        assert!(matches!(err, Error::File(_)), "{what}: {err}");
        let msg = err.to_string();
        let prefix = format!("{}:", path.display());
        let rest = msg
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{what}: {msg}"));
        assert!(
            rest.starts_with(expected),
            "{what}: got {rest:?}, want {expected:?}"
        );
        assert!(fake.calls().is_empty(), "{what}: {:?}", fake.calls());
    }
    // The good file passes and reaches ECS.
    let path = dir.path().join("good.yml");
    std::fs::write(&path, format!("settings: {{poll_interval: 1ms}}\n{GOOD}")).unwrap();
    let fake = FakeEcs::new(&["alpha", "beta"]);
    deploy_file(&fake, &path, &Collect::default())
        .await
        .expect("good file");
    assert!(!fake.calls().is_empty());
}

#[test]
fn the_binary_exits_non_zero_without_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    for (what, text, expected) in cases() {
        let path = dir.path().join("deploy.yml");
        std::fs::write(&path, &text).unwrap();
        for command in ["plan", "deploy", "status", "rollback"] {
            let out = Command::new(env!("CARGO_BIN_EXE_tollgate-ecs"))
                .args([
                    "--file",
                    path.to_str().unwrap(),
                    "--endpoint-url",
                    &endpoint,
                ])
                .args(["--region", "us-east-1", command])
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what} {command}: {stderr}");
            let want = format!("tollgate-ecs: error: {}:{expected}", path.display());
            assert!(stderr.starts_with(&want), "{what} {command}: {stderr}");
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the tool connected to the endpoint: {other:?}"),
    }
}

#[test]
fn the_example_file_and_its_cassandra_variant_are_valid() {
    use tollgate_ecs::spec::{load, parse, Step};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/ecs/deployment.example.yml"
    );
    let d = load(std::path::Path::new(path)).expect("example file");
    let names: Vec<&str> = d
        .order
        .iter()
        .map(|s| match *s {
            Step::Task(i) => d.task(i).name.as_str(),
            Step::Service(i) => d.service(i).name.as_str(),
        })
        .collect();
    assert_eq!(names, ["migrations", "gateway"]);
    assert_eq!(d.service(0).clusters.len(), 2);

    // The commented variant, uncommented.
    let text = std::fs::read_to_string(path).unwrap();
    let block = text.split("# --- Cassandra variant").nth(1).unwrap();
    let yaml: String = block
        .lines()
        .skip_while(|l| !l.starts_with("# clusters:"))
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or("")))
        .collect();
    let d = parse("cassandra", &yaml).expect("cassandra variant");
    let names: Vec<&str> = d
        .order
        .iter()
        .map(|s| match *s {
            Step::Task(i) => d.task(i).name.as_str(),
            Step::Service(i) => d.service(i).name.as_str(),
        })
        .collect();
    assert_eq!(names, ["cassandra-seed", "cassandra-nodes", "gateway"]);
}

#[test]
fn an_unreachable_endpoint_is_one_clear_error() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.yml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-ecs"))
        .args(["--file", path.to_str().unwrap()])
        .args([
            "--endpoint-url",
            &format!("http://127.0.0.1:{port}"),
            "--region",
            "us-east-1",
            "plan",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "tollgate-ecs: error: DescribeClusters failed: dispatch failure: io error:"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
