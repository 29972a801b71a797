//! A deterministic in-memory ECS for the decisions moto cannot model: moto never runs a
//! service's tasks, never moves a deployment to COMPLETED or FAILED, never triggers the
//! circuit breaker, and cannot run a task to an exit code.
//!
//! What happens to a rollout or a one-off task is scripted per container image (the first
//! container's): each `describe_*` call is one step of time. Every call is logged.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ecs::{
    AwsError, AwsResult, ContainerState, Deployment, Ecs, Service, ServiceInput, TaskDefinition,
    TaskState,
};
use crate::spec::{NetworkSpec, TaskDefinitionSpec};

/// How a deployment of an image goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// COMPLETED with all tasks running after this many polls.
    Steady { after_polls: u32 },
    /// IN_PROGRESS forever, no task ever running.
    Stuck,
    /// The circuit breaker marks it FAILED after this many polls; with rollback on, ECS puts
    /// the service back on the previous deployment.
    CircuitBreaker { after_polls: u32 },
}

/// How a one-off task of an image ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Exit { code: i32, after_polls: u32 },
    Stuck,
}

struct FakeService {
    svc: Service,
    circuit_breaker: bool,
    polls: u32,
    /// DescribeServices answers MISSING this many more times (eventual consistency).
    hidden: u32,
}

struct FakeTask {
    polls: u32,
    outcome: TaskOutcome,
    containers: Vec<String>,
}

#[derive(Default)]
struct State {
    clusters: Vec<String>,
    task_definitions: Vec<TaskDefinition>,
    services: HashMap<(String, String), FakeService>,
    tasks: HashMap<String, FakeTask>,
    /// By (cluster or None for every cluster, image).
    rollouts: HashMap<(Option<String>, String), Rollout>,
    outcomes: HashMap<String, TaskOutcome>,
    calls: Vec<String>,
    next_id: u64,
    hide_new_services: u32,
    /// (call prefix, error): calls starting with the prefix fail.
    failures: Vec<(String, AwsError)>,
}

#[derive(Default)]
pub struct FakeEcs {
    state: Mutex<State>,
}

fn err(operation: &'static str, message: impl Into<String>) -> AwsError {
    AwsError {
        operation,
        message: message.into(),
    }
}

impl FakeEcs {
    pub fn new(clusters: &[&str]) -> Self {
        let fake = Self::default();
        fake.lock().clusters = clusters.iter().map(|c| c.to_string()).collect();
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn script_rollout(&self, image: &str, r: Rollout) {
        self.lock().rollouts.insert((None, image.to_string()), r);
    }

    /// Like `script_rollout`, for one cluster only (wins over the all-cluster script).
    pub fn script_rollout_in(&self, cluster: &str, image: &str, r: Rollout) {
        self.lock()
            .rollouts
            .insert((Some(cluster.to_string()), image.to_string()), r);
    }

    pub fn script_task(&self, image: &str, o: TaskOutcome) {
        self.lock().outcomes.insert(image.to_string(), o);
    }

    /// Services created from now on are reported MISSING by the next `polls` describes.
    pub fn hide_new_services(&self, polls: u32) {
        self.lock().hide_new_services = polls;
    }

    /// Makes every call whose log line starts with `call_prefix` fail with this error.
    pub fn fail_on(&self, call_prefix: &str, operation: &'static str, message: &str) {
        self.lock()
            .failures
            .push((call_prefix.to_string(), err(operation, message)));
    }

    /// Every call made so far, as "Operation target".
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn service(&self, cluster: &str, name: &str) -> Option<Service> {
        self.lock()
            .services
            .get(&(cluster.to_string(), name.to_string()))
            .map(|s| s.svc.clone())
    }
}

impl State {
    /// Records a call; fails it when a scripted failure matches.
    fn log(&mut self, call: String) -> AwsResult<()> {
        let failure = self
            .failures
            .iter()
            .find(|(prefix, _)| call.starts_with(prefix.as_str()))
            .map(|(_, e)| e.clone());
        self.calls.push(call);
        failure.map_or(Ok(()), Err)
    }

    fn find_td(&self, reference: &str) -> Option<&TaskDefinition> {
        if reference.contains(':') {
            self.task_definitions
                .iter()
                .find(|t| t.arn == reference || format!("{}:{}", t.family, t.revision) == reference)
        } else {
            self.task_definitions
                .iter()
                .filter(|t| t.family == reference && t.active)
                .max_by_key(|t| t.revision)
        }
    }

    fn image_of(&self, td: &str) -> String {
        self.find_td(td)
            .and_then(|t| t.spec.containers.first())
            .map(|c| c.image.clone())
            .unwrap_or_default()
    }

    fn rollout_of(&self, cluster: &str, td: &str) -> Rollout {
        let image = self.image_of(td);
        self.rollouts
            .get(&(Some(cluster.to_string()), image.clone()))
            .or_else(|| self.rollouts.get(&(None, image)))
            .copied()
            .unwrap_or(Rollout::Steady { after_polls: 2 })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// One step of time for a service: its PRIMARY deployment moves as scripted.
    fn advance(&mut self, key: &(String, String)) {
        let Some(fs) = self.services.get(key) else {
            return;
        };
        if fs.svc.status != "ACTIVE" {
            return;
        }
        let primary_td = fs.svc.task_definition.clone();
        let rollout = self.rollout_of(&key.0, &primary_td);
        let fs = self.services.get_mut(key).expect("checked above");
        // A FAILED deployment stays visible for one poll, then goes.
        fs.svc
            .deployments
            .retain(|d| d.rollout_state.as_deref() != Some("FAILED"));
        fs.polls += 1;
        let desired = fs.svc.desired;
        let Some(primary) = fs
            .svc
            .deployments
            .iter()
            .position(|d| d.status == "PRIMARY")
        else {
            return;
        };
        match rollout {
            Rollout::Steady { after_polls } if fs.polls >= after_polls => {
                let mut d = fs.svc.deployments[primary].clone();
                d.rollout_state = Some("COMPLETED".into());
                d.running = desired;
                d.pending = 0;
                fs.svc.deployments = vec![d];
                fs.svc.running = desired;
                fs.svc.pending = 0;
            }
            Rollout::Steady { .. } | Rollout::Stuck => {
                let d = &mut fs.svc.deployments[primary];
                d.pending = desired;
            }
            Rollout::CircuitBreaker { after_polls } if fs.polls >= after_polls => {
                let d = &mut fs.svc.deployments[primary];
                d.rollout_state = Some("FAILED".into());
                d.rollout_state_reason =
                    Some("ECS deployment circuit breaker: tasks failed to start.".into());
                d.failed_tasks = 3;
                d.status = "ACTIVE".into();
                d.running = 0;
                d.pending = 0;
                if fs.circuit_breaker {
                    if let Some(prev) = fs
                        .svc
                        .deployments
                        .iter_mut()
                        .find(|d| d.rollout_state.as_deref() != Some("FAILED"))
                    {
                        prev.status = "PRIMARY".into();
                        prev.rollout_state = Some("IN_PROGRESS".into());
                        fs.svc.task_definition = prev.task_definition.clone();
                        fs.polls = 0;
                    }
                }
            }
            Rollout::CircuitBreaker { .. } => {
                fs.svc.deployments[primary].failed_tasks += 1;
            }
        }
    }
}

#[async_trait]
impl Ecs for FakeEcs {
    async fn active_clusters(&self, names: &[String]) -> AwsResult<Vec<String>> {
        let mut st = self.lock();
        st.log(format!("DescribeClusters {}", names.join(",")))?;
        Ok(names
            .iter()
            .filter(|n| st.clusters.contains(n))
            .cloned()
            .collect())
    }

    async fn register_task_definition(
        &self,
        spec: &TaskDefinitionSpec,
    ) -> AwsResult<TaskDefinition> {
        let mut st = self.lock();
        st.log(format!("RegisterTaskDefinition {}", spec.family))?;
        let revision = st
            .task_definitions
            .iter()
            .filter(|t| t.family == spec.family)
            .map(|t| t.revision)
            .max()
            .unwrap_or(0)
            + 1;
        let td = TaskDefinition {
            arn: format!(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:{revision}",
                spec.family
            ),
            family: spec.family.clone(),
            revision,
            active: true,
            spec: spec.clone(),
        };
        st.task_definitions.push(td.clone());
        Ok(td)
    }

    async fn describe_task_definition(&self, reference: &str) -> AwsResult<Option<TaskDefinition>> {
        let mut st = self.lock();
        st.log(format!("DescribeTaskDefinition {reference}"))?;
        Ok(st.find_td(reference).cloned())
    }

    async fn list_active_revisions(&self, family: &str) -> AwsResult<Vec<String>> {
        let mut st = self.lock();
        st.log(format!("ListTaskDefinitions {family}"))?;
        let mut tds: Vec<&TaskDefinition> = st
            .task_definitions
            .iter()
            .filter(|t| t.family == family && t.active)
            .collect();
        tds.sort_by_key(|t| t.revision);
        Ok(tds.into_iter().map(|t| t.arn.clone()).collect())
    }

    async fn deregister_task_definition(&self, arn: &str) -> AwsResult<()> {
        let mut st = self.lock();
        st.log(format!("DeregisterTaskDefinition {arn}"))?;
        match st.task_definitions.iter_mut().find(|t| t.arn == arn) {
            Some(t) => {
                t.active = false;
                Ok(())
            }
            None => Err(err(
                "DeregisterTaskDefinition",
                "ClientException: unknown task definition",
            )),
        }
    }

    async fn describe_service(&self, cluster: &str, name: &str) -> AwsResult<Option<Service>> {
        let mut st = self.lock();
        st.log(format!("DescribeServices {name}@{cluster}"))?;
        if !st.clusters.iter().any(|c| c == cluster) {
            return Err(err(
                "DescribeServices",
                "ClusterNotFoundException: Cluster not found.",
            ));
        }
        let key = (cluster.to_string(), name.to_string());
        if let Some(fs) = st.services.get_mut(&key).filter(|fs| fs.hidden > 0) {
            fs.hidden -= 1;
            return Ok(None);
        }
        st.advance(&key);
        Ok(st.services.get(&key).map(|s| s.svc.clone()))
    }

    async fn create_service(&self, input: &ServiceInput<'_>) -> AwsResult<()> {
        let mut st = self.lock();
        st.log(format!("CreateService {}@{}", input.name, input.cluster))?;
        if !st.clusters.iter().any(|c| c == input.cluster) {
            return Err(err(
                "CreateService",
                "ClusterNotFoundException: Cluster not found.",
            ));
        }
        let key = (input.cluster.to_string(), input.name.to_string());
        if st
            .services
            .get(&key)
            .is_some_and(|s| s.svc.status == "ACTIVE")
        {
            return Err(err(
                "CreateService",
                "InvalidParameterException: Creation of service was not idempotent.",
            ));
        }
        let Some(td) = st
            .find_td(input.task_definition)
            .filter(|t| t.active)
            .map(|t| t.arn.clone())
        else {
            return Err(err(
                "CreateService",
                "ClientException: TaskDefinition not found.",
            ));
        };
        let id = st.id();
        let hidden = st.hide_new_services;
        st.services.insert(
            key,
            FakeService {
                svc: Service {
                    name: input.name.to_string(),
                    status: "ACTIVE".into(),
                    task_definition: td.clone(),
                    desired: input.desired,
                    running: 0,
                    pending: input.desired,
                    maximum_percent: input.deployment.maximum_percent,
                    minimum_healthy_percent: input.deployment.minimum_healthy_percent,
                    deployments: vec![Deployment {
                        id: format!("ecs-svc/{id}"),
                        status: "PRIMARY".into(),
                        task_definition: td,
                        rollout_state: Some("IN_PROGRESS".into()),
                        rollout_state_reason: None,
                        desired: input.desired,
                        running: 0,
                        pending: input.desired,
                        failed_tasks: 0,
                    }],
                },
                circuit_breaker: input.deployment.circuit_breaker,
                polls: 0,
                hidden,
            },
        );
        Ok(())
    }

    async fn update_service(&self, input: &ServiceInput<'_>) -> AwsResult<()> {
        let mut st = self.lock();
        st.log(format!(
            "UpdateService {}@{} {}",
            input.name,
            input.cluster,
            crate::ecs::short_name(input.task_definition)
        ))?;
        let Some(td) = st.find_td(input.task_definition).map(|t| t.arn.clone()) else {
            return Err(err(
                "UpdateService",
                "ClientException: TaskDefinition not found.",
            ));
        };
        let id = st.id();
        let key = (input.cluster.to_string(), input.name.to_string());
        let Some(fs) = st
            .services
            .get_mut(&key)
            .filter(|s| s.svc.status == "ACTIVE")
        else {
            return Err(err(
                "UpdateService",
                "ServiceNotFoundException: Service not found.",
            ));
        };
        fs.circuit_breaker = input.deployment.circuit_breaker;
        fs.svc.desired = input.desired;
        fs.polls = 0;
        for d in &mut fs.svc.deployments {
            d.status = "ACTIVE".into();
        }
        fs.svc.task_definition = td.clone();
        fs.svc.deployments.insert(
            0,
            Deployment {
                id: format!("ecs-svc/{id}"),
                status: "PRIMARY".into(),
                task_definition: td,
                rollout_state: Some("IN_PROGRESS".into()),
                rollout_state_reason: None,
                desired: input.desired,
                running: 0,
                pending: input.desired,
                failed_tasks: 0,
            },
        );
        Ok(())
    }

    async fn scale_service(&self, cluster: &str, name: &str, desired: i32) -> AwsResult<()> {
        let mut st = self.lock();
        st.log(format!("UpdateService {name}@{cluster} desired={desired}"))?;
        let key = (cluster.to_string(), name.to_string());
        let Some(fs) = st.services.get_mut(&key) else {
            return Err(err(
                "UpdateService",
                "ServiceNotFoundException: Service not found.",
            ));
        };
        fs.svc.desired = desired;
        fs.svc.running = desired;
        for d in &mut fs.svc.deployments {
            d.desired = desired;
            d.running = desired;
        }
        Ok(())
    }

    async fn delete_service(&self, cluster: &str, name: &str) -> AwsResult<()> {
        let mut st = self.lock();
        st.log(format!("DeleteService {name}@{cluster}"))?;
        let key = (cluster.to_string(), name.to_string());
        let Some(fs) = st.services.get_mut(&key) else {
            return Err(err(
                "DeleteService",
                "ServiceNotFoundException: Service not found.",
            ));
        };
        if fs.svc.desired > 0 {
            return Err(err(
                "DeleteService",
                "InvalidParameterException: The service cannot be stopped while it is scaled above 0.",
            ));
        }
        fs.svc.status = "INACTIVE".into();
        Ok(())
    }

    async fn run_task(
        &self,
        cluster: &str,
        task_definition: &str,
        _launch_type: Option<&str>,
        _network: Option<&NetworkSpec>,
    ) -> AwsResult<String> {
        let mut st = self.lock();
        st.log(format!(
            "RunTask {}@{cluster}",
            crate::ecs::short_name(task_definition)
        ))?;
        let Some(td) = st.find_td(task_definition).cloned() else {
            return Err(err("RunTask", "ClientException: TaskDefinition not found."));
        };
        let image = st.image_of(task_definition);
        let outcome = st
            .outcomes
            .get(&image)
            .copied()
            .unwrap_or(TaskOutcome::Exit {
                code: 0,
                after_polls: 2,
            });
        let id = st.id();
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{id:032x}");
        st.tasks.insert(
            arn.clone(),
            FakeTask {
                polls: 0,
                outcome,
                containers: td.spec.containers.iter().map(|c| c.name.clone()).collect(),
            },
        );
        Ok(arn)
    }

    async fn describe_task(&self, cluster: &str, arn: &str) -> AwsResult<TaskState> {
        let mut st = self.lock();
        st.log(format!("DescribeTasks {cluster}"))?;
        let Some(t) = st.tasks.get_mut(arn) else {
            return Err(err("DescribeTasks", "MISSING"));
        };
        t.polls += 1;
        let stopped = match t.outcome {
            TaskOutcome::Exit { code, after_polls } if t.polls >= after_polls => Some(code),
            _ => None,
        };
        Ok(TaskState {
            arn: arn.to_string(),
            last_status: if stopped.is_some() {
                "STOPPED"
            } else {
                "RUNNING"
            }
            .into(),
            stopped_reason: stopped.map(|_| "Essential container in task exited".to_string()),
            containers: t
                .containers
                .iter()
                .enumerate()
                .map(|(i, name)| ContainerState {
                    name: name.clone(),
                    exit_code: stopped.map(|code| if i == 0 { code } else { 0 }),
                    reason: None,
                })
                .collect(),
        })
    }
}
