//! The ECS calls the tool makes, as a trait: the SDK implements it (`aws.rs`) and so does a
//! deterministic fake (`fake.rs`) for the rollout decisions moto cannot model.

use async_trait::async_trait;

use crate::spec::{DeploymentSpec, LoadBalancerSpec, NetworkSpec, TaskDefinitionSpec};

/// An AWS call that failed, with the operation and the service's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub message: String,
}

pub type AwsResult<T> = Result<T, AwsError>;

#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub active: bool,
    /// What the file would have to say to register exactly this revision.
    pub spec: TaskDefinitionSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: String,
    pub task_definition: String,
    /// IN_PROGRESS, COMPLETED or FAILED (absent for services without rolling updates).
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub failed_tasks: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    /// None when ECS did not echo the configuration (moto after CreateService).
    pub maximum_percent: Option<i32>,
    pub minimum_healthy_percent: Option<i32>,
    pub deployments: Vec<Deployment>,
}

/// Everything CreateService/UpdateService need from the file.
#[derive(Debug, Clone)]
pub struct ServiceInput<'a> {
    pub cluster: &'a str,
    pub name: &'a str,
    pub task_definition: &'a str,
    pub desired: i32,
    pub deployment: &'a DeploymentSpec,
    pub launch_type: Option<&'a str>,
    pub network: Option<&'a NetworkSpec>,
    pub load_balancers: &'a [LoadBalancerSpec],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub name: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub arn: String,
    /// PROVISIONING, PENDING, RUNNING, ..., STOPPED.
    pub last_status: String,
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerState>,
}

#[async_trait]
pub trait Ecs: Send + Sync {
    /// The names among `names` that exist and are ACTIVE.
    async fn active_clusters(&self, names: &[String]) -> AwsResult<Vec<String>>;
    async fn register_task_definition(
        &self,
        spec: &TaskDefinitionSpec,
    ) -> AwsResult<TaskDefinition>;
    /// `family` (latest ACTIVE revision), `family:rev` or an ARN; None when there is none.
    async fn describe_task_definition(&self, reference: &str) -> AwsResult<Option<TaskDefinition>>;
    /// ARNs of the ACTIVE revisions of `family`, oldest first.
    async fn list_active_revisions(&self, family: &str) -> AwsResult<Vec<String>>;
    async fn deregister_task_definition(&self, arn: &str) -> AwsResult<()>;
    /// None when the service does not exist in the cluster (MISSING).
    async fn describe_service(&self, cluster: &str, name: &str) -> AwsResult<Option<Service>>;
    async fn create_service(&self, input: &ServiceInput<'_>) -> AwsResult<()>;
    async fn update_service(&self, input: &ServiceInput<'_>) -> AwsResult<()>;
    /// Scales (and only scales) a service; used by destroy.
    async fn scale_service(&self, cluster: &str, name: &str, desired: i32) -> AwsResult<()>;
    async fn delete_service(&self, cluster: &str, name: &str) -> AwsResult<()>;
    /// Starts one task and returns its ARN.
    async fn run_task(
        &self,
        cluster: &str,
        task_definition: &str,
        launch_type: Option<&str>,
        network: Option<&NetworkSpec>,
    ) -> AwsResult<String>;
    async fn describe_task(&self, cluster: &str, arn: &str) -> AwsResult<TaskState>;
}

/// `family:revision` from a task definition ARN (or the reference itself).
pub fn short_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The revision number at the end of a task definition ARN (0 if none).
pub fn revision_of(arn: &str) -> i32 {
    arn.rsplit(':')
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}
