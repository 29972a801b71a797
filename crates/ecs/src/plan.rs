//! What `deploy` would change: read-only calls, then a diff of the file against ECS.

use std::fmt;

use crate::ecs::{short_name, Ecs, Service, TaskDefinition};
use crate::rollout::Error;
use crate::spec::{ContainerSpec, Deployment, Step, TaskDefinitionSpec};

#[derive(Debug, Clone)]
pub struct Plan {
    pub task_definitions: Vec<TaskDefinitionPlan>,
    pub steps: Vec<StepPlan>,
}

#[derive(Debug, Clone)]
pub struct TaskDefinitionPlan {
    pub key: String,
    pub family: String,
    /// The latest ACTIVE revision, if any.
    pub current: Option<TaskDefinition>,
    /// Why a new revision is needed; empty when the latest revision matches the file.
    pub changes: Vec<String>,
}

impl TaskDefinitionPlan {
    pub fn register(&self) -> bool {
        self.current.is_none() || !self.changes.is_empty()
    }
}

#[derive(Debug, Clone)]
pub enum StepPlan {
    Task {
        index: usize,
        name: String,
        cluster: String,
        task_definition: String,
        /// One-off tasks run only when the deploy changes something.
        run: bool,
    },
    Service {
        index: usize,
        name: String,
        clusters: Vec<ServicePlan>,
    },
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub cluster: String,
    pub current: Option<Service>,
    pub action: ServiceAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    Create,
    Update(Vec<String>),
    Unchanged,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.task_definitions
            .iter()
            .any(TaskDefinitionPlan::register)
            || self.steps.iter().any(|s| match s {
                StepPlan::Service { clusters, .. } => clusters
                    .iter()
                    .any(|c| c.action != ServiceAction::Unchanged),
                StepPlan::Task { .. } => false,
            })
    }
}

/// Fails with the missing clusters before anything else is read.
pub async fn check_clusters(ecs: &dyn Ecs, d: &Deployment) -> Result<(), Error> {
    let active = ecs.active_clusters(&d.file.clusters).await?;
    let missing: Vec<&str> = d
        .file
        .clusters
        .iter()
        .filter(|c| !active.contains(c))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Precondition(format!(
            "cluster(s) not found or not ACTIVE: {} (create them first, e.g. with Terraform)",
            missing.join(", ")
        )))
    }
}

pub async fn plan(ecs: &dyn Ecs, d: &Deployment) -> Result<Plan, Error> {
    check_clusters(ecs, d).await?;
    let mut task_definitions = Vec::new();
    for (key, spec) in &d.file.task_definitions {
        let current = ecs.describe_task_definition(&spec.family).await?;
        let current = current.filter(|c| c.active);
        let changes = match &current {
            None => vec!["first revision".to_string()],
            Some(c) => diff_task_definition(spec, &c.spec),
        };
        task_definitions.push(TaskDefinitionPlan {
            key: key.clone(),
            family: spec.family.clone(),
            current,
            changes,
        });
    }
    let td = |key: &str| {
        task_definitions
            .iter()
            .find(|t| t.key == key)
            .expect("validated reference")
    };
    let mut steps = Vec::new();
    for step in &d.order {
        match *step {
            Step::Task(index) => {
                let t = d.task(index);
                steps.push(StepPlan::Task {
                    index,
                    name: t.name.clone(),
                    cluster: t.cluster.clone(),
                    task_definition: t.task_definition.clone(),
                    run: false,
                });
            }
            Step::Service(index) => {
                let s = d.service(index);
                let t = td(&s.task_definition);
                let mut clusters = Vec::new();
                for cluster in &s.clusters {
                    let current = ecs
                        .describe_service(cluster, &s.name)
                        .await?
                        .filter(|c| c.status != "INACTIVE");
                    let action = match &current {
                        None => ServiceAction::Create,
                        Some(c) if c.status == "DRAINING" => {
                            return Err(Error::Precondition(format!(
                                "service {} in cluster {cluster} is DRAINING (being deleted); wait until it is INACTIVE",
                                s.name
                            )))
                        }
                        Some(c) => {
                            let mut changes = Vec::new();
                            match (&t.current, t.register()) {
                                (Some(cur), false) if cur.arn == c.task_definition => {}
                                (Some(cur), false) => changes.push(format!(
                                    "task definition {} -> {}",
                                    short_name(&c.task_definition),
                                    short_name(&cur.arn)
                                )),
                                _ => changes.push(format!(
                                    "task definition {} -> {}:(new revision)",
                                    short_name(&c.task_definition),
                                    t.family
                                )),
                            }
                            if c.desired != s.desired_count {
                                changes.push(format!("desired count {} -> {}", c.desired, s.desired_count));
                            }
                            // ECS may not echo these (moto after CreateService): compare only when known.
                            let percent = |name: &str, have: Option<i32>, want: Option<i32>, out: &mut Vec<String>| {
                                if let (Some(h), Some(w)) = (have, want) {
                                    if h != w {
                                        out.push(format!("{name} {h} -> {w}"));
                                    }
                                }
                            };
                            percent("maximum percent", c.maximum_percent, s.deployment.maximum_percent, &mut changes);
                            percent(
                                "minimum healthy percent",
                                c.minimum_healthy_percent,
                                s.deployment.minimum_healthy_percent,
                                &mut changes,
                            );
                            if changes.is_empty() {
                                ServiceAction::Unchanged
                            } else {
                                ServiceAction::Update(changes)
                            }
                        }
                    };
                    clusters.push(ServicePlan {
                        cluster: cluster.clone(),
                        current,
                        action,
                    });
                }
                steps.push(StepPlan::Service {
                    index,
                    name: s.name.clone(),
                    clusters,
                });
            }
        }
    }
    let mut plan = Plan {
        task_definitions,
        steps,
    };
    if plan.has_changes() {
        for s in &mut plan.steps {
            if let StepPlan::Task { run, .. } = s {
                *run = true;
            }
        }
    }
    Ok(plan)
}

/// What differs between the file's task definition and a registered one, field by field.
pub fn diff_task_definition(want: &TaskDefinitionSpec, have: &TaskDefinitionSpec) -> Vec<String> {
    let mut out = Vec::new();
    let awsvpc = want.network_mode.as_deref() == Some("awsvpc");
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "bridge".into());
    if mode(&want.network_mode) != mode(&have.network_mode) {
        out.push(format!(
            "network mode {} -> {}",
            mode(&have.network_mode),
            mode(&want.network_mode)
        ));
    }
    let field = |name: &str, h: &dyn fmt::Debug, w: &dyn fmt::Debug, out: &mut Vec<String>| {
        let (h, w) = (format!("{h:?}"), format!("{w:?}"));
        if h != w {
            out.push(format!("{name} {h} -> {w}"));
        }
    };
    field("cpu", &have.cpu, &want.cpu, &mut out);
    field("memory", &have.memory, &want.memory, &mut out);
    field(
        "requires compatibilities",
        &have.requires_compatibilities,
        &want.requires_compatibilities,
        &mut out,
    );
    field(
        "execution role",
        &have.execution_role_arn,
        &want.execution_role_arn,
        &mut out,
    );
    field(
        "task role",
        &have.task_role_arn,
        &want.task_role_arn,
        &mut out,
    );
    for w in &want.containers {
        match have.containers.iter().find(|h| h.name == w.name) {
            None => out.push(format!("container {} added", w.name)),
            Some(h) => diff_container(&normalize(w, awsvpc), &normalize(h, awsvpc), &mut out),
        }
    }
    for h in &have.containers {
        if !want.containers.iter().any(|w| w.name == h.name) {
            out.push(format!("container {} removed", h.name));
        }
    }
    out
}

/// ECS fills in defaults the file may leave out (host port, protocol case).
fn normalize(c: &ContainerSpec, awsvpc: bool) -> ContainerSpec {
    let mut c = c.clone();
    for p in &mut c.port_mappings {
        p.protocol = p.protocol.to_ascii_lowercase();
        if awsvpc && p.host_port.is_none() {
            p.host_port = Some(p.container_port);
        }
        if p.host_port == Some(0) {
            p.host_port = None;
        }
    }
    c
}

fn diff_container(w: &ContainerSpec, h: &ContainerSpec, out: &mut Vec<String>) {
    if w.image != h.image {
        out.push(format!(
            "container {}: image {} -> {}",
            w.name, h.image, w.image
        ));
    }
    let mut other = Vec::new();
    if w.cpu != h.cpu {
        other.push("cpu");
    }
    if w.memory != h.memory || w.memory_reservation != h.memory_reservation {
        other.push("memory");
    }
    if w.essential != h.essential {
        other.push("essential");
    }
    if w.command != h.command || w.entry_point != h.entry_point {
        other.push("command");
    }
    if w.environment != h.environment {
        other.push("environment");
    }
    if w.port_mappings != h.port_mappings {
        other.push("port mappings");
    }
    if w.awslogs != h.awslogs {
        other.push("logging");
    }
    if w.depends_on != h.depends_on {
        other.push("depends_on");
    }
    if !other.is_empty() {
        out.push(format!(
            "container {}: {} changed",
            w.name,
            other.join(", ")
        ));
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.task_definitions {
            match (&t.current, t.register()) {
                (_, false) => writeln!(
                    f,
                    "task definition {}: unchanged ({})",
                    t.key,
                    t.current.as_ref().map_or("", |c| short_name(&c.arn))
                )?,
                (None, true) => writeln!(
                    f,
                    "task definition {}: register {} (first revision)",
                    t.key, t.family
                )?,
                (Some(c), true) => writeln!(
                    f,
                    "task definition {}: register a new revision of {} after {}: {}",
                    t.key,
                    t.family,
                    short_name(&c.arn),
                    t.changes.join("; ")
                )?,
            }
        }
        for (n, s) in self.steps.iter().enumerate() {
            match s {
                StepPlan::Task {
                    name,
                    cluster,
                    task_definition,
                    run,
                    ..
                } => writeln!(
                    f,
                    "{}. task {name} in {cluster}: {}",
                    n + 1,
                    if *run {
                        format!("run {task_definition} once and require exit code 0")
                    } else {
                        "skip (nothing else changes)".to_string()
                    }
                )?,
                StepPlan::Service { name, clusters, .. } => {
                    for c in clusters {
                        let what = match &c.action {
                            ServiceAction::Create => {
                                "create (deployment circuit breaker on)".to_string()
                            }
                            ServiceAction::Update(ch) => format!("update: {}", ch.join("; ")),
                            ServiceAction::Unchanged => "unchanged".to_string(),
                        };
                        writeln!(f, "{}. service {name} in {}: {what}", n + 1, c.cluster)?;
                    }
                }
            }
        }
        if !self.has_changes() {
            writeln!(f, "no changes")?;
        }
        Ok(())
    }
}
