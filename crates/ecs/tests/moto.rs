//! The real `tollgate-ecs` binary against a real moto server (PyPI `moto[server]`, started
//! here on a loopback port and killed by PID afterwards), with the resulting state checked
//! through the AWS SDK. tests/moto.sh installs moto into ~/.cache/tollgate/moto-venv.
//!
//! moto reports `runningCount` = MOTO_ECS_SERVICE_RUNNING at CreateService and = desired
//! after UpdateService, and never runs a service's tasks; the files here use desired count 2
//! and the server runs with MOTO_ECS_SERVICE_RUNNING=2, so "steady" is reachable.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::types::TaskDefinitionStatus;
use aws_sdk_ecs::Client;

struct Moto {
    child: Child,
    endpoint: String,
    /// The venv's python (it has boto3, for reading moto's EC2 defaults).
    python: PathBuf,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    fn start() -> Moto {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run tests/moto.sh");
        assert!(
            out.status.success(),
            "tests/moto.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        // The port is picked free and then given to moto: another process may take it in
        // between, so a server that exits at once is retried on a new port.
        for _ in 0..3 {
            if let Some(moto) = Self::spawn(&server) {
                return moto;
            }
        }
        panic!("moto_server did not start after 3 attempts");
    }

    fn spawn(server: &str) -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ECS_SERVICE_RUNNING", "2")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start moto_server");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python: Path::new(server).with_file_name("python"),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                let log = std::fs::read_to_string(moto._log.path()).unwrap_or_default();
                eprintln!("moto_server exited ({status}): {log}");
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    fn client(&self) -> Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .http_client(tollgate_ecs::aws::http_client())
            .build();
        Client::from_conf(config)
    }

    /// Runs the binary against this server; returns (exit code, stdout, stderr).
    fn run(&self, file: &Path, args: &[&str]) -> (i32, String, String) {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_tollgate-ecs"))
            .arg("--file")
            .arg(file)
            .args(["--endpoint-url", &self.endpoint])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run tollgate-ecs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Only the process this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_file(dir: &Path, image_tag: u32, extra: &str) -> PathBuf {
    let path = dir.join("deploy.yml");
    let text = format!(
        r#"settings: {{wait_timeout: 20s, poll_interval: 200ms, keep_revisions: 2}}
clusters: [tollgate-a, tollgate-b]
task_definitions:
  gateway:
    family: tollgate-gateway
    network_mode: bridge
    containers:
      - name: tollgate
        image: ghcr.io/example/tollgate:{image_tag}
        memory: 512
        cpu: 256
        environment: {{KONG_DATABASE: postgres, KONG_PG_HOST: db.internal}}
        port_mappings: [{{container_port: 8000, host_port: 8000}}]
        awslogs: {{group: /ecs/tollgate, region: us-east-1, stream_prefix: gateway}}
{extra}services:
  - name: gateway
    clusters: [tollgate-a, tollgate-b]
    task_definition: gateway
    desired_count: 2
    deployment: {{maximum_percent: 200, minimum_healthy_percent: 50}}
    load_balancers:
      - {{target_group_arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tollgate/0123456789abcdef", container_name: tollgate, container_port: 8000}}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn create_clusters(client: &Client, names: &[&str]) {
    for name in names {
        client
            .create_cluster()
            .cluster_name(*name)
            .send()
            .await
            .expect("create_cluster");
    }
}

/// (status, task definition short name, desired count) of a service, as the SDK sees it.
async fn service(client: &Client, cluster: &str, name: &str) -> Option<(String, String, i32)> {
    let out = client
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
        .expect("describe_services");
    out.services().first().map(|s| {
        (
            s.status().unwrap_or_default().to_string(),
            s.task_definition()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
            s.desired_count(),
        )
    })
}

async fn active_revisions(client: &Client, family: &str) -> Vec<String> {
    let out = client
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .send()
        .await
        .expect("list_task_definitions");
    let mut v: Vec<String> = out
        .task_definition_arns()
        .iter()
        .map(|a| a.rsplit('/').next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_deploy_update_status_rollback_destroy() {
    let moto = Moto::start();
    let client = moto.client();
    create_clusters(&client, &["tollgate-a", "tollgate-b"]).await;
    let dir = tempfile::tempdir().unwrap();

    // plan on an empty account: everything is new, nothing is changed by planning.
    let file = write_file(dir.path(), 1, "");
    let (code, out, err) = moto.run(&file, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "task definition gateway: register tollgate-gateway (first revision)\n\
         1. service gateway in tollgate-a: create (deployment circuit breaker on)\n\
         1. service gateway in tollgate-b: create (deployment circuit breaker on)\n"
    );
    assert!(active_revisions(&client, "tollgate-gateway")
        .await
        .is_empty());

    // deploy creates the services in both clusters and waits for them.
    let (code, out, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "registered tollgate-gateway:1\n\
         create gateway in tollgate-a (tollgate-gateway:1)\n\
         create gateway in tollgate-b (tollgate-gateway:1)\n"
    );
    assert!(
        err.contains("service gateway in tollgate-b: steady on tollgate-gateway:1"),
        "{err}"
    );
    for c in ["tollgate-a", "tollgate-b"] {
        assert_eq!(
            service(&client, c, "gateway").await,
            Some(("ACTIVE".into(), "tollgate-gateway:1".into(), 2))
        );
    }
    // The load balancer reached CreateService (the seed's tool dropped it).
    let described = client
        .describe_services()
        .cluster("tollgate-a")
        .services("gateway")
        .send()
        .await
        .unwrap();
    let lb = &described.services()[0].load_balancers()[0];
    assert_eq!(
        (lb.container_name(), lb.container_port()),
        (Some("tollgate"), Some(8000))
    );
    assert!(lb
        .target_group_arn()
        .unwrap()
        .ends_with("targetgroup/tollgate/0123456789abcdef"));
    // What was registered is what the file says (read back by the SDK).
    let td = client
        .describe_task_definition()
        .task_definition("tollgate-gateway:1")
        .send()
        .await
        .unwrap();
    let c = &td.task_definition().unwrap().container_definitions()[0];
    assert_eq!(c.image(), Some("ghcr.io/example/tollgate:1"));
    assert_eq!((c.cpu(), c.memory()), (256, Some(512)));
    assert_eq!(c.environment().len(), 2);

    // Same file again: no change, nothing registered.
    let (code, out, err) = moto.run(&file, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("no changes\n"), "{out}");
    assert!(
        out.contains("task definition gateway: unchanged (tollgate-gateway:1)"),
        "{out}"
    );

    // A new image: plan names it, deploy updates both clusters.
    let file = write_file(dir.path(), 2, "");
    let (code, out, err) = moto.run(&file, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "register a new revision of tollgate-gateway after tollgate-gateway:1: container tollgate: image ghcr.io/example/tollgate:1 -> ghcr.io/example/tollgate:2"
        ),
        "{out}"
    );
    assert!(
        out.contains("1. service gateway in tollgate-a: update: task definition tollgate-gateway:1 -> tollgate-gateway:(new revision)"),
        "{out}"
    );
    let (code, out, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "registered tollgate-gateway:2\n\
         update gateway in tollgate-a (tollgate-gateway:2)\n\
         update gateway in tollgate-b (tollgate-gateway:2)\n"
    );
    for c in ["tollgate-a", "tollgate-b"] {
        assert_eq!(
            service(&client, c, "gateway").await,
            Some(("ACTIVE".into(), "tollgate-gateway:2".into(), 2))
        );
    }

    // status shows each service and the family's latest revision.
    let (code, out, err) = moto.run(&file, &["status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("tollgate-a/gateway: ACTIVE tollgate-gateway:2 running 2/2 ["),
        "{out}"
    );
    assert!(
        lines[1].starts_with("tollgate-b/gateway: ACTIVE tollgate-gateway:2 running 2/2 ["),
        "{out}"
    );
    assert_eq!(
        lines[2],
        "task definition gateway: tollgate-gateway:2 (2 active revision(s))"
    );

    // rollback goes to the previous revision, one cluster when asked, then the rest.
    let (code, out, err) = moto.run(&file, &["rollback", "--cluster", "tollgate-b"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "service gateway in tollgate-b: rolled back tollgate-gateway:2 -> tollgate-gateway:1\n"
    );
    assert_eq!(
        service(&client, "tollgate-a", "gateway").await.unwrap().1,
        "tollgate-gateway:2"
    );
    assert_eq!(
        service(&client, "tollgate-b", "gateway").await.unwrap().1,
        "tollgate-gateway:1"
    );
    // Nothing older than :1 to go back to.
    let (code, _, err) = moto.run(&file, &["rollback", "--cluster", "tollgate-b"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "tollgate-ecs: error: service gateway in tollgate-b runs tollgate-gateway:1, and tollgate-gateway has no earlier ACTIVE revision to roll back to\n"
    );

    // A third revision, then destroy keeping 2 revisions.
    let file = write_file(dir.path(), 3, "");
    let (code, _, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        active_revisions(&client, "tollgate-gateway").await,
        vec![
            "tollgate-gateway:1",
            "tollgate-gateway:2",
            "tollgate-gateway:3"
        ]
    );
    let (code, _, err) = moto.run(&file, &["destroy"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "tollgate-ecs: error: destroy deletes every service in the file; pass --yes to confirm\n"
    );
    assert!(service(&client, "tollgate-a", "gateway").await.is_some());
    let (code, out, err) = moto.run(&file, &["destroy", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "service gateway in tollgate-a: scaled to 0 and deleted\n\
         service gateway in tollgate-b: scaled to 0 and deleted\n\
         deregistered tollgate-gateway:1\n\
         tollgate-gateway: kept 2 revision(s)\n"
    );
    for c in ["tollgate-a", "tollgate-b"] {
        let s = service(&client, c, "gateway").await;
        assert!(
            s.is_none() || matches!(&s, Some((status, _, 0)) if status == "INACTIVE"),
            "{c}: {s:?}"
        );
    }
    assert_eq!(
        active_revisions(&client, "tollgate-gateway").await,
        vec!["tollgate-gateway:2", "tollgate-gateway:3"]
    );
    // Destroy again: already gone, exit 0.
    let (code, out, err) = moto.run(&file, &["destroy", "--yes", "--keep", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("service gateway in tollgate-a: already gone\n"),
        "{out}"
    );
    assert_eq!(
        active_revisions(&client, "tollgate-gateway").await,
        vec!["tollgate-gateway:3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_cluster_and_aws_errors_are_clear() {
    let moto = Moto::start();
    let client = moto.client();
    create_clusters(&client, &["tollgate-a"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), 1, "");
    for command in ["plan", "deploy", "status"] {
        let (code, out, err) = moto.run(&file, &[command]);
        assert_eq!(code, 1, "{command}: {out}");
        assert_eq!(
            err,
            "tollgate-ecs: error: cluster(s) not found or not ACTIVE: tollgate-b (create them first, e.g. with Terraform)\n",
            "{command}"
        );
    }
    assert!(active_revisions(&client, "tollgate-gateway")
        .await
        .is_empty());

    // ECS refuses the request (here: an awsvpc service in subnets that do not exist): the
    // service error is reported with its code and message, and the exit status is 1.
    create_clusters(&client, &["tollgate-b"]).await;
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "    desired_count: 2\n",
        "    desired_count: 2\n    network: {subnets: [subnet-0000000000nope], security_groups: [sg-0000000000nope]}\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tollgate-ecs: error: CreateService failed: InvalidParameterException"),
        "{err}"
    );
    assert!(
        err.ends_with("\nrollback: nothing had been changed\n"),
        "{err}"
    );
}

/// The default VPC's first subnet and security group in this moto server, read with the
/// venv's boto3 (the tool itself only talks to ECS).
fn default_network(moto: &Moto) -> (String, String) {
    let script = r#"
import sys, boto3
kw = dict(region_name="us-east-1", endpoint_url=sys.argv[1], aws_access_key_id="testing", aws_secret_access_key="testing")
ec2 = boto3.client("ec2", **kw)
print(ec2.describe_subnets()["Subnets"][0]["SubnetId"], ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"])
"#;
    let out = Command::new(&moto.python)
        .args(["-c", script, &moto.endpoint])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_task_runs_to_exit_code_0_before_the_gateway() {
    let moto = Moto::start();
    let client = moto.client();
    create_clusters(&client, &["tollgate-a", "tollgate-b"]).await;
    let (subnet, sg) = default_network(&moto);
    let dir = tempfile::tempdir().unwrap();
    // moto walks a FARGATE task to STOPPED (exit code 0) as it is described.
    let extra = format!(
        r#"  migrations:
    family: tollgate-migrations
    network_mode: awsvpc
    requires_compatibilities: [FARGATE]
    cpu: 256
    memory: 512
    containers:
      - {{name: migrations, image: "ghcr.io/example/tollgate:1", memory: 512, command: [tollgate, migrations, up]}}
tasks:
  - name: migrations
    cluster: tollgate-a
    task_definition: migrations
    timeout: 20s
    launch_type: FARGATE
    network: {{subnets: [{subnet}], security_groups: [{sg}]}}
"#
    );
    let file = write_file(dir.path(), 1, &extra);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "    desired_count: 2\n",
        "    desired_count: 2\n    after: [migrations]\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = moto.run(&file, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1. task migrations in tollgate-a: run migrations once and require exit code 0\n2. service gateway in tollgate-a: create"),
        "{out}"
    );
    let (code, out, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "registered tollgate-gateway:1\n\
         registered tollgate-migrations:1\n\
         task migrations succeeded\n\
         create gateway in tollgate-a (tollgate-gateway:1)\n\
         create gateway in tollgate-b (tollgate-gateway:1)\n"
    );
    let exited = err.find("tollgate-a: exited with code 0").expect(&err);
    let created = err.find("tollgate-a/gateway: created").expect(&err);
    assert!(exited < created, "{err}");
    // The task really ran (and stopped) in moto.
    let tasks = client
        .list_tasks()
        .cluster("tollgate-a")
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    let all = client
        .list_tasks()
        .cluster("tollgate-a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tasks.task_arns().len() + all.task_arns().len(),
        1,
        "{tasks:?} {all:?}"
    );
    for c in ["tollgate-a", "tollgate-b"] {
        assert_eq!(
            service(&client, c, "gateway").await,
            Some(("ACTIVE".into(), "tollgate-gateway:1".into(), 2))
        );
    }
    // Nothing changed: the task is not run again.
    let (code, out, err) = moto.run(&file, &["deploy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "no changes\n");
    assert!(
        err.contains("1. task migrations in tollgate-a: skip (nothing else changes)"),
        "{err}"
    );
}
