//! `tessera submit`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tessera_api::{Client, Job, JobState, RootTask, SubmitJob, TaskIdentifier};

use super::ServerRef;
use crate::format;

/// Options of `tessera submit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The root task's type, e.g. ParallelSleepWorkflow.
    task: String,
    /// The task type's version.
    #[arg(long, default_value = "v0.0")]
    version: String,
    /// The job's name (default: the task name).
    #[arg(long)]
    name: Option<String>,
    /// The root task's input as JSON.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the root task's input from a JSON file ("-" for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// The cluster whose runners run the job.
    #[arg(long)]
    cluster: Option<String>,
    /// How often the root task may be retried.
    #[arg(long, default_value_t = 0)]
    max_retries: u32,
    /// Wait until the job finishes: exit 0 if it completed, 1 if it failed or was canceled.
    #[arg(long)]
    wait: bool,
    /// Print the job as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerRef,
}

fn read_input(args: &Args) -> anyhow::Result<serde_json::Value> {
    let text = match (&args.input, &args.input_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .context("could not read the input from stdin")?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("could not read the input file {}", path.display()))?,
        (None, None) => return Ok(serde_json::json!({})),
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "the input is not valid JSON (give an object such as '{{\"count\": 20}}'): {text:.200}"
        )
    })
}

/// Submits the job and, with `--wait`, follows it to the end.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identifier = TaskIdentifier::parse(&args.task, &args.version)?;
    let input = read_input(&args)?;
    let client = args.server.client();
    let job = client
        .submit(&SubmitJob {
            name: args.name.clone().unwrap_or_else(|| args.task.clone()),
            root: RootTask {
                identifier,
                input,
                max_retries: args.max_retries,
                display: None,
            },
            cluster: args.cluster.clone(),
        })
        .await?;
    if !args.json || args.wait {
        let out = |line: String| {
            if args.json {
                eprintln!("{line}")
            } else {
                println!("{line}")
            }
        };
        out(format!("Submitted job: {}", job.id));
        out(format!(
            "Open in Console: {}/jobs/{}",
            client.base(),
            job.id
        ));
    }
    if !args.wait {
        if args.json {
            format::json(&job)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = wait_for(&client, &job.id, !args.json && format::stdout_is_terminal()).await?;
    if args.json {
        format::json(&job)?;
    } else {
        println!(
            "Job {} {} in {}: {} computed, {} failed, {} canceled",
            job.id,
            job.state,
            format::duration_ns(
                job.finished_at
                    .unwrap_or(job.submitted_at)
                    .saturating_sub(job.submitted_at)
            ),
            format::count(job.task_counts.computed, "task"),
            job.task_counts.failed,
            job.task_counts.canceled
        );
        if job.state == JobState::Failed {
            print_failure(&client, &job.id).await;
        }
    }
    Ok(if job.state == JobState::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Names the task that failed a job and its reason (best effort: the job's state is already
/// said).
async fn print_failure(client: &Client, job: &str) {
    let query = tessera_api::TaskQuery {
        state: Some(tessera_api::TaskState::Failed),
        limit: Some(1),
        ..Default::default()
    };
    match client.tasks(job, &query).await {
        Ok(page) => {
            if let Some(task) = page.tasks.first() {
                println!(
                    "Task {} ({}) failed after {} {}: {}",
                    format::safe_max(&task.display, 80),
                    task.id,
                    task.attempts,
                    if task.attempts == 1 {
                        "attempt"
                    } else {
                        "attempts"
                    },
                    format::safe_max(task.error.as_deref().unwrap_or("no reason recorded"), 2000)
                );
                println!("See its log: tessera logs {job} --task {}", task.id);
            }
        }
        Err(e) => eprintln!("could not look up the failed task: {e}"),
    }
}

/// Polls a job until it finishes, with a progress bar on a terminal or a line per change.
pub async fn wait_for(client: &Client, id: &str, bar: bool) -> anyhow::Result<Job> {
    let progress = bar.then(|| {
        let pb = indicatif::ProgressBar::new(1);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
            )
            .expect("a valid template"),
        );
        pb
    });
    let mut last = String::new();
    // A job with work queued but nothing running or finishing for a while may be waiting for
    // a runner that does not exist: say so, once.
    let mut since_change = std::time::Instant::now();
    let mut explained = false;
    loop {
        let job = client.job(id).await?;
        let c = &job.task_counts;
        let summary = format!(
            "{}: {} queued, {} running, {} computed, {} failed",
            job.state, c.queued, c.running, c.computed, c.failed
        );
        if summary != last {
            since_change = std::time::Instant::now();
        } else if !explained
            && c.queued > 0
            && c.running == 0
            && since_change.elapsed() >= Duration::from_secs(5)
        {
            explained = true;
            let list = client.unserved(id).await.unwrap_or_default();
            for u in &list.tasks {
                let line = super::runners::waiting_line(u);
                match &progress {
                    Some(pb) => pb.println(line),
                    None => println!("{line}"),
                }
            }
        }
        match &progress {
            Some(pb) => {
                pb.set_length(c.total());
                // What was reached: a failed or canceled job's bar stops short of the end.
                pb.set_position(c.computed);
                pb.set_message(job.state.to_string());
            }
            None if summary != last => println!("{summary}"),
            None => {}
        }
        last = summary;
        if job.state.is_finished() {
            if let Some(pb) = progress {
                pb.finish_and_clear();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
