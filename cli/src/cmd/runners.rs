//! `tessera runners list`.

use std::process::ExitCode;

use super::ServerRef;
use crate::format;

/// Options of `tessera runners`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The runners seen in the last five minutes, with what they serve.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tessera runners`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    match args.action {
        Action::List { json } => {
            let list = client.runners().await?;
            if json {
                return format::json(&list).map(|_| ExitCode::SUCCESS);
            }
            if list.runners.is_empty() {
                println!("No runner has claimed work in the last five minutes.");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .runners
                .iter()
                .map(|r| {
                    let serves: Vec<String> =
                        r.identifiers.iter().map(ToString::to_string).collect();
                    let serves = if r.deployed {
                        "deployed components".to_string()
                    } else {
                        format!("files: {}", serves.join(", "))
                    };
                    let slots = r.concurrency.map_or("?".to_string(), |c| c.to_string());
                    vec![
                        r.id.clone(),
                        r.host.clone().unwrap_or_else(|| "?".into()),
                        r.cluster.clone(),
                        format!("{}/{slots}", r.running),
                        r.wasmtime.clone().unwrap_or_else(|| "?".into()),
                        format::time_of_day(r.last_seen),
                        serves,
                    ]
                })
                .collect();
            format::table(
                &[
                    "RUNNER",
                    "HOST",
                    "CLUSTER",
                    "RUNNING",
                    "WASMTIME",
                    "LAST SEEN",
                    "SERVES",
                ],
                &format::safe_rows(rows, 200),
            );
            println!("{}", format::count(list.runners.len() as u64, "runner"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says which of a job's ready queued tasks no runner seen lately could run, and why (best
/// effort: nothing is printed when the server cannot tell).
pub async fn explain_waiting(client: &tessera_api::Client, job: &str) {
    let Ok(list) = client.unserved(job).await else {
        return;
    };
    for u in &list.tasks {
        println!("{}", waiting_line(u));
    }
}

/// One kind of task waiting for a runner, for people.
pub fn waiting_line(u: &tessera_api::Unserved) -> String {
    format!(
        "⚠ {} waiting: {}",
        format::count(u.queued, "task"),
        format::safe(&u.reason)
    )
}
