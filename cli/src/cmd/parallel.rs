//! `tessera parallel -n N -- COMMAND...`: N copies of a command with prefixed output.

use std::io::IsTerminal;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Options of `tessera parallel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many copies.
    #[arg(short = 'n', long = "copies", default_value_t = 2)]
    copies: u32,
    /// After forwarding SIGINT/SIGTERM, wait this long before killing the copies.
    #[arg(long, default_value = "10", value_parser = super::seconds)]
    grace_seconds: Duration,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

const COLOURS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

fn prefix(i: u32, width: usize, colour: bool) -> String {
    let label = format!("[{i:>width$}]");
    if colour {
        format!(
            "\x1b[{}m{label}\x1b[0m ",
            COLOURS[(i as usize - 1) % COLOURS.len()]
        )
    } else {
        format!("{label} ")
    }
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    prefix: String,
    to_stderr: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if to_stderr {
                eprintln!("{prefix}{line}");
            } else {
                println!("{prefix}{line}");
            }
        }
    })
}

fn signal_all(children: &[(u32, Option<u32>)], signal: Signal) {
    for (_, pid) in children {
        if let Some(pid) = pid {
            let _ = kill(Pid::from_raw(*pid as i32), signal);
        }
    }
}

/// Runs the copies and waits for all of them.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    if args.copies == 0 {
        anyhow::bail!("-n must be at least 1");
    }
    let colour = std::io::stdout().is_terminal();
    let width = args.copies.to_string().len();
    let mut children: Vec<(u32, Child)> = Vec::new();
    let mut pumps = Vec::new();
    for i in 1..=args.copies {
        let mut cmd = Command::new(&args.command[0]);
        cmd.args(&args.command[1..])
            .env("TESSERA_PARALLEL_INDEX", i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Own process group: a terminal's Ctrl-C reaches the copies once, through us.
        cmd.as_std_mut().process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {:?}", args.command[0]))?;
        let p = prefix(i, width, colour);
        pumps.push(pump(child.stdout.take().expect("piped"), p.clone(), false));
        pumps.push(pump(child.stderr.take().expect("piped"), p, true));
        children.push((i, child));
    }
    let pids: Vec<(u32, Option<u32>)> = children.iter().map(|(i, c)| (*i, c.id())).collect();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let waits = futures_wait(children);
    tokio::pin!(waits);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let statuses = loop {
        tokio::select! {
            statuses = &mut waits => break statuses,
            _ = term.recv() => {
                eprintln!("parallel: forwarding SIGTERM to {} copies", pids.len());
                signal_all(&pids, Signal::SIGTERM);
                kill_at.get_or_insert(tokio::time::Instant::now() + args.grace_seconds);
            }
            _ = int.recv() => {
                eprintln!("parallel: forwarding SIGINT to {} copies", pids.len());
                signal_all(&pids, Signal::SIGINT);
                kill_at.get_or_insert(tokio::time::Instant::now() + args.grace_seconds);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                eprintln!("parallel: grace period over, killing the copies still running");
                signal_all(&pids, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    // A copy's own children may hold its output open after it exits: do not wait on them long.
    for p in pumps {
        if tokio::time::timeout(Duration::from_secs(2), p)
            .await
            .is_err()
        {
            break;
        }
    }
    let mut worst: Option<u8> = None;
    for (i, status) in statuses {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                let code = match (s.code(), s.signal()) {
                    (Some(c), _) => {
                        eprintln!("parallel: copy {i} exited with code {c}");
                        c.clamp(1, 255) as u8
                    }
                    (None, Some(sig)) => {
                        eprintln!("parallel: copy {i} was killed by signal {sig}");
                        (128 + sig).clamp(1, 255) as u8
                    }
                    _ => 1,
                };
                worst.get_or_insert(code);
            }
            Err(e) => {
                eprintln!("parallel: could not wait for copy {i}: {e}");
                worst.get_or_insert(1);
            }
        }
    }
    Ok(match worst {
        None => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code),
    })
}

/// Waits for every child, keeping their numbers.
async fn futures_wait(
    children: Vec<(u32, Child)>,
) -> Vec<(u32, std::io::Result<std::process::ExitStatus>)> {
    let handles: Vec<_> = children
        .into_iter()
        .map(|(i, mut c)| tokio::spawn(async move { (i, c.wait().await) }))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => out.push((0, Err(std::io::Error::other(e)))),
        }
    }
    out
}
