//! `Ecs` on the official AWS SDK.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerCondition, ContainerDefinition,
    ContainerDependency, DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair,
    LaunchType, LoadBalancer, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode,
    PortMapping, TaskDefinitionStatus, TransportProtocol,
};
use aws_sdk_ecs::Client;

use crate::ecs::{
    AwsError, AwsResult, ContainerState, Deployment, Ecs, Service, ServiceInput, TaskDefinition,
    TaskState,
};
use crate::spec::{
    AwsLogsSpec, ContainerDependencySpec, ContainerSpec, NetworkSpec, PortMappingSpec,
    TaskDefinitionSpec,
};

pub struct AwsEcs {
    client: Client,
}

impl AwsEcs {
    /// Credentials and region from the usual environment/profile chain; `endpoint` overrides
    /// the ECS endpoint (a local moto server in tests).
    pub async fn connect(region: Option<String>, endpoint: Option<String>) -> Self {
        let mut loader = aws_config::from_env().http_client(http_client());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        Self {
            client: Client::new(&config),
        }
    }

    /// Whether the configuration resolved a region (the SDK cannot call without one).
    pub fn has_region(&self) -> bool {
        self.client.config().region().is_some()
    }
}

/// The SDK's HTTPS client on rustls with ring: the default one would build aws-lc-rs (and
/// need a C toolchain) for no gain here.
pub fn http_client() -> aws_sdk_ecs::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn aws_err<E, R>(operation: &'static str, e: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let message = match &e {
        SdkError::ServiceError(se) => {
            let meta = se.err().meta();
            format!(
                "{}: {}",
                meta.code().unwrap_or("error"),
                meta.message().unwrap_or("(no message)")
            )
        }
        other => chain(other),
    };
    AwsError { operation, message }
}

/// "dispatch failure: io error: ... Connection refused": each cause once, without the
/// Debug dump `DisplayErrorContext` appends.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = c.source();
    }
    parts.join(": ")
}

fn container_definition(c: &ContainerSpec) -> AwsResult<ContainerDefinition> {
    let mut b = ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(c.essential)
        .set_cpu(c.cpu)
        .set_memory(c.memory)
        .set_memory_reservation(c.memory_reservation);
    if !c.command.is_empty() {
        b = b.set_command(Some(c.command.clone()));
    }
    if !c.entry_point.is_empty() {
        b = b.set_entry_point(Some(c.entry_point.clone()));
    }
    for d in &c.depends_on {
        b = b.depends_on(
            ContainerDependency::builder()
                .container_name(&d.container_name)
                .condition(ContainerCondition::from(d.condition.as_str()))
                .build()
                .map_err(|e| AwsError {
                    operation: "RegisterTaskDefinition",
                    message: e.to_string(),
                })?,
        );
    }
    for (k, v) in &c.environment {
        b = b.environment(KeyValuePair::builder().name(k).value(v).build());
    }
    for p in &c.port_mappings {
        b = b.port_mappings(
            PortMapping::builder()
                .container_port(p.container_port)
                .set_host_port(p.host_port)
                .protocol(TransportProtocol::from(p.protocol.as_str()))
                .build(),
        );
    }
    if let Some(logs) = &c.awslogs {
        let conf = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", &logs.group)
            .options("awslogs-region", &logs.region)
            .options("awslogs-stream-prefix", &logs.stream_prefix)
            .build()
            .map_err(|e| AwsError {
                operation: "RegisterTaskDefinition",
                message: e.to_string(),
            })?;
        b = b.log_configuration(conf);
    }
    Ok(b.build())
}

/// Back from the SDK's shape to the file's, so the planner compares like with like.
fn to_spec(td: &aws_sdk_ecs::types::TaskDefinition) -> TaskDefinitionSpec {
    TaskDefinitionSpec {
        family: td.family().unwrap_or_default().to_string(),
        network_mode: td.network_mode().map(|m| m.as_str().to_string()),
        cpu: td.cpu().map(str::to_string),
        memory: td.memory().map(str::to_string),
        requires_compatibilities: td
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        execution_role_arn: td.execution_role_arn().map(str::to_string),
        task_role_arn: td.task_role_arn().map(str::to_string),
        containers: td
            .container_definitions()
            .iter()
            .map(|c| ContainerSpec {
                name: c.name().unwrap_or_default().to_string(),
                image: c.image().unwrap_or_default().to_string(),
                // ECS reports an unset container cpu as 0.
                cpu: Some(c.cpu()).filter(|&v| v != 0),
                memory: c.memory(),
                memory_reservation: c.memory_reservation(),
                essential: c.essential().unwrap_or(true),
                command: c.command().to_vec(),
                entry_point: c.entry_point().to_vec(),
                environment: c
                    .environment()
                    .iter()
                    .map(|kv| {
                        (
                            kv.name().unwrap_or_default().to_string(),
                            kv.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
                port_mappings: c
                    .port_mappings()
                    .iter()
                    .map(|p| PortMappingSpec {
                        container_port: p.container_port().unwrap_or_default(),
                        host_port: p.host_port(),
                        protocol: p.protocol().map_or("tcp", |p| p.as_str()).to_string(),
                    })
                    .collect(),
                awslogs: c.log_configuration().and_then(|l| {
                    if *l.log_driver() != LogDriver::Awslogs {
                        return None;
                    }
                    let opt = |k: &str| {
                        l.options()
                            .and_then(|o| o.get(k))
                            .cloned()
                            .unwrap_or_default()
                    };
                    Some(AwsLogsSpec {
                        group: opt("awslogs-group"),
                        region: opt("awslogs-region"),
                        stream_prefix: opt("awslogs-stream-prefix"),
                    })
                }),
                depends_on: c
                    .depends_on()
                    .iter()
                    .map(|d| ContainerDependencySpec {
                        container_name: d.container_name().to_string(),
                        condition: d.condition().as_str().to_string(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn to_task_definition(td: &aws_sdk_ecs::types::TaskDefinition) -> TaskDefinition {
    TaskDefinition {
        arn: td.task_definition_arn().unwrap_or_default().to_string(),
        family: td.family().unwrap_or_default().to_string(),
        revision: td.revision(),
        active: td.status() != Some(&TaskDefinitionStatus::Inactive),
        spec: to_spec(td),
    }
}

fn network_configuration(
    n: Option<&NetworkSpec>,
    operation: &'static str,
) -> AwsResult<Option<NetworkConfiguration>> {
    let Some(n) = n else { return Ok(None) };
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(n.subnets.clone()))
        .set_security_groups(Some(n.security_groups.clone()))
        .assign_public_ip(if n.assign_public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        .build()
        .map_err(|e| AwsError {
            operation,
            message: e.to_string(),
        })?;
    Ok(Some(
        NetworkConfiguration::builder()
            .awsvpc_configuration(vpc)
            .build(),
    ))
}

fn deployment_configuration(input: &ServiceInput<'_>) -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .set_maximum_percent(input.deployment.maximum_percent)
        .set_minimum_healthy_percent(input.deployment.minimum_healthy_percent)
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(input.deployment.circuit_breaker)
                .rollback(input.deployment.circuit_breaker)
                .build(),
        )
        .build()
}

#[async_trait]
impl Ecs for AwsEcs {
    async fn active_clusters(&self, names: &[String]) -> AwsResult<Vec<String>> {
        let out = self
            .client
            .describe_clusters()
            .set_clusters(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| aws_err("DescribeClusters", e))?;
        Ok(out
            .clusters()
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
            .filter_map(|c| c.cluster_name().map(str::to_string))
            .collect())
    }

    async fn register_task_definition(
        &self,
        spec: &TaskDefinitionSpec,
    ) -> AwsResult<TaskDefinition> {
        let containers = spec
            .containers
            .iter()
            .map(container_definition)
            .collect::<AwsResult<Vec<_>>>()?;
        let out = self
            .client
            .register_task_definition()
            .family(&spec.family)
            .set_network_mode(spec.network_mode.as_deref().map(NetworkMode::from))
            .set_cpu(spec.cpu.clone())
            .set_memory(spec.memory.clone())
            .set_requires_compatibilities(if spec.requires_compatibilities.is_empty() {
                None
            } else {
                Some(
                    spec.requires_compatibilities
                        .iter()
                        .map(|c| Compatibility::from(c.as_str()))
                        .collect(),
                )
            })
            .set_execution_role_arn(spec.execution_role_arn.clone())
            .set_task_role_arn(spec.task_role_arn.clone())
            .set_container_definitions(Some(containers))
            .send()
            .await
            .map_err(|e| aws_err("RegisterTaskDefinition", e))?;
        out.task_definition()
            .map(to_task_definition)
            .ok_or(AwsError {
                operation: "RegisterTaskDefinition",
                message: "the response has no task definition".into(),
            })
    }

    async fn describe_task_definition(&self, reference: &str) -> AwsResult<Option<TaskDefinition>> {
        match self
            .client
            .describe_task_definition()
            .task_definition(reference)
            .send()
            .await
        {
            Ok(out) => Ok(out.task_definition().map(to_task_definition)),
            // ECS answers an unknown family or revision with a ClientException.
            Err(SdkError::ServiceError(se)) if se.err().is_client_exception() => Ok(None),
            Err(e) => Err(aws_err("DescribeTaskDefinition", e)),
        }
    }

    async fn list_active_revisions(&self, family: &str) -> AwsResult<Vec<String>> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_task_definitions()
                .family_prefix(family)
                .status(TaskDefinitionStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws_err("ListTaskDefinitions", e))?;
            // familyPrefix is a prefix in ECS: keep this family only.
            arns.extend(
                out.task_definition_arns()
                    .iter()
                    .filter(|a| {
                        crate::ecs::short_name(a).rsplit_once(':').map(|(f, _)| f) == Some(family)
                    })
                    .cloned(),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // Sort by revision number, not as strings (":10" after ":9").
        arns.sort_by_key(|a| crate::ecs::revision_of(a));
        Ok(arns)
    }

    async fn deregister_task_definition(&self, arn: &str) -> AwsResult<()> {
        self.client
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| aws_err("DeregisterTaskDefinition", e))?;
        Ok(())
    }

    async fn describe_service(&self, cluster: &str, name: &str) -> AwsResult<Option<Service>> {
        let out = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(name)
            .send()
            .await
            .map_err(|e| aws_err("DescribeServices", e))?;
        let Some(s) = out.services().first() else {
            return Ok(None);
        };
        let dc = s.deployment_configuration();
        Ok(Some(Service {
            name: s.service_name().unwrap_or(name).to_string(),
            status: s.status().unwrap_or_default().to_string(),
            task_definition: s.task_definition().unwrap_or_default().to_string(),
            desired: s.desired_count(),
            running: s.running_count(),
            pending: s.pending_count(),
            maximum_percent: dc.and_then(|d| d.maximum_percent()),
            minimum_healthy_percent: dc.and_then(|d| d.minimum_healthy_percent()),
            deployments: s
                .deployments()
                .iter()
                .map(|d| Deployment {
                    id: d.id().unwrap_or_default().to_string(),
                    status: d.status().unwrap_or_default().to_string(),
                    task_definition: d.task_definition().unwrap_or_default().to_string(),
                    rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                    rollout_state_reason: d.rollout_state_reason().map(str::to_string),
                    desired: d.desired_count(),
                    running: d.running_count(),
                    pending: d.pending_count(),
                    failed_tasks: d.failed_tasks(),
                })
                .collect(),
        }))
    }

    async fn create_service(&self, input: &ServiceInput<'_>) -> AwsResult<()> {
        let mut req = self
            .client
            .create_service()
            .cluster(input.cluster)
            .service_name(input.name)
            .task_definition(input.task_definition)
            .desired_count(input.desired)
            .deployment_configuration(deployment_configuration(input))
            .set_launch_type(input.launch_type.map(LaunchType::from))
            .set_network_configuration(network_configuration(input.network, "CreateService")?);
        for lb in input.load_balancers {
            req = req.load_balancers(
                LoadBalancer::builder()
                    .target_group_arn(&lb.target_group_arn)
                    .container_name(&lb.container_name)
                    .container_port(lb.container_port)
                    .build(),
            );
        }
        req.send().await.map_err(|e| aws_err("CreateService", e))?;
        Ok(())
    }

    async fn update_service(&self, input: &ServiceInput<'_>) -> AwsResult<()> {
        self.client
            .update_service()
            .cluster(input.cluster)
            .service(input.name)
            .task_definition(input.task_definition)
            .desired_count(input.desired)
            .deployment_configuration(deployment_configuration(input))
            .set_network_configuration(network_configuration(input.network, "UpdateService")?)
            .send()
            .await
            .map_err(|e| aws_err("UpdateService", e))?;
        Ok(())
    }

    async fn scale_service(&self, cluster: &str, name: &str, desired: i32) -> AwsResult<()> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(name)
            .desired_count(desired)
            .send()
            .await
            .map_err(|e| aws_err("UpdateService", e))?;
        Ok(())
    }

    async fn delete_service(&self, cluster: &str, name: &str) -> AwsResult<()> {
        self.client
            .delete_service()
            .cluster(cluster)
            .service(name)
            .send()
            .await
            .map_err(|e| aws_err("DeleteService", e))?;
        Ok(())
    }

    async fn run_task(
        &self,
        cluster: &str,
        task_definition: &str,
        launch_type: Option<&str>,
        network: Option<&NetworkSpec>,
    ) -> AwsResult<String> {
        let out = self
            .client
            .run_task()
            .cluster(cluster)
            .task_definition(task_definition)
            .count(1)
            .started_by("tollgate-ecs")
            .set_launch_type(launch_type.map(LaunchType::from))
            .set_network_configuration(network_configuration(network, "RunTask")?)
            .send()
            .await
            .map_err(|e| aws_err("RunTask", e))?;
        if let Some(task) = out.tasks().first() {
            return Ok(task.task_arn().unwrap_or_default().to_string());
        }
        let why: Vec<String> = out
            .failures()
            .iter()
            .map(|f| format!("{} {}", f.reason().unwrap_or("?"), f.detail().unwrap_or("")))
            .collect();
        Err(AwsError {
            operation: "RunTask",
            message: format!("no task was started: {}", why.join("; ")),
        })
    }

    async fn describe_task(&self, cluster: &str, arn: &str) -> AwsResult<TaskState> {
        let out = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .tasks(arn)
            .send()
            .await
            .map_err(|e| aws_err("DescribeTasks", e))?;
        let t = out.tasks().first().ok_or_else(|| AwsError {
            operation: "DescribeTasks",
            message: format!("task {arn} is not known to cluster {cluster}"),
        })?;
        Ok(TaskState {
            arn: arn.to_string(),
            last_status: t.last_status().unwrap_or_default().to_string(),
            // moto (and sometimes ECS) sends an empty reason.
            stopped_reason: t
                .stopped_reason()
                .filter(|r| !r.is_empty())
                .map(str::to_string),
            containers: t
                .containers()
                .iter()
                .map(|c| ContainerState {
                    name: c.name().unwrap_or_default().to_string(),
                    exit_code: c.exit_code(),
                    reason: c.reason().map(str::to_string),
                })
                .collect(),
        })
    }
}
