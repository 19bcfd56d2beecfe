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

/// The widest the task column grows, in characters; longer names are cut to it.
const MAX_TASK_COLUMN: usize = 40;

/// The name a line's task is shown by: its display name, else the end of its id.
fn task_name<'a>(line: &'a LogLine, names: &'a HashMap<String, String>) -> &'a str {
    names
        .get(&line.task_id)
        .map(String::as_str)
        .unwrap_or_else(|| format::short(&line.task_id))
}

/// `text` made safe and exactly `width` characters wide: cut with `…`, or padded.
fn column(text: &str, width: usize) -> String {
    let safe = format::safe(text);
    let n = safe.chars().count();
    if n > width {
        let cut: String = safe.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{safe}{}", " ".repeat(width - n))
    }
}

fn print_line(line: &LogLine, names: &HashMap<String, String>, width: usize) {
    let mut text = format!(
        "{} {:<5} {} {}",
        format::time_of_day(line.time_unix_nano),
        line.level.as_str().to_uppercase(),
        column(task_name(line, names), width),
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
    let mut width = 8;
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
        // The task column fits the longest name seen so far (up to a limit), so that the
        // messages line up; it only grows.
        let widest = page
            .logs
            .iter()
            .map(|l| format::safe(task_name(l, &names)).chars().count())
            .max()
            .unwrap_or(0);
        width = width.max(widest.min(MAX_TASK_COLUMN));
        for line in page.logs {
            match (args.json, args.follow) {
                (true, true) => println!("{}", serde_json::to_string(&line)?),
                (true, false) => all.push(line),
                (false, _) => print_line(&line, &names, width),
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

#[cfg(test)]
mod tests {
    use super::column;

    #[test]
    fn task_columns_are_cut_or_padded_to_their_width() {
        assert_eq!(column("SleepTask(1)", 14), "SleepTask(1)  ");
        assert_eq!(column("WordFrequencyJob(large)", 10), "WordFrequ…");
        // Escaped control characters count as what is shown.
        assert_eq!(column("a\nb", 6), "a\\nb  ");
        assert_eq!(column("ééé", 3), "ééé");
    }
}
