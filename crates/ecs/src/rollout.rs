//! `deploy`: register, create/update in order, wait for steady state with our own timeout,
//! and roll back what this run changed when anything fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::ecs::{short_name, AwsError, Ecs, Service, ServiceInput};
use crate::plan::{plan, ServiceAction, StepPlan};
use crate::spec::{Deployment, FileError, ServiceSpec, TaskSpec};

/// A progress line is printed when something changes, and at least this often while waiting.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// How long a service may be reported MISSING right after it was created or updated: 30 s,
/// or half the wait timeout when that is shorter.
fn missing_grace(timeout: Duration) -> Duration {
    Duration::from_secs(30).min(timeout / 2)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The world is not as the command needs it (missing cluster, no earlier revision).
    #[error("{0}")]
    Precondition(String),
    /// A step failed after changes were made; `rollback` says what was undone.
    #[error("{failure}\n{}", rollback_text(.rollback))]
    Rollout {
        failure: String,
        rollback: Vec<String>,
    },
}

fn rollback_text(lines: &[String]) -> String {
    if lines.is_empty() {
        return "rollback: nothing had been changed".into();
    }
    let mut s = String::from("rollback:");
    for l in lines {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

/// Where progress lines go: stderr for the CLI, a buffer in tests.
pub trait Progress: Send + Sync {
    fn line(&self, line: &str);
}

pub struct Stderr;

impl Progress for Stderr {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

#[derive(Default)]
pub struct Collect(pub Mutex<Vec<String>>);

impl Progress for Collect {
    fn line(&self, line: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    }
}

impl Collect {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub wait_timeout: Duration,
    pub poll_interval: Duration,
}

impl Timing {
    pub fn from(d: &Deployment) -> Self {
        Self {
            wait_timeout: d.file.settings.wait_timeout,
            poll_interval: d.file.settings.poll_interval,
        }
    }
}

pub(crate) fn service_input<'a>(
    cluster: &'a str,
    s: &'a ServiceSpec,
    task_definition: &'a str,
    desired: i32,
) -> ServiceInput<'a> {
    ServiceInput {
        cluster,
        name: &s.name,
        task_definition,
        desired,
        deployment: &s.deployment,
        launch_type: s.launch_type.as_deref(),
        network: s.network.as_ref(),
        load_balancers: &s.load_balancers,
    }
}

/// A service this run changed, and what it ran before.
struct Touched {
    cluster: String,
    service: usize,
    /// None when this run created it.
    previous: Option<(String, i32)>,
}

/// What `deploy` did, one line per action.
#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<String>,
}

/// Loads and checks the file, then deploys it with the file's timing. A bad file fails here,
/// before any call reaches `ecs`.
pub async fn deploy_file(
    ecs: &dyn Ecs,
    path: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Report, Error> {
    let d = crate::spec::load(path)?;
    deploy(ecs, &d, Timing::from(&d), progress).await
}

pub async fn deploy(
    ecs: &dyn Ecs,
    d: &Deployment,
    timing: Timing,
    progress: &dyn Progress,
) -> Result<Report, Error> {
    let plan = plan(ecs, d).await?;
    for line in plan.to_string().lines() {
        progress.line(&format!("plan: {line}"));
    }
    let mut report = Report::default();
    if !plan.has_changes() {
        return Ok(report);
    }
    let mut arn_of: HashMap<&str, String> = HashMap::new();
    for t in &plan.task_definitions {
        let arn = if t.register() {
            let r = ecs
                .register_task_definition(d.task_definition(&t.key))
                .await?;
            let line = format!("registered {}", short_name(&r.arn));
            progress.line(&line);
            report.actions.push(line);
            r.arn
        } else {
            t.current
                .as_ref()
                .map(|c| c.arn.clone())
                .unwrap_or_default()
        };
        arn_of.insert(t.key.as_str(), arn);
    }
    let mut touched: Vec<Touched> = Vec::new();
    for step in &plan.steps {
        match step {
            StepPlan::Task { index, run, .. } => {
                if !run {
                    continue;
                }
                let t = d.task(*index);
                let arn = &arn_of[t.task_definition.as_str()];
                let timeout = t.timeout.unwrap_or(timing.wait_timeout);
                if let Err(failure) =
                    run_one_off(ecs, t, arn, timeout, timing.poll_interval, progress).await
                {
                    return Err(roll_back(ecs, d, touched, failure, timing, progress).await);
                }
                report.actions.push(format!("task {} succeeded", t.name));
            }
            StepPlan::Service {
                index, clusters, ..
            } => {
                let s = d.service(*index);
                let target = &arn_of[s.task_definition.as_str()];
                let timeout = s.timeout.unwrap_or(timing.wait_timeout);
                for c in clusters {
                    let input = service_input(&c.cluster, s, target, s.desired_count);
                    // What the service ran before; None when this run creates it.
                    let previous = match (&c.action, &c.current) {
                        (ServiceAction::Unchanged, _) => continue,
                        (ServiceAction::Create, _) => None,
                        (ServiceAction::Update(_), current) => current
                            .as_ref()
                            .map(|c| (c.task_definition.clone(), c.desired)),
                    };
                    let (verb, result) = if c.action == ServiceAction::Create {
                        ("create", ecs.create_service(&input).await)
                    } else {
                        ("update", ecs.update_service(&input).await)
                    };
                    if let Err(e) = result {
                        // The refused call changed nothing; earlier changes are undone.
                        return Err(
                            roll_back(ecs, d, touched, e.to_string(), timing, progress).await
                        );
                    }
                    touched.push(Touched {
                        cluster: c.cluster.clone(),
                        service: *index,
                        previous,
                    });
                    progress.line(&format!(
                        "{}/{}: {verb}d, waiting for steady state",
                        c.cluster, s.name
                    ));
                    let waited = wait_steady(
                        ecs,
                        &c.cluster,
                        &s.name,
                        target,
                        timeout,
                        timing.poll_interval,
                        progress,
                    )
                    .await;
                    if let Err(failure) = waited {
                        return Err(roll_back(ecs, d, touched, failure, timing, progress).await);
                    }
                    report.actions.push(format!(
                        "{} {} in {} ({})",
                        verb,
                        s.name,
                        c.cluster,
                        short_name(target)
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// Runs a one-off task and waits for it to stop; every container must exit with 0.
async fn run_one_off(
    ecs: &dyn Ecs,
    t: &TaskSpec,
    arn: &str,
    timeout: Duration,
    poll: Duration,
    progress: &dyn Progress,
) -> Result<(), String> {
    let what = format!("task {} ({}) in {}", t.name, short_name(arn), t.cluster);
    let task = ecs
        .run_task(
            &t.cluster,
            arn,
            t.launch_type.as_deref(),
            t.network.as_ref(),
        )
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    progress.line(&format!("{what}: started {task}"));
    let start = Instant::now();
    let mut last = String::new();
    let mut last_print = start;
    loop {
        let state = ecs
            .describe_task(&t.cluster, &task)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let line = format!("{}/{}: task {}", t.cluster, t.name, state.last_status);
        if line != last || last_print.elapsed() >= HEARTBEAT {
            progress.line(&format!("{line} ({}s)", start.elapsed().as_secs()));
            last = line;
            last_print = Instant::now();
        }
        if state.last_status == "STOPPED" {
            let bad: Vec<String> = state
                .containers
                .iter()
                .filter(|c| c.exit_code != Some(0))
                .map(|c| match c.exit_code {
                    Some(code) => format!("container {} exited with code {code}", c.name),
                    None => format!(
                        "container {} did not run ({})",
                        c.name,
                        c.reason.as_deref().unwrap_or("no reason given")
                    ),
                })
                .collect();
            if bad.is_empty() && !state.containers.is_empty() {
                progress.line(&format!("{what}: exited with code 0"));
                return Ok(());
            }
            let reason = state
                .stopped_reason
                .as_deref()
                .unwrap_or("no stopped reason");
            let bad = if bad.is_empty() {
                "no container reported".to_string()
            } else {
                bad.join(", ")
            };
            return Err(format!(
                "{what} failed: {bad} (stopped reason: {reason}); later steps were not started"
            ));
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "{what} did not stop within {}s (last status {}); it may still be running: {task}; later steps were not started",
                timeout.as_secs(),
                state.last_status
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// One progress line for a service: every deployment with its rollout state and counts.
pub fn describe_line(cluster: &str, s: &Service) -> String {
    let deployments: Vec<String> = s
        .deployments
        .iter()
        .map(|d| {
            format!(
                "{} {} {} running {}/{} pending {} failed {}",
                d.status,
                short_name(&d.task_definition),
                d.rollout_state.as_deref().unwrap_or("-"),
                d.running,
                d.desired,
                d.pending,
                d.failed_tasks
            )
        })
        .collect();
    format!(
        "{cluster}/{}: {} {} running {}/{} [{}]",
        s.name,
        s.status,
        short_name(&s.task_definition),
        s.running,
        s.desired,
        deployments.join("; ")
    )
}

/// Steady: the service runs `target`, has one deployment, which is not still rolling out
/// (or failed), and running == desired. Same idea as the SDK's services_stable waiter,
/// but with our timeout and the circuit breaker's verdict.
fn is_steady(s: &Service, target: &str) -> bool {
    s.task_definition == target
        && s.deployments.len() == 1
        && s.deployments[0]
            .rollout_state
            .as_deref()
            .is_none_or(|r| r == "COMPLETED")
        && s.running == s.desired
}

pub(crate) async fn wait_steady(
    ecs: &dyn Ecs,
    cluster: &str,
    name: &str,
    target: &str,
    timeout: Duration,
    poll: Duration,
    progress: &dyn Progress,
) -> Result<(), String> {
    let what = format!("service {name} in {cluster}");
    let start = Instant::now();
    let mut last = String::new();
    let mut last_print = start;
    loop {
        let Some(s) = ecs
            .describe_service(cluster, name)
            .await
            .map_err(|e| format!("{what}: {e}"))?
        else {
            // A just-created service may take a moment to be visible (eventual consistency).
            if start.elapsed() >= missing_grace(timeout) {
                return Err(format!(
                    "{what} is not found (MISSING) while waiting for it"
                ));
            }
            tokio::time::sleep(poll).await;
            continue;
        };
        let line = describe_line(cluster, &s);
        if line != last || last_print.elapsed() >= HEARTBEAT {
            progress.line(&format!("{line} ({}s)", start.elapsed().as_secs()));
            last.clone_from(&line);
            last_print = Instant::now();
        }
        if s.status != "ACTIVE" {
            return Err(format!("{what} became {} while deploying", s.status));
        }
        if let Some(d) = s
            .deployments
            .iter()
            .find(|d| d.task_definition == target && d.rollout_state.as_deref() == Some("FAILED"))
        {
            return Err(format!(
                "{what}: the deployment circuit breaker failed the rollout of {} ({} failed tasks): {}",
                short_name(target),
                d.failed_tasks,
                d.rollout_state_reason.as_deref().unwrap_or("no reason given")
            ));
        }
        if s.task_definition != target {
            return Err(format!(
                "{what}: ECS moved the service to {} while {} was rolling out (circuit breaker rollback)",
                short_name(&s.task_definition),
                short_name(target)
            ));
        }
        if is_steady(&s, target) {
            progress.line(&format!("{what}: steady on {}", short_name(target)));
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "{what} did not reach a steady state on {} within {}s (last: {line})",
                short_name(target),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Puts every service this run changed back on what it ran before, newest change first.
async fn roll_back(
    ecs: &dyn Ecs,
    d: &Deployment,
    touched: Vec<Touched>,
    failure: String,
    timing: Timing,
    progress: &dyn Progress,
) -> Error {
    progress.line(&format!("FAILED: {failure}"));
    let mut lines = Vec::new();
    for t in touched.into_iter().rev() {
        let s = d.service(t.service);
        let what = format!("service {} in {}", s.name, t.cluster);
        let Some((previous, desired)) = t.previous else {
            lines.push(format!(
                "{what}: created by this run, no earlier revision to return to; left for the circuit breaker (run `destroy` to remove it)"
            ));
            continue;
        };
        progress.line(&format!("rolling back {what} to {}", short_name(&previous)));
        // With the circuit breaker's rollback, ECS may already be on the previous revision.
        let current = ecs.describe_service(&t.cluster, &s.name).await;
        let already = matches!(&current, Ok(Some(c)) if c.task_definition == previous);
        if !already {
            if let Err(e) = ecs
                .update_service(&service_input(&t.cluster, s, &previous, desired))
                .await
            {
                lines.push(format!(
                    "{what}: rollback to {} FAILED: {e}",
                    short_name(&previous)
                ));
                continue;
            }
        }
        let timeout = s.timeout.unwrap_or(timing.wait_timeout);
        match wait_steady(
            ecs,
            &t.cluster,
            &s.name,
            &previous,
            timeout,
            timing.poll_interval,
            progress,
        )
        .await
        {
            Ok(()) => lines.push(format!(
                "{what}: rolled back to {}{}",
                short_name(&previous),
                if already {
                    " (by ECS's circuit breaker)"
                } else {
                    ""
                }
            )),
            Err(e) => lines.push(format!(
                "{what}: rollback to {} did not settle: {e}",
                short_name(&previous)
            )),
        }
    }
    Error::Rollout {
        failure,
        rollback: lines,
    }
}
