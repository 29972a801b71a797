//! `status`, `rollback` and `destroy`.

use tokio::time::Instant;

use crate::ecs::{revision_of, short_name, Ecs};
use crate::plan::check_clusters;
use crate::rollout::{describe_line, service_input, wait_steady, Error, Progress, Timing};
use crate::spec::{Deployment, ServiceSpec, Step};

/// Which services a command acts on: all of the file's, or those named.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub services: Vec<String>,
    pub clusters: Vec<String>,
}

impl Filter {
    fn pick<'a>(&self, d: &'a Deployment) -> Result<Vec<(&'a ServiceSpec, Vec<&'a str>)>, Error> {
        for name in &self.services {
            if !d.file.services.iter().any(|s| &s.name == name) {
                return Err(Error::Precondition(format!(
                    "the file has no service named {name:?}"
                )));
            }
        }
        for c in &self.clusters {
            if !d.file.clusters.contains(c) {
                return Err(Error::Precondition(format!(
                    "the file declares no cluster {c:?}"
                )));
            }
        }
        Ok(d.order
            .iter()
            .filter_map(|s| match s {
                Step::Service(i) => Some(d.service(*i)),
                Step::Task(_) => None,
            })
            .filter(|s| self.services.is_empty() || self.services.contains(&s.name))
            .map(|s| {
                let clusters = s
                    .clusters
                    .iter()
                    .filter(|c| self.clusters.is_empty() || self.clusters.contains(c))
                    .map(String::as_str)
                    .collect();
                (s, clusters)
            })
            .collect())
    }
}

/// One line per service and cluster, then the latest revision of each family.
pub async fn status(ecs: &dyn Ecs, d: &Deployment, filter: &Filter) -> Result<Vec<String>, Error> {
    check_clusters(ecs, d).await?;
    let mut out = Vec::new();
    for (s, clusters) in filter.pick(d)? {
        for c in clusters {
            match ecs.describe_service(c, &s.name).await? {
                Some(svc) if svc.status != "INACTIVE" => out.push(describe_line(c, &svc)),
                _ => out.push(format!("{c}/{}: not found", s.name)),
            }
        }
    }
    for (key, td) in &d.file.task_definitions {
        let revisions = ecs.list_active_revisions(&td.family).await?;
        match revisions.last() {
            Some(last) => out.push(format!(
                "task definition {key}: {} ({} active revision(s))",
                short_name(last),
                revisions.len()
            )),
            None => out.push(format!(
                "task definition {key}: {} not registered",
                td.family
            )),
        }
    }
    Ok(out)
}

/// Moves each service to the ACTIVE revision just before the one it runs, and waits.
pub async fn rollback(
    ecs: &dyn Ecs,
    d: &Deployment,
    filter: &Filter,
    timing: Timing,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    check_clusters(ecs, d).await?;
    let mut out = Vec::new();
    for (s, clusters) in filter.pick(d)?.into_iter().rev() {
        for c in clusters {
            let what = format!("service {} in {c}", s.name);
            let svc = ecs
                .describe_service(c, &s.name)
                .await?
                .filter(|x| x.status == "ACTIVE")
                .ok_or_else(|| {
                    Error::Precondition(format!("{what} does not exist; nothing to roll back"))
                })?;
            let family = short_name(&svc.task_definition)
                .rsplit_once(':')
                .map_or(svc.task_definition.as_str(), |(f, _)| f)
                .to_string();
            let current = revision_of(&svc.task_definition);
            let previous = ecs
                .list_active_revisions(&family)
                .await?
                .into_iter()
                .rfind(|a| revision_of(a) < current)
                .ok_or_else(|| {
                    Error::Precondition(format!(
                        "{what} runs {}, and {family} has no earlier ACTIVE revision to roll back to",
                        short_name(&svc.task_definition)
                    ))
                })?;
            progress.line(&format!(
                "{what}: rolling back {} -> {}",
                short_name(&svc.task_definition),
                short_name(&previous)
            ));
            ecs.update_service(&service_input(c, s, &previous, svc.desired))
                .await?;
            let timeout = s.timeout.unwrap_or(timing.wait_timeout);
            wait_steady(
                ecs,
                c,
                &s.name,
                &previous,
                timeout,
                timing.poll_interval,
                progress,
            )
            .await
            .map_err(|failure| Error::Rollout {
                failure,
                rollback: vec![format!("{what} was set to {}", short_name(&previous))],
            })?;
            out.push(format!(
                "{what}: rolled back {} -> {}",
                short_name(&svc.task_definition),
                short_name(&previous)
            ));
        }
    }
    Ok(out)
}

/// Scales each service to zero, deletes it (last step first), then deregisters all but the
/// `keep` newest revisions of each family.
pub async fn destroy(
    ecs: &dyn Ecs,
    d: &Deployment,
    keep: usize,
    timing: Timing,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    check_clusters(ecs, d).await?;
    let mut out = Vec::new();
    for (s, clusters) in Filter::default().pick(d)?.into_iter().rev() {
        for c in clusters {
            let what = format!("service {} in {c}", s.name);
            match ecs.describe_service(c, &s.name).await? {
                Some(svc) if svc.status == "ACTIVE" => {
                    if svc.desired != 0 {
                        ecs.scale_service(c, &s.name, 0).await?;
                    }
                    wait_drained(ecs, c, &s.name, timing, progress).await?;
                    ecs.delete_service(c, &s.name).await?;
                    let line = format!("{what}: scaled to 0 and deleted");
                    progress.line(&line);
                    out.push(line);
                }
                _ => out.push(format!("{what}: already gone")),
            }
        }
    }
    for td in d.file.task_definitions.values() {
        let revisions = ecs.list_active_revisions(&td.family).await?;
        let drop = revisions.len().saturating_sub(keep);
        for arn in &revisions[..drop] {
            ecs.deregister_task_definition(arn).await?;
            out.push(format!("deregistered {}", short_name(arn)));
        }
        out.push(format!(
            "{}: kept {} revision(s)",
            td.family,
            revisions.len() - drop
        ));
    }
    Ok(out)
}

async fn wait_drained(
    ecs: &dyn Ecs,
    cluster: &str,
    name: &str,
    timing: Timing,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let Some(s) = ecs.describe_service(cluster, name).await? else {
            return Ok(());
        };
        progress.line(&describe_line(cluster, &s));
        if s.running == 0 {
            return Ok(());
        }
        if start.elapsed() >= timing.wait_timeout {
            return Err(Error::Precondition(format!(
                "service {name} in {cluster} still runs {} task(s) after {}s at desired count 0; not deleted",
                s.running,
                timing.wait_timeout.as_secs()
            )));
        }
        tokio::time::sleep(timing.poll_interval).await;
    }
}
