use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tollgate_ecs::aws::AwsEcs;
use tollgate_ecs::ops::{self, Filter};
use tollgate_ecs::rollout::{self, Error, Stderr, Timing};
use tollgate_ecs::{plan, spec};

/// Rolls services out on Amazon ECS from a deployment file (YAML).
#[derive(Parser)]
#[command(name = "tollgate-ecs", version)]
struct Cli {
    /// The deployment file.
    #[arg(
        short,
        long,
        env = "TOLLGATE_ECS_FILE",
        default_value = "deployment.yml",
        global = true
    )]
    file: PathBuf,
    /// AWS region (default: the SDK's environment/profile chain).
    #[arg(long, env = "AWS_REGION", global = true)]
    region: Option<String>,
    /// Send ECS calls to this endpoint instead of AWS (e.g. a local moto server).
    #[arg(long, env = "TOLLGATE_ECS_ENDPOINT", global = true)]
    endpoint_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct WaitArgs {
    /// How long one service may take to become steady (overrides settings.wait_timeout), e.g. 20m.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// How often to poll ECS (overrides settings.poll_interval), e.g. 5s.
    #[arg(long, value_parser = parse_duration)]
    poll_interval: Option<std::time::Duration>,
}

#[derive(Args, Clone)]
struct FilterArgs {
    /// Only this service (repeatable).
    #[arg(long = "service")]
    services: Vec<String>,
    /// Only this cluster (repeatable).
    #[arg(long = "cluster")]
    clusters: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the file only; no AWS call.
    Validate,
    /// Show what `deploy` would change.
    Plan,
    /// Register task definitions, run one-off tasks, create or update services in order,
    /// wait for each to be steady, and roll back what changed if anything fails.
    Deploy(WaitArgs),
    /// Put services back on the ACTIVE task definition revision before the one they run.
    Rollback {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show each service's deployments and counts in each cluster.
    Status(FilterArgs),
    /// Scale every service to zero, delete it, and deregister old task definition revisions.
    Destroy {
        /// Revisions of each family to keep registered (overrides settings.keep_revisions).
        #[arg(long)]
        keep: Option<usize>,
        /// Required: destroy deletes services.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    spec::parse_duration(s).ok_or_else(|| format!("invalid duration {s:?} (use e.g. 90s, 15m, 1h)"))
}

fn timing(d: &spec::Deployment, w: &WaitArgs) -> Timing {
    let mut t = Timing::from(d);
    if let Some(v) = w.timeout {
        t.wait_timeout = v;
    }
    if let Some(v) = w.poll_interval {
        t.poll_interval = v;
    }
    t
}

fn filter(f: &FilterArgs) -> Filter {
    Filter {
        services: f.services.clone(),
        clusters: f.clusters.clone(),
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    // The whole file is checked before the SDK is even configured.
    let d = spec::load(&cli.file)?;
    if let Command::Validate = cli.command {
        println!("{}: ok ({} step(s))", cli.file.display(), d.order.len());
        return Ok(());
    }
    if let Command::Destroy { yes: false, .. } = cli.command {
        return Err(Error::Precondition(
            "destroy deletes every service in the file; pass --yes to confirm".into(),
        ));
    }
    let ecs = AwsEcs::connect(cli.region, cli.endpoint_url).await;
    if !ecs.has_region() {
        return Err(Error::Precondition(
            "no AWS region: pass --region or set AWS_REGION (or a profile region)".into(),
        ));
    }
    match &cli.command {
        Command::Validate => {}
        Command::Plan => print!("{}", plan::plan(&ecs, &d).await?),
        Command::Deploy(w) => {
            let report = rollout::deploy(&ecs, &d, timing(&d, w), &Stderr).await?;
            if report.actions.is_empty() {
                println!("no changes");
            }
            for a in report.actions {
                println!("{a}");
            }
        }
        Command::Rollback { filter: f, wait } => {
            for line in ops::rollback(&ecs, &d, &filter(f), timing(&d, wait), &Stderr).await? {
                println!("{line}");
            }
        }
        Command::Status(f) => {
            for line in ops::status(&ecs, &d, &filter(f)).await? {
                println!("{line}");
            }
        }
        Command::Destroy { keep, wait, .. } => {
            let keep = keep.unwrap_or(d.file.settings.keep_revisions);
            if keep == 0 {
                return Err(Error::Precondition("--keep must be at least 1".into()));
            }
            for line in ops::destroy(&ecs, &d, keep, timing(&d, wait), &Stderr).await? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-ecs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-ecs: error: {e}");
            ExitCode::FAILURE
        }
    }
}
