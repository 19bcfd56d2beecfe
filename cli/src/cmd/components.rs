//! `tessera deploy` and `tessera components list|show|undeploy`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tessera_api::component::{DIGEST_PREFIX, short_digest};
use tessera_api::limits::human_bytes;
use tessera_api::{Component, ComponentQuery, DeployQuery};
use tessera_host::{Host, HostConfig, Limits};

use super::ServerRef;
use crate::format;

/// Options of `tessera deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The task component (.wasm) to deploy.
    component: PathBuf,
    /// The name to deploy it under (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerRef,
}

/// Options of `tessera components`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The deployed components, most recently deployed first.
    List {
        /// Include undeployed components (jobs that pinned them still run them).
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One component, by digest or by name (the latest deployed under it).
    Show {
        /// A digest (sha256:…) or a name.
        component: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stops a component (by digest), or every component deployed under a name, from serving
    /// new jobs; jobs that pinned it keep running it.
    Undeploy {
        /// A digest (sha256:…) or a name.
        component: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who deploys: `$USER@host`, as far as this machine says.
fn deployer() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    tessera_api::limits::cut(&format!("{user}@{host}"), 200)
}

/// Runs `tessera deploy`: checks the component as the server will, loads it in the sandbox
/// (which reads its task types), then uploads it.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("could not read {}", args.component.display()))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .component
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("tasks")
            .to_string(),
    };
    // What the server will check, with its exact words; then a real load in the sandbox.
    tessera_server::component::check(&bytes).map_err(|why| {
        anyhow::anyhow!(
            "{} is not a Tessera task component: {why}",
            args.component.display()
        )
    })?;
    let host = Host::new(HostConfig {
        max_instances: 2,
        ..HostConfig::default()
    })
    .context("could not start the WebAssembly sandbox to check the component")?;
    let loaded = host
        .load_bytes(&args.component, bytes.clone(), &Limits::default())
        .await?;
    let digest = format!("{DIGEST_PREFIX}{}", loaded.digest());
    let types: Vec<String> = loaded
        .identifiers()
        .iter()
        .map(ToString::to_string)
        .collect();
    let query = DeployQuery {
        name,
        digest,
        task_types: types.join(","),
        by: Some(deployer()),
    };
    // A component over the server's limit is refused here, not cut off mid-upload (the server
    // answers 413 at once, and a client still sending may see only a broken connection).
    let client = args.server.client();
    let max = client.health().await?.max_component_bytes;
    if max > 0 && bytes.len() as u64 > max {
        anyhow::bail!(
            "{} ({} bytes) is larger than this server's limit of {} MiB (tessera server \
             --max-component-mib)",
            args.component.display(),
            bytes.len(),
            max >> 20
        );
    }
    let deployed = client.deploy(&query, bytes).await?;
    if args.json {
        format::json(&deployed)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &deployed.component;
    if deployed.created {
        println!(
            "Deployed {} {} ({}): {}",
            format::safe_max(&c.name, 200),
            c.digest,
            human_bytes(c.size as usize),
            types.join(", ")
        );
        println!("Jobs submitted from now on run it; serve them with: tessera runner --deployed");
    } else {
        println!(
            "Already deployed: {} {} (deployed {} by {}); nothing changed.",
            format::safe_max(&c.name, 200),
            c.digest,
            format::timestamp(c.deployed_at),
            format::safe_max(&c.deployed_by, 200)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `tessera components`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    match args.action {
        Action::List { all, json } => {
            let list = client.components(&ComponentQuery { all }).await?;
            if json {
                return format::json(&list).map(|_| ExitCode::SUCCESS);
            }
            if list.components.is_empty() {
                println!("No component is deployed; deploy one with `tessera deploy TASKS.wasm`.");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list.components.iter().map(row).collect();
            format::table(
                &["NAME", "DIGEST", "SIZE", "DEPLOYED", "BY", "TASK TYPES"],
                &format::safe_rows(rows, 200),
            );
            println!(
                "{}",
                format::count(list.components.len() as u64, "component")
            );
        }
        Action::Show { component, json } => {
            let c = client.component(&component).await?;
            if json {
                return format::json(&c).map(|_| ExitCode::SUCCESS);
            }
            show(&c);
        }
        Action::Undeploy { component, json } => {
            let list = client.undeploy(&component).await?;
            if json {
                return format::json(&list).map(|_| ExitCode::SUCCESS);
            }
            for c in &list.components {
                println!(
                    "Undeployed {} {}: new jobs no longer run it; jobs that pinned it still do.",
                    format::safe_max(&c.name, 200),
                    c.digest
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(c: &Component) -> Vec<String> {
    let types: Vec<String> = c.task_types.iter().map(ToString::to_string).collect();
    let deployed = match c.undeployed_at {
        Some(at) => format!("undeployed {}", format::timestamp(at)),
        None => format::timestamp(c.deployed_at),
    };
    vec![
        c.name.clone(),
        short_digest(&c.digest).to_string(),
        human_bytes(c.size as usize),
        deployed,
        c.deployed_by.clone(),
        types.join(", "),
    ]
}

fn show(c: &Component) {
    let types: Vec<String> = c.task_types.iter().map(ToString::to_string).collect();
    println!("Name:        {}", format::safe_max(&c.name, 200));
    println!("Digest:      {}", c.digest);
    println!("Size:        {}", human_bytes(c.size as usize));
    println!("Task types:  {}", format::safe(&types.join(", ")));
    println!(
        "Deployed:    {} by {}",
        format::timestamp(c.deployed_at),
        format::safe_max(&c.deployed_by, 200)
    );
    if let Some(at) = c.undeployed_at {
        println!(
            "Undeployed:  {} (jobs that pinned it still run it)",
            format::timestamp(at)
        );
    }
}
