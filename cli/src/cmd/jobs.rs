//! `tessera jobs list|show|cancel|retry|delete|output`.

use std::process::ExitCode;

use tessera_api::{Job, JobFilter, JobState, TaskQuery};

use super::ServerRef;
use crate::format;

/// Options of `tessera jobs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, completed, failed, canceled).
        #[arg(long)]
        state: Option<JobState>,
        /// Only jobs whose name contains this text.
        #[arg(long)]
        name: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only this tenant's jobs (an operator's key sees every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job: state, task counts, progress, times and its first tasks.
    Show {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List every task (the first 20 otherwise; with --json, a `tasks` array).
        #[arg(long)]
        tasks: bool,
    },
    /// Cancel a job: queued tasks stop, running ones stop at their next lease extension.
    Cancel {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Requeue a job's failed and canceled tasks.
    Retry {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a job that is over, with its tasks, logs, spans, outputs and cache.
    Delete {
        /// The job id.
        id: String,
        /// Print JSON (the job as it was).
        #[arg(long)]
        json: bool,
    },
    /// A task's output: the root task's (the job's result), or TASK's. JSON is pretty-printed;
    /// other bytes go raw into a pipe.
    Output {
        /// The job id.
        id: String,
        /// A task of the job (default: its root task).
        task: Option<String>,
        /// Print JSON: the task, the size, the value when it is JSON, and base64 bytes.
        #[arg(long)]
        json: bool,
    },
}

fn counts(job: &Job) -> String {
    format!("{}/{}", job.task_counts.computed, job.task_counts.total())
}

fn duration(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => format::duration_ns(f.saturating_sub(s)),
        (Some(s), None) => format!(
            "{} so far",
            format::duration_ns(tessera_api::now_unix_nano().saturating_sub(s))
        ),
        _ => "-".into(),
    }
}

/// How many attempts ran at once on average over a job's wall time, for people: nothing when
/// it would read as 0.0 (a short job's task time against its wait for runners says nothing of
/// how parallel it ran).
fn parallelism(task_time_ns: u64, wall_ns: u64) -> Option<String> {
    let ratio = task_time_ns as f64 / wall_ns.max(1) as f64;
    (ratio >= 0.1).then(|| format!(" (parallelism {ratio:.1})"))
}

fn print_job(job: &Job) {
    println!("Job:        {} ({})", job.id, format::safe(&job.name));
    println!("State:      {}", job.state);
    println!("Cluster:    {}", format::safe(&job.cluster));
    if !job.tenant.is_empty() && job.tenant != "default" {
        println!("Tenant:     {}", format::safe(&job.tenant));
    }
    let c = &job.task_counts;
    println!(
        "Tasks:      {} in all: {} queued, {} running, {} computed, {} failed, {} canceled",
        c.total(),
        c.queued,
        c.running,
        c.computed,
        c.failed,
        c.canceled
    );
    for p in &job.progress {
        println!(
            "Progress:   {} {}/{}",
            format::safe(&p.label),
            p.done,
            p.total
        );
    }
    println!("Submitted:  {}", format::timestamp(job.submitted_at));
    if let Some(s) = job.started_at {
        println!("Started:    {}", format::timestamp(s));
    }
    if let Some(f) = job.finished_at {
        println!("Finished:   {}", format::timestamp(f));
    }
    println!("Duration:   {}", duration(job));
    if job.task_time_ns > 0 {
        let wall = match (job.started_at, job.finished_at) {
            (Some(s), Some(f)) if f > s => Some(f - s),
            _ => None,
        };
        let parallelism = wall.and_then(|w| parallelism(job.task_time_ns, w));
        println!(
            "Task time:  {}{}",
            format::duration_ns(job.task_time_ns),
            parallelism.unwrap_or_default()
        );
    }
}

/// Runs the action.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    match args.action {
        Action::List {
            state,
            name,
            limit,
            tenant,
            json,
        } => {
            let page = client
                .jobs(&JobFilter {
                    state,
                    name,
                    limit: Some(limit.clamp(1, 500)),
                    tenant,
                    ..Default::default()
                })
                .await?;
            if json {
                return format::json(&page.jobs).map(|_| ExitCode::SUCCESS);
            }
            if page.jobs.is_empty() {
                println!("No jobs yet: submit one with `tessera submit TASK`.");
                return Ok(ExitCode::SUCCESS);
            }
            // A page of several tenants' jobs (an operator's) says whose each is.
            let several = page.jobs.iter().any(|j| j.tenant != page.jobs[0].tenant);
            let rows: Vec<Vec<String>> = page
                .jobs
                .iter()
                .map(|j| {
                    let mut row = vec![
                        j.id.clone(),
                        j.name.clone(),
                        j.state.to_string(),
                        counts(j),
                        j.task_counts.failed.to_string(),
                        format::timestamp(j.submitted_at),
                        duration(j),
                    ];
                    if several {
                        row.insert(2, j.tenant.clone());
                    }
                    row
                })
                .collect();
            let mut header = vec![
                "ID",
                "NAME",
                "STATE",
                "COMPUTED",
                "FAILED",
                "SUBMITTED (UTC)",
                "DURATION",
            ];
            if several {
                header.insert(2, "TENANT");
            }
            format::table(&header, &format::safe_rows(rows, 80));
        }
        Action::Show { id, json, tasks } => {
            let job = client.job(&id).await?;
            if json && !tasks {
                return format::json(&job).map(|_| ExitCode::SUCCESS);
            }
            // Every task, page by page, or the first 20.
            let mut list = Vec::new();
            let mut query = TaskQuery {
                limit: Some(if tasks { 1000 } else { 20 }),
                ..Default::default()
            };
            let more = loop {
                let page = client.tasks(&id, &query).await?;
                list.extend(page.tasks);
                match page.next_cursor {
                    Some(cursor) if tasks => query.cursor = Some(cursor),
                    next => break next.is_some(),
                }
            };
            if json {
                let mut value = serde_json::to_value(&job)?;
                value["tasks"] = serde_json::to_value(&list)?;
                return format::json(&value).map(|_| ExitCode::SUCCESS);
            }
            print_job(&job);
            if job.task_counts.queued > 0 {
                super::runners::explain_waiting(&client, &id).await;
            }
            println!();
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        format!("{}{}", "  ".repeat(t.depth as usize), t.display),
                        t.identifier.version.to_string(),
                        t.state.to_string(),
                        t.attempts.to_string(),
                        t.id.clone(),
                        t.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            // An error can be kilobytes of backtrace: one line of it here, all of it in the
            // console and in `--json`.
            format::table(
                &["TASK", "VERSION", "STATE", "ATTEMPTS", "ID", "ERROR"],
                &format::safe_rows(rows, 200),
            );
            if more {
                println!(
                    "… more tasks with --tasks, or in the console: {}/jobs/{id}",
                    client.base()
                );
            }
        }
        Action::Cancel { id, json } => {
            let job = client.cancel(&id).await?;
            if json {
                return format::json(&job).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "Canceled job {}: {} canceled, {} still running will stop at their next lease \
                 extension",
                job.id,
                format::count(job.task_counts.canceled, "task"),
                job.task_counts.running
            );
        }
        Action::Delete { id, json } => {
            let job = client.delete_job(&id).await?;
            if json {
                return format::json(&job).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "Deleted job {} ({}): {}, their logs, spans, outputs and cache",
                job.id,
                format::safe(&job.name),
                format::count(job.task_counts.total(), "task")
            );
        }
        Action::Output { id, task, json } => {
            return super::data::output(&client, &id, task.as_deref(), json).await;
        }
        Action::Retry { id, json } => {
            let job = client.retry(&id).await?;
            if json {
                return format::json(&job).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "Retrying job {}: {} queued again",
                job.id,
                format::count(job.task_counts.queued, "task")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parallelism;

    #[test]
    fn parallelism_is_said_only_when_it_says_something() {
        // 27 ms of tasks over a 10 s job (it waited for a runner): not "parallelism 0.0".
        assert_eq!(parallelism(27_000_000, 10_000_000_000), None);
        assert_eq!(
            parallelism(20_000_000_000, 4_000_000_000).as_deref(),
            Some(" (parallelism 5.0)")
        );
        assert_eq!(
            parallelism(1_000_000_000, 2_000_000_000).as_deref(),
            Some(" (parallelism 0.5)")
        );
    }
}
