//! The deployment file: its serde shape and every check made before any AWS call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::position::{Pos, PositionIndex};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    #[serde(default)]
    pub settings: Settings,
    /// The ECS clusters the file may name; they must exist before `deploy`.
    pub clusters: Vec<String>,
    /// Task definitions by key; services and tasks refer to the key.
    pub task_definitions: BTreeMap<String, TaskDefinitionSpec>,
    /// One-off tasks (database migrations): run once, must stop with exit code 0.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long one service (or task) may take to become steady (or to stop).
    #[serde(default = "default_wait_timeout", deserialize_with = "duration")]
    pub wait_timeout: Duration,
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// `destroy` keeps this many newest revisions of each family registered.
    #[serde(default = "default_keep_revisions")]
    pub keep_revisions: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            wait_timeout: default_wait_timeout(),
            poll_interval: default_poll_interval(),
            keep_revisions: default_keep_revisions(),
        }
    }
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_keep_revisions() -> usize {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinitionSpec {
    pub family: String,
    #[serde(default)]
    pub network_mode: Option<String>,
    /// Task-level CPU units and memory (MiB), as ECS takes them (strings).
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub memory: Option<String>,
    #[serde(default)]
    pub requires_compatibilities: Vec<String>,
    #[serde(default)]
    pub execution_role_arn: Option<String>,
    #[serde(default)]
    pub task_role_arn: Option<String>,
    pub containers: Vec<ContainerSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub cpu: Option<i32>,
    #[serde(default)]
    pub memory: Option<i32>,
    #[serde(default)]
    pub memory_reservation: Option<i32>,
    #[serde(default = "yes")]
    pub essential: bool,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub entry_point: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMappingSpec>,
    #[serde(default)]
    pub awslogs: Option<AwsLogsSpec>,
    /// ECS `dependsOn`: containers of the same task that must reach a state first (e.g.
    /// `migrations up` after `migrations bootstrap` succeeded, with no shell in the image).
    #[serde(default)]
    pub depends_on: Vec<ContainerDependencySpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDependencySpec {
    pub container_name: String,
    /// START, COMPLETE, SUCCESS or HEALTHY.
    pub condition: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMappingSpec {
    pub container_port: i32,
    #[serde(default)]
    pub host_port: Option<i32>,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".to_string()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsLogsSpec {
    pub group: String,
    pub region: String,
    pub stream_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub cluster: String,
    pub task_definition: String,
    /// Steps (services or tasks) that must be done before this one.
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub clusters: Vec<String>,
    pub task_definition: String,
    pub desired_count: i32,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancerSpec>,
    #[serde(default)]
    pub deployment: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub assign_public_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    pub target_group_arn: String,
    pub container_name: String,
    pub container_port: i32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default)]
    pub maximum_percent: Option<i32>,
    #[serde(default)]
    pub minimum_healthy_percent: Option<i32>,
    /// ECS's deployment circuit breaker with rollback, set on every create and update.
    #[serde(default = "yes")]
    pub circuit_breaker: bool,
}

impl Default for DeploymentSpec {
    fn default() -> Self {
        Self {
            maximum_percent: None,
            minimum_healthy_percent: None,
            circuit_breaker: true,
        }
    }
}

/// One entry of the rollout order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Task(usize),
    Service(usize),
}

/// A checked deployment file and its rollout order.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub file: DeploymentFile,
    pub order: Vec<Step>,
}

impl Deployment {
    pub fn task(&self, i: usize) -> &TaskSpec {
        &self.file.tasks[i]
    }
    pub fn service(&self, i: usize) -> &ServiceSpec {
        &self.file.services[i]
    }
    pub fn task_definition(&self, key: &str) -> &TaskDefinitionSpec {
        // Validation guarantees every reference resolves.
        &self.file.task_definitions[key]
    }
}

/// A deployment file that cannot be used, with the position of the offending node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FileError {}

pub fn load(path: &Path) -> Result<Deployment, FileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: name.clone(),
        pos: None,
        message: format!("cannot read the deployment file: {e}"),
    })?;
    parse(&name, &text)
}

pub fn parse(name: &str, text: &str) -> Result<Deployment, FileError> {
    let file: DeploymentFile = serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        });
        // serde_yaml appends " at line L column C"; the prefix already says it.
        let mut message = e.to_string();
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        FileError {
            file: name.to_string(),
            pos,
            message,
        }
    })?;
    let index = PositionIndex::build(text);
    let err = |path: &str, message: String| FileError {
        file: name.to_string(),
        pos: Some(index.get(path)),
        message,
    };
    check(&file, &err)?;
    let order = order(&file, &index, &err)?;
    Ok(Deployment { file, order })
}

fn check(file: &DeploymentFile, err: &dyn Fn(&str, String) -> FileError) -> Result<(), FileError> {
    if file.clusters.is_empty() {
        return Err(err("clusters", "no cluster is declared".into()));
    }
    let mut clusters = HashSet::new();
    for (i, c) in file.clusters.iter().enumerate() {
        if c.trim().is_empty() {
            return Err(err(&format!("clusters[{i}]"), "empty cluster name".into()));
        }
        if !clusters.insert(c.as_str()) {
            return Err(err(
                &format!("clusters[{i}]"),
                format!("cluster {c:?} is declared twice"),
            ));
        }
    }
    let known_clusters = || file.clusters.join(", ");
    let mut families = HashMap::new();
    for (key, td) in &file.task_definitions {
        let at = format!("task_definitions.{key}");
        if td.family.trim().is_empty() {
            return Err(err(&format!("{at}.family"), "empty family".into()));
        }
        if let Some(other) = families.insert(td.family.as_str(), key) {
            return Err(err(
                &format!("{at}.family"),
                format!(
                    "family {:?} is also used by task definition {other:?}",
                    td.family
                ),
            ));
        }
        if td.containers.is_empty() {
            return Err(err(
                &format!("{at}.containers"),
                format!("task definition {key:?} has no container"),
            ));
        }
        let mut names = HashSet::new();
        for (i, c) in td.containers.iter().enumerate() {
            let at = format!("{at}.containers[{i}]");
            if c.image.trim().is_empty() {
                return Err(err(
                    &format!("{at}.image"),
                    format!("container {:?} has an empty image", c.name),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(err(
                    &format!("{at}.name"),
                    format!("container name {:?} is used twice", c.name),
                ));
            }
        }
        for (i, c) in td.containers.iter().enumerate() {
            for (j, d) in c.depends_on.iter().enumerate() {
                let at = format!("{at}.containers[{i}].depends_on[{j}]");
                if d.container_name == c.name || !names.contains(d.container_name.as_str()) {
                    return Err(err(
                        &format!("{at}.container_name"),
                        format!(
                            "container {:?} depends on {:?}, which is not another container of this task definition",
                            c.name, d.container_name
                        ),
                    ));
                }
                if !["START", "COMPLETE", "SUCCESS", "HEALTHY"].contains(&d.condition.as_str()) {
                    return Err(err(
                        &format!("{at}.condition"),
                        format!(
                            "condition {:?} is not one of START, COMPLETE, SUCCESS, HEALTHY",
                            d.condition
                        ),
                    ));
                }
            }
        }
    }
    let td_ref = |at: &str, key: &str| -> Result<(), FileError> {
        if file.task_definitions.contains_key(key) {
            Ok(())
        } else {
            let known: Vec<_> = file.task_definitions.keys().map(String::as_str).collect();
            Err(err(
                at,
                format!(
                    "unknown task definition {key:?} (declared: {})",
                    known.join(", ")
                ),
            ))
        }
    };
    let cluster_ref = |at: &str, name: &str| -> Result<(), FileError> {
        if clusters.contains(name) {
            Ok(())
        } else {
            Err(err(
                at,
                format!(
                    "unknown cluster {name:?} (declared clusters: {})",
                    known_clusters()
                ),
            ))
        }
    };
    let mut steps = HashSet::new();
    for (i, t) in file.tasks.iter().enumerate() {
        let at = format!("tasks[{i}]");
        if !steps.insert(t.name.as_str()) {
            return Err(err(
                &format!("{at}.name"),
                format!("step name {:?} is used twice", t.name),
            ));
        }
        cluster_ref(&format!("{at}.cluster"), &t.cluster)?;
        td_ref(&format!("{at}.task_definition"), &t.task_definition)?;
    }
    for (i, s) in file.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if !steps.insert(s.name.as_str()) {
            return Err(err(
                &format!("{at}.name"),
                format!("step name {:?} is used twice", s.name),
            ));
        }
        if s.clusters.is_empty() {
            return Err(err(
                &format!("{at}.clusters"),
                format!("service {:?} names no cluster", s.name),
            ));
        }
        let mut seen = HashSet::new();
        for (j, c) in s.clusters.iter().enumerate() {
            cluster_ref(&format!("{at}.clusters[{j}]"), c)?;
            if !seen.insert(c.as_str()) {
                return Err(err(
                    &format!("{at}.clusters[{j}]"),
                    format!("cluster {c:?} is listed twice"),
                ));
            }
        }
        td_ref(&format!("{at}.task_definition"), &s.task_definition)?;
        if s.desired_count < 0 {
            return Err(err(
                &format!("{at}.desired_count"),
                "desired_count must be 0 or more".into(),
            ));
        }
    }
    if steps.is_empty() {
        return Err(err("", "the file declares no service and no task".into()));
    }
    if file.settings.keep_revisions == 0 {
        return Err(err(
            "settings.keep_revisions",
            "keep_revisions must be at least 1".into(),
        ));
    }
    if file.settings.poll_interval.is_zero() {
        return Err(err(
            "settings.poll_interval",
            "poll_interval must be more than 0".into(),
        ));
    }
    Ok(())
}

/// The rollout order: every step after the steps its `after` names, otherwise in file order
/// (tasks first, then services). A cycle is an error at one of its `after` entries.
fn order(
    file: &DeploymentFile,
    index: &PositionIndex,
    err: &dyn Fn(&str, String) -> FileError,
) -> Result<Vec<Step>, FileError> {
    let mut nodes: Vec<(Step, &str, &[String], String)> = Vec::new();
    for (i, t) in file.tasks.iter().enumerate() {
        nodes.push((Step::Task(i), &t.name, &t.after, format!("tasks[{i}]")));
    }
    for (i, s) in file.services.iter().enumerate() {
        nodes.push((
            Step::Service(i),
            &s.name,
            &s.after,
            format!("services[{i}]"),
        ));
    }
    // Declaration order = position in the file, so a task written after a service stays after it.
    nodes.sort_by_key(|n| {
        let p = index.get(&n.3);
        (p.line, p.column)
    });
    let id: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.1, i)).collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
    for (_, name, after, at) in &nodes {
        let mut d = Vec::new();
        for (j, a) in after.iter().enumerate() {
            match id.get(a.as_str()) {
                Some(&k) if nodes[k].1 == *name => {
                    return Err(err(
                        &format!("{at}.after[{j}]"),
                        format!("step {name:?} cannot come after itself"),
                    ))
                }
                Some(&k) => d.push(k),
                None => {
                    return Err(err(
                        &format!("{at}.after[{j}]"),
                        format!("unknown step {a:?} in `after`"),
                    ))
                }
            }
        }
        deps.push(d);
    }
    let mut done = vec![false; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    while out.len() < nodes.len() {
        let ready = (0..nodes.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match ready {
            Some(i) => {
                done[i] = true;
                out.push(nodes[i].0);
            }
            None => {
                let start = (0..nodes.len()).find(|&i| !done[i]).unwrap_or(0);
                let cycle = find_cycle(start, &deps, &done);
                let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].1).collect();
                // Point at the `after` entry of the first member that names the next one.
                let (a, b) = (cycle[0], cycle[1]);
                let j = nodes[a].2.iter().position(|x| x == nodes[b].1).unwrap_or(0);
                return Err(err(
                    &format!("{}.after[{j}]", nodes[a].3),
                    format!("cycle in the rollout order: {}", names.join(" after ")),
                ));
            }
        }
    }
    Ok(out)
}

/// Walks unfinished dependencies from `start` until a node repeats; returns the cycle
/// closed (first == last).
fn find_cycle(start: usize, deps: &[Vec<usize>], done: &[bool]) -> Vec<usize> {
    let mut path = vec![start];
    let mut cur = start;
    loop {
        // Every node left is blocked, so it has an unfinished dependency.
        let next = deps[cur]
            .iter()
            .copied()
            .find(|&d| !done[d])
            .unwrap_or(start);
        if let Some(at) = path.iter().position(|&p| p == next) {
            let mut cycle = path[at..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
        cur = next;
    }
}

/// Durations as "90s", "15m", "1h", "500ms" or a number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// A scalar that may be written as a string or a number; a visitor rather than an untagged
/// enum so serde_yaml keeps the value's position in errors.
enum StrOrNum {
    S(String),
    N(u64),
}

impl<'de> Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StrOrNum;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a non-negative number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrOrNum, E> {
                Ok(StrOrNum::S(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::N(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    // Parsed inside the visitor: an error raised there carries the scalar's position.
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 90s, 15m or 1h")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s)
                .ok_or_else(|| E::custom(format!("invalid duration {s:?} (use e.g. 90s, 15m, 1h)")))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(n))
        }
    }
    d.deserialize_any(V)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match StrOrNum::deserialize(d)? {
        StrOrNum::S(s) => s,
        StrOrNum::N(n) => n.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "task_definitions:\n  t: {family: f, containers: [{name: c, image: i}]}\n";

    fn names(d: &Deployment) -> Vec<&str> {
        d.order
            .iter()
            .map(|s| match *s {
                Step::Task(i) => d.task(i).name.as_str(),
                Step::Service(i) => d.service(i).name.as_str(),
            })
            .collect()
    }

    #[test]
    fn order_follows_after_then_the_file() {
        let text = format!(
            "clusters: [a]\n{TD}services:\n  - {{name: s1, clusters: [a], task_definition: t, desired_count: 1, after: [s3]}}\n  - {{name: s2, clusters: [a], task_definition: t, desired_count: 1}}\n  - {{name: s3, clusters: [a], task_definition: t, desired_count: 1}}\ntasks:\n  - {{name: t1, cluster: a, task_definition: t}}\n"
        );
        let d = parse("f", &text).unwrap();
        // s2 is first ready in file order; s1 waits for s3; the task comes last in the file.
        assert_eq!(names(&d), ["s2", "s3", "s1", "t1"]);
    }

    #[test]
    fn a_three_step_cycle_names_its_members() {
        let text = format!(
            "clusters: [a]\n{TD}services:\n  - {{name: x, clusters: [a], task_definition: t, desired_count: 1, after: [z]}}\n  - {{name: y, clusters: [a], task_definition: t, desired_count: 1, after: [x]}}\n  - {{name: z, clusters: [a], task_definition: t, desired_count: 1, after: [y]}}\n"
        );
        let e = parse("f", &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:5:76: cycle in the rollout order: x after z after y after x"
        );
    }

    #[test]
    fn container_dependencies_are_checked() {
        let td = |deps: &str| {
            format!("clusters: [a]\ntask_definitions:\n  t: {{family: f, containers: [{{name: b, image: i}}, {{name: u, image: i, depends_on: [{deps}]}}]}}\nservices:\n  - {{name: s, clusters: [a], task_definition: t, desired_count: 1}}\n")
        };
        let d = parse("f", &td("{container_name: b, condition: SUCCESS}")).unwrap();
        assert_eq!(
            d.file.task_definitions["t"].containers[1].depends_on.len(),
            1
        );
        let e = parse("f", &td("{container_name: x, condition: SUCCESS}")).unwrap_err();
        assert!(e.to_string().starts_with("f:3:"), "{e}");
        assert!(e.to_string().contains("not another container"), "{e}");
        let e = parse("f", &td("{container_name: b, condition: DONE}")).unwrap_err();
        assert!(e.to_string().contains("not one of START"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("10 minutes"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn other_checks_point_at_the_node() {
        let svc = |extra: &str| {
            format!("clusters: [a]\n{TD}services:\n  - {{name: s, clusters: [a], task_definition: t, desired_count: 1{extra}}}\n")
        };
        let e = parse("f", &svc(", after: [s]")).unwrap_err();
        assert_eq!(e.to_string(), "f:5:76: step \"s\" cannot come after itself");
        let e = parse(
            "f",
            &svc("").replace("desired_count: 1", "desired_count: -1"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f:5:65: desired_count must be 0 or more");
        let e = parse(
            "f",
            &svc("").replace("clusters: [a], task", "clusters: [a, a], task"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f:5:29: cluster \"a\" is listed twice");
        let e = parse("f", "clusters: []\ntask_definitions: {}\n").unwrap_err();
        assert_eq!(e.to_string(), "f:1:11: no cluster is declared");
        let e = parse("f", &format!("clusters: [a]\n{TD}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1:1: the file declares no service and no task"
        );
    }
}
