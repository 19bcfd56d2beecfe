//! `tessera logs JOB`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use tessera_api::{Client, Level, LogLine, LogQuery, TaskQuery};

use super::ServerRef;
use crate::format;

/// Options of `tessera logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id.
    job: String,
    /// Only this task's lines.
    #[arg(long)]
    task: Option<String>,
    /// Only lines at this level or above (trace, debug, info, warn, error).
    #[arg(long)]
    level: Option<Level>,
    /// Keep printing new lines as they arrive, until the job finishes (or Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Print JSON: an array, or one object per line with --follow.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerRef,
}

/// Display names of a job's tasks (for jobs small enough to list).
pub async fn task_names(client: &Client, job: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    let mut cursor = None;
    loop {
        let page = client
            .tasks(
                job,
                &TaskQuery {
                    cursor,
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await?;
        for t in page.tasks {
            names.insert(t.id, t.display);
        }
        cursor = page.next_cursor;
        if cursor.is_none() || names.len() >= 20_000 {
            return Ok(names);
        }
    }
}

fn print_line(line: &LogLine, names: &HashMap<String, String>) {
    let task = names
        .get(&line.task_id)
        .cloned()
        .unwrap_or_else(|| format::short(&line.task_id).to_string());
    let mut text = format!(
        "{} {:<5} {:<16} {}",
        format::time_of_day(line.time_unix_nano),
        line.level.as_str().to_uppercase(),
        format::safe_max(&task, 64),
        format::safe(&line.message)
    );
    for (k, v) in &line.fields {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!(
            " {}={}",
            format::safe_max(k, 64),
            format::safe(&v)
        ));
    }
    println!("{text}");
}

/// Prints the job's lines, then follows if asked.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    client.job(&args.job).await?;
    let mut names = if args.json {
        HashMap::new()
    } else {
        task_names(&client, &args.job).await?
    };
    let mut cursor = None;
    let mut all = Vec::new();
    let mut last_round = false;
    loop {
        let query = LogQuery {
            task: args.task.clone(),
            level: args.level,
            cursor: cursor.clone(),
            limit: Some(5000),
        };
        let page = client.logs(&args.job, &query).await?;
        let got = page.logs.len();
        if !args.json {
            // Tasks submitted after we listed them (a job still fanning out).
            for line in &page.logs {
                if !names.contains_key(&line.task_id)
                    && let Ok(task) = client.task(&line.task_id).await
                {
                    names.insert(task.id, task.display);
                }
            }
        }
        for line in page.logs {
            match (args.json, args.follow) {
                (true, true) => println!("{}", serde_json::to_string(&line)?),
                (true, false) => all.push(line),
                (false, _) => print_line(&line, &names),
            }
        }
        cursor = page.next_cursor;
        if got == 5000 {
            continue;
        }
        if !args.follow || last_round {
            break;
        }
        // Once the job is finished, one more round picks up lines shipped at its very end.
        last_round = client.job(&args.job).await?.state.is_finished();
        if !last_round {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if args.json && !args.follow {
        format::json(&all)?;
    }
    Ok(ExitCode::SUCCESS)
}
