//! `tessera jobs output` and `tessera cache`: data between tasks, as people and scripts read it.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tessera_api::{CacheQuery, Client};

use super::ServerRef;
use crate::format;

/// Largest output or value the CLI reads (the server keeps at most 64 MiB).
const MAX_READ: u64 = 1 << 30;

/// Options of `tessera cache`.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// The job.
    job: String,
    #[command(subcommand)]
    action: Option<CacheAction>,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum CacheAction {
    /// The job's cache keys, in byte order, with their sizes (the default).
    List {
        /// Only keys that begin with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One value (JSON pretty-printed; other bytes raw when piped).
    Get {
        /// The key.
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A stored value as `--json` prints it: its size, the value itself when it is JSON, and its
/// bytes in base64.
#[derive(Serialize)]
struct Value<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// Its size; absent when there is no value.
    bytes: Option<usize>,
    /// The value, when it is JSON.
    json: Option<serde_json::Value>,
    /// Every byte, in base64.
    base64: Option<String>,
}

fn value<'a>(task_id: Option<&'a str>, key: Option<&'a str>, bytes: Option<&[u8]>) -> Value<'a> {
    Value {
        task_id,
        key,
        bytes: bytes.map(<[u8]>::len),
        json: bytes.and_then(|b| serde_json::from_slice(b).ok()),
        base64: bytes.map(|b| STANDARD.encode(b)),
    }
}

/// Prints stored bytes for a person or a pipe: JSON pretty-printed; other text escaped on a
/// terminal; binary raw into a pipe, and only described on a terminal.
fn print_bytes(bytes: &[u8], what: &str) -> anyhow::Result<()> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        // serde_json escapes every control character: safe for a terminal.
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let terminal = format::stdout_is_terminal();
    match std::str::from_utf8(bytes) {
        Ok(text) if terminal => println!("{}", format::safe_max(text, usize::MAX)),
        Err(_) if terminal => println!(
            "{what} is {} of binary data; redirect it to a file (… > out.bin) or use --json",
            tessera_api::limits::human_bytes(bytes.len())
        ),
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// `tessera jobs output JOB [TASK]`.
pub async fn output(
    client: &Client,
    job: &str,
    task: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let output = match client.output(job, task, MAX_READ).await {
        Ok(output) => output,
        // Not computed (yet, or ever): no output, said as such, exit 1 (errors exit 2).
        Err(e) if e.status() == Some(409) => {
            eprintln!("{}", format::safe(&e.to_string()));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        format::json(&value(Some(&output.task_id), None, output.value.as_deref()))?;
        return Ok(ExitCode::SUCCESS);
    }
    match &output.value {
        Some(bytes) => print_bytes(bytes, &format!("the output of task {}", output.task_id))?,
        None => eprintln!(
            "Task {} computed without an output (a task sets one with ctx.set_output)",
            output.task_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tessera cache JOB [list|get KEY]`.
pub async fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    let action = args.action.unwrap_or(CacheAction::List {
        prefix: String::new(),
        json: false,
    });
    match action {
        CacheAction::List { prefix, json } => {
            let mut entries = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let query = CacheQuery {
                    prefix: (!prefix.is_empty()).then(|| prefix.clone()),
                    after: after.take(),
                    limit: None,
                    as_of: None,
                };
                let page = client.cache(&args.job, &query).await?;
                entries.extend(page.entries);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if json {
                format::json(&serde_json::json!({ "entries": entries }))?;
                return Ok(ExitCode::SUCCESS);
            }
            if entries.is_empty() {
                println!(
                    "Job {}'s cache holds no keys{}",
                    args.job,
                    match prefix.as_str() {
                        "" => String::new(),
                        p => format!(" beginning with {}", tessera_api::limits::elide(p, 200)),
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        format::safe_max(&e.key, 200),
                        tessera_api::limits::human_bytes(e.bytes as usize),
                    ]
                })
                .collect();
            format::table(&["KEY", "SIZE"], &rows);
        }
        CacheAction::Get { key, json } => {
            let found = client.cache_value(&args.job, &key, MAX_READ, None).await?;
            if json {
                format::json(&value(None, Some(&key), found.as_deref()))?;
                return Ok(ExitCode::SUCCESS);
            }
            match found {
                Some(bytes) => print_bytes(&bytes, &format!("the value of {key:?}"))?,
                None => {
                    eprintln!(
                        "Job {} has no cache value under {} (tessera cache {} list shows its keys)",
                        args.job,
                        tessera_api::limits::elide(&key, 200),
                        args.job
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
