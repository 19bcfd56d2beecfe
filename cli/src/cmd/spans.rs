//! `tessera spans JOB`: the waterfall of task attempts.

use std::collections::BTreeMap;
use std::process::ExitCode;
use tessera_api::component::short_digest;

use tessera_api::{Span, SpanQuery};

use super::ServerRef;
use crate::format;

/// Options of `tessera spans`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id.
    job: String,
    /// Print JSON (an array of spans).
    #[arg(long)]
    json: bool,
    /// Width of the waterfall bars.
    #[arg(long, default_value_t = 50)]
    width: usize,
    #[command(flatten)]
    server: ServerRef,
}

/// Prints every span of the job.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    let mut spans: Vec<Span> = Vec::new();
    let mut cursor = None;
    loop {
        let page = client
            .spans(
                &args.job,
                &SpanQuery {
                    cursor,
                    limit: Some(5000),
                    ..Default::default()
                },
            )
            .await?;
        spans.extend(page.spans);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if args.json {
        return format::json(&spans).map(|_| ExitCode::SUCCESS);
    }
    if spans.is_empty() {
        println!(
            "No task has started yet in job {}.",
            format::safe_max(&args.job, 80)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = tessera_api::now_unix_nano();
    let start = spans
        .iter()
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_time_unix_nano.unwrap_or(now))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let scale = args.width.max(10) as f64 / (end - start) as f64;
    let mut runners: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &spans {
        let n = runners.len();
        runners.entry(s.runner_id.as_str()).or_insert(n + 1);
    }
    // Which code ran each attempt, when runners said (older runners do not).
    let named = spans.iter().any(|s| s.component.is_some());
    let rows: Vec<Vec<String>> = spans
        .iter()
        .map(|s| {
            let e = s.end_time_unix_nano.unwrap_or(now);
            let from = ((s.start_time_unix_nano - start) as f64 * scale) as usize;
            let len = (((e - s.start_time_unix_nano) as f64 * scale).round() as usize).max(1);
            let bar = format!("{}{}", " ".repeat(from), "█".repeat(len));
            let mut row = vec![
                format::safe_max(&s.name, 80),
                format!("runner {}", runners[s.runner_id.as_str()]),
                format!("+{}", format::duration_ns(s.start_time_unix_nano - start)),
                format::duration_ns(e - s.start_time_unix_nano),
                format!("{:?}", s.outcome).to_lowercase(),
            ];
            if named {
                let code = s.component.as_deref().map_or("–", short_digest);
                row.push(format::safe_max(code, 80));
            }
            row.push(bar);
            row
        })
        .collect();
    let mut header = vec!["TASK", "RUNNER", "START", "DURATION", "OUTCOME"];
    if named {
        header.push("COMPONENT");
    }
    header.push("WATERFALL");
    format::table(&header, &rows);
    println!();
    println!(
        "{} on {} over {}",
        format::count(spans.len() as u64, "span"),
        format::count(runners.len() as u64, "runner"),
        format::duration_ns(end - start)
    );
    let mut legend: Vec<(&usize, &&str)> = runners.iter().map(|(id, n)| (n, id)).collect();
    legend.sort();
    for (n, id) in legend {
        println!("  runner {n}: {}", format::safe_max(id, 200));
    }
    Ok(ExitCode::SUCCESS)
}
