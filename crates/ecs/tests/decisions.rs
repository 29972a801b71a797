//! Rollout, wait and rollback decisions on the scripted fake (moto never runs a task, never
//! completes or fails a deployment). The fake moves one step per poll, so the outcomes do
//! not depend on timing; polls are 1 ms apart and timeouts short so the tests stay fast.
//! (No tokio test-util paused clock: that feature would rebuild tokio for the workspace.)

use tollgate_ecs::ecs::short_name;
use tollgate_ecs::fake::{FakeEcs, Rollout, TaskOutcome};
use tollgate_ecs::ops::{self, Filter};
use tollgate_ecs::rollout::{deploy, Collect, Error, Timing};
use tollgate_ecs::spec::{parse, Deployment};

const A: &str = "tollgate-a";
const B: &str = "tollgate-b";

/// Migrations task, then the gateway in two clusters.
fn file(gateway_image: &str, migrations_image: &str) -> Deployment {
    let text = format!(
        r#"
settings: {{wait_timeout: 2s, poll_interval: 1ms, keep_revisions: 2}}
clusters: [{A}, {B}]
task_definitions:
  gateway:
    family: tollgate-gateway
    containers:
      - {{name: tollgate, image: "{gateway_image}", memory: 512}}
  migrations:
    family: tollgate-migrations
    containers:
      - {{name: migrations, image: "{migrations_image}", memory: 256, command: [tollgate, migrations, up]}}
tasks:
  - {{name: migrations, cluster: {A}, task_definition: migrations, timeout: 1s}}
services:
  - name: gateway
    clusters: [{A}, {B}]
    task_definition: gateway
    desired_count: 2
    after: [migrations]
"#
    );
    parse("test.yml", &text).expect("valid file")
}

fn timing(d: &Deployment) -> Timing {
    Timing::from(d)
}

fn td_of(fake: &FakeEcs, cluster: &str) -> String {
    short_name(
        &fake
            .service(cluster, "gateway")
            .expect("service exists")
            .task_definition,
    )
    .to_string()
}

async fn first_deploy(fake: &FakeEcs) {
    let d = file("gw:1", "gw:1");
    deploy(fake, &d, timing(&d), &Collect::default())
        .await
        .expect("first deploy");
}

#[tokio::test]
async fn steady_state_in_order_migrations_then_each_cluster() {
    let fake = FakeEcs::new(&[A, B]);
    let d = file("gw:1", "gw:1");
    let progress = Collect::default();
    let report = deploy(&fake, &d, timing(&d), &progress)
        .await
        .expect("deploy");
    assert_eq!(
        report.actions,
        vec![
            "registered tollgate-gateway:1",
            "registered tollgate-migrations:1",
            "task migrations succeeded",
            "create gateway in tollgate-a (tollgate-gateway:1)",
            "create gateway in tollgate-b (tollgate-gateway:1)",
        ]
    );
    // The order of the mutating calls: the task has stopped before any service is created,
    // and cluster a is steady before cluster b is touched.
    let calls = fake.calls();
    let pos = |needle: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(needle))
            .expect(needle)
    };
    assert!(pos("RunTask") < pos("CreateService gateway@tollgate-a"));
    let last_task_poll = calls
        .iter()
        .rposition(|c| c.starts_with("DescribeTasks"))
        .unwrap();
    assert!(last_task_poll < pos("CreateService gateway@tollgate-a"));
    let a_steady = calls
        .iter()
        .rposition(|c| c == "DescribeServices gateway@tollgate-a")
        .unwrap();
    assert!(a_steady < pos("CreateService gateway@tollgate-b"));
    // Progress shows rollout state and counts per cluster/service.
    let lines = progress.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("tollgate-b/gateway: ACTIVE tollgate-gateway:1 running 2/2 [PRIMARY tollgate-gateway:1 COMPLETED running 2/2")),
        "{lines:#?}"
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");

    // Same file again: nothing registered, run or updated.
    let before = fake.calls().len();
    let report = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect("no-op deploy");
    assert!(report.actions.is_empty());
    let mutating: Vec<String> = fake.calls()[before..]
        .iter()
        .filter(|c| !c.starts_with("Describe") && !c.starts_with("List"))
        .cloned()
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
}

#[tokio::test]
async fn timeout_rolls_back_to_the_previous_revision() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    fake.script_rollout("gw:2", Rollout::Stuck);
    let d = file("gw:2", "gw:1");
    let started = std::time::Instant::now();
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    let Error::Rollout { failure, rollback } = &err else {
        panic!("{err}")
    };
    assert!(
        failure.contains("service gateway in tollgate-a did not reach a steady state on tollgate-gateway:2 within 2s"),
        "{failure}"
    );
    assert_eq!(
        rollback,
        &vec!["service gateway in tollgate-a: rolled back to tollgate-gateway:1".to_string()]
    );
    // Our own timeout (2 s here), not the SDK waiter's 10 minutes.
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "waited {waited:?}"
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    // Cluster b was never touched.
    assert!(!fake
        .calls()
        .iter()
        .any(|c| c.starts_with("UpdateService gateway@tollgate-b")));
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");
    let s = fake.service(A, "gateway").unwrap();
    assert_eq!((s.running, s.desired, s.deployments.len()), (2, 2, 1));
}

#[tokio::test]
async fn circuit_breaker_failure_is_reported_and_rolled_back() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    fake.script_rollout("gw:bad", Rollout::CircuitBreaker { after_polls: 3 });
    let d = file("gw:bad", "gw:1");
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "service gateway in tollgate-a: the deployment circuit breaker failed the rollout of tollgate-gateway:2 (3 failed tasks): ECS deployment circuit breaker: tasks failed to start."
        ),
        "{text}"
    );
    assert!(
        text.contains("service gateway in tollgate-a: rolled back to tollgate-gateway:1 (by ECS's circuit breaker)"),
        "{text}"
    );
    // ECS had already moved back: the tool did not issue a second update for it.
    let updates: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("UpdateService"))
        .collect();
    assert_eq!(
        updates,
        vec!["UpdateService gateway@tollgate-a tollgate-gateway:2"]
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");
}

#[tokio::test]
async fn failure_in_the_second_cluster_rolls_back_both() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    // Steady in cluster a, the circuit breaker trips in cluster b.
    fake.script_rollout_in(B, "gw:2", Rollout::CircuitBreaker { after_polls: 1 });
    let d = file("gw:2", "gw:1");
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("cluster b fails");
    let Error::Rollout { failure, rollback } = &err else {
        panic!("{err}")
    };
    assert!(
        failure.starts_with("service gateway in tollgate-b: the deployment circuit breaker failed the rollout of tollgate-gateway:2"),
        "{failure}"
    );
    // Newest change first: b (already moved back by ECS), then a (by the tool).
    assert_eq!(
        rollback,
        &vec![
            "service gateway in tollgate-b: rolled back to tollgate-gateway:1 (by ECS's circuit breaker)".to_string(),
            "service gateway in tollgate-a: rolled back to tollgate-gateway:1".to_string(),
        ]
    );
    let updates: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("UpdateService"))
        .collect();
    assert_eq!(
        updates,
        vec![
            "UpdateService gateway@tollgate-a tollgate-gateway:2",
            "UpdateService gateway@tollgate-b tollgate-gateway:2",
            "UpdateService gateway@tollgate-a tollgate-gateway:1",
        ]
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");
}

#[tokio::test]
async fn failed_migrations_stop_the_rollout_before_the_gateway() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    fake.script_task(
        "mig:2",
        TaskOutcome::Exit {
            code: 3,
            after_polls: 2,
        },
    );
    let d = file("gw:2", "mig:2");
    let before = fake.calls().len();
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "task migrations (tollgate-migrations:2) in tollgate-a failed: container migrations exited with code 3 (stopped reason: Essential container in task exited); later steps were not started"
        ),
        "{text}"
    );
    assert!(
        text.contains("rollback: nothing had been changed"),
        "{text}"
    );
    let later = &fake.calls()[before..];
    assert!(
        !later
            .iter()
            .any(|c| c.starts_with("UpdateService") || c.starts_with("CreateService")),
        "{later:?}"
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");
}

#[tokio::test]
async fn migrations_that_never_stop_time_out() {
    let fake = FakeEcs::new(&[A, B]);
    fake.script_task("mig:hang", TaskOutcome::Stuck);
    let d = file("gw:1", "mig:hang");
    let started = std::time::Instant::now();
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    assert!(
        err.to_string()
            .starts_with("task migrations (tollgate-migrations:1) in tollgate-a did not stop within 1s (last status RUNNING)"),
        "{err}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(fake.service(A, "gateway").is_none());
}

#[tokio::test]
async fn rollback_command_and_destroy_keep_revisions() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    for image in ["gw:2", "gw:3"] {
        let d = file(image, "gw:1");
        deploy(&fake, &d, timing(&d), &Collect::default())
            .await
            .expect("deploy");
    }
    let d = file("gw:3", "gw:1");
    let out = ops::rollback(
        &fake,
        &d,
        &Filter::default(),
        timing(&d),
        &Collect::default(),
    )
    .await
    .expect("rollback");
    assert_eq!(
        out,
        vec![
            "service gateway in tollgate-a: rolled back tollgate-gateway:3 -> tollgate-gateway:2",
            "service gateway in tollgate-b: rolled back tollgate-gateway:3 -> tollgate-gateway:2",
        ]
    );
    assert_eq!(td_of(&fake, B), "tollgate-gateway:2");

    let out = ops::destroy(&fake, &d, 2, timing(&d), &Collect::default())
        .await
        .expect("destroy");
    assert_eq!(
        out,
        vec![
            "service gateway in tollgate-a: scaled to 0 and deleted",
            "service gateway in tollgate-b: scaled to 0 and deleted",
            "deregistered tollgate-gateway:1",
            "tollgate-gateway: kept 2 revision(s)",
            "tollgate-migrations: kept 1 revision(s)",
        ]
    );
    assert_eq!(fake.service(A, "gateway").unwrap().status, "INACTIVE");
    // Nothing left to roll back.
    let err = ops::rollback(
        &fake,
        &d,
        &Filter::default(),
        timing(&d),
        &Collect::default(),
    )
    .await
    .expect_err("no service");
    assert_eq!(
        err.to_string(),
        "service gateway in tollgate-a does not exist; nothing to roll back"
    );
}

#[tokio::test]
async fn missing_cluster_is_refused_before_any_change() {
    let fake = FakeEcs::new(&[A]);
    let d = file("gw:1", "gw:1");
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "cluster(s) not found or not ACTIVE: tollgate-b (create them first, e.g. with Terraform)"
    );
    assert_eq!(fake.calls(), vec!["DescribeClusters tollgate-a,tollgate-b"]);
}

#[tokio::test]
async fn a_new_service_briefly_missing_is_waited_for_but_not_forever() {
    let fake = FakeEcs::new(&[A, B]);
    fake.hide_new_services(3);
    let d = file("gw:1", "gw:1");
    deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect("visible after 3 polls");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");

    let fake = FakeEcs::new(&[A, B]);
    fake.hide_new_services(u32::MAX);
    let started = std::time::Instant::now();
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("never visible");
    let Error::Rollout { failure, rollback } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        failure,
        "service gateway in tollgate-a is not found (MISSING) while waiting for it"
    );
    assert!(
        rollback[0].starts_with("service gateway in tollgate-a: created by this run"),
        "{rollback:?}"
    );
    // The grace is half the 2 s wait timeout here (30 s with real timeouts).
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_refused_update_in_the_second_cluster_rolls_back_the_first() {
    let fake = FakeEcs::new(&[A, B]);
    first_deploy(&fake).await;
    fake.fail_on(
        "UpdateService gateway@tollgate-b",
        "UpdateService",
        "AccessDeniedException: not authorized to perform ecs:UpdateService",
    );
    let d = file("gw:2", "gw:1");
    let err = deploy(&fake, &d, timing(&d), &Collect::default())
        .await
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "UpdateService failed: AccessDeniedException: not authorized to perform ecs:UpdateService\n\
         rollback:\n  service gateway in tollgate-a: rolled back to tollgate-gateway:1"
    );
    assert_eq!(td_of(&fake, A), "tollgate-gateway:1");
    assert_eq!(td_of(&fake, B), "tollgate-gateway:1");
}
