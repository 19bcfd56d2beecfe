//! Support for whole-system tests: the real `tessera` binary, a real server process on a free
//! loopback port with a real SQLite file, real components built from source.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_api::{Client, Job, JobState, RootTask, SubmitJob, TaskIdentifier};

#[allow(unused_imports)]
pub use tessera_testkit::{guest, shared_cache, workspace};

/// The built `tessera` binary.
pub fn tessera() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.env("TESSERA_CACHE_DIR", shared_cache())
        .env_remove("TESSERA_TOKEN")
        .env_remove("TESSERA_SERVER")
        .env("TESSERA_LOG", "warn,tessera=info");
    cmd
}

/// A `tessera server` process; killed when dropped.
pub struct ServerProc {
    child: Child,
    pub url: String,
    pub db: PathBuf,
    pub log: PathBuf,
}

impl ServerProc {
    /// Starts `tessera server` on a free port with the database file `db`.
    pub fn start(db: &Path, extra: &[&str]) -> ServerProc {
        let log = db.with_extension(format!("server-{}.log", std::process::id()));
        ServerProc::start_db(&format!("sqlite://{}", db.display()), &log, extra)
    }

    /// Starts `tessera server` on a free port with the database `url`, logging to `log`.
    pub fn start_db(url: &str, log: &Path, extra: &[&str]) -> ServerProc {
        ServerProc::start_cmd(tessera(), url, log, extra)
    }

    /// Starts `tessera server` whose open-file limit (soft and hard) is `nofile`.
    #[allow(dead_code)]
    pub fn start_with_fd_limit(db: &Path, nofile: u64, extra: &[&str]) -> ServerProc {
        use std::os::unix::process::CommandExt;
        let mut cmd = tessera();
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    nofile,
                    nofile,
                )
                .map_err(std::io::Error::from)
            });
        }
        let log = db.with_extension("server.log");
        ServerProc::start_cmd(cmd, &format!("sqlite://{}", db.display()), &log, extra)
    }

    fn start_cmd(mut cmd: Command, url: &str, log: &Path, extra: &[&str]) -> ServerProc {
        let log = log.to_path_buf();
        let db = PathBuf::from(url);
        let mut child = cmd
            .args(["server", "--listen", "127.0.0.1:0", "--db", url])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting tessera server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_else(|| {
            panic!(
                "the server printed nothing; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let url = first
            .strip_prefix("Tessera server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        ServerProc {
            child,
            url,
            db: db.to_path_buf(),
            log,
        }
    }

    /// Runs `tessera ARGS` against this server to completion (a minute at most).
    pub fn cli(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let mut cmd = tessera();
        cmd.args(args).env("TESSERA_SERVER", &self.url);
        output(cmd, Duration::from_secs(60))
    }

    /// Submits the seed job (`ParallelSleepWorkflow`, `count` sleeps of `seconds`, named
    /// parallel-sleep-workflow) with `tessera submit`; returns its id.
    pub fn submit_seed(&self, count: u32, seconds: f64) -> String {
        let input = format!(r#"{{"count":{count},"seconds":{seconds}}}"#);
        let (status, out, err) = self.cli(&[
            "submit",
            "ParallelSleepWorkflow",
            "--name",
            "parallel-sleep-workflow",
            "--input",
            &input,
        ]);
        assert!(status.success(), "{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("Submitted job: "))
            .unwrap_or_else(|| panic!("no job id in {out:?}"))
            .to_string()
    }

    /// `tessera parallel -n N -- tessera runner COMPONENT` against this server.
    pub fn parallel_runners(&self, n: u32, component: &Path) -> Command {
        let mut cmd = tessera();
        cmd.args([
            "parallel",
            "-n",
            &n.to_string(),
            "--",
            env!("CARGO_BIN_EXE_tessera"),
            "runner",
        ])
        .arg(component)
        .env("TESSERA_SERVER", &self.url);
        cmd
    }

    /// A client of this server.
    pub fn client(&self) -> Client {
        Client::new(self.url.clone(), None)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The databases every store test runs on: a SQLite file in `dir`, and a fresh PostgreSQL
/// database when `TESSERA_TEST_POSTGRES` names a server (CI always does).
pub async fn databases(dir: &Path) -> Vec<String> {
    let mut dbs = vec![format!("sqlite://{}", dir.join("t.db").display())];
    if let Some(url) = tessera_server::testing::postgres::fresh_database().await {
        dbs.push(url);
    }
    dbs
}

/// Sends a signal to a process we started.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {sig} {pid} failed");
}

/// A `tessera runner` command against `server` for `components`.
pub fn runner(server: &ServerProc, components: &[&Path]) -> Command {
    let mut cmd = tessera();
    cmd.arg("runner")
        .args(components)
        .env("TESSERA_SERVER", &server.url);
    cmd
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a job to finish and returns it.
pub async fn finished(client: &Client, id: &str, limit: Duration) -> Job {
    let start = Instant::now();
    loop {
        let job = client.job(id).await.unwrap();
        if job.state.is_finished() {
            return job;
        }
        assert!(
            start.elapsed() < limit,
            "job {id} still {} after {limit:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a job completed.
pub fn assert_completed(job: &Job) {
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
}

/// Runs a command to completion with a time limit, returning (status, stdout, stderr).
pub fn output(mut cmd: Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} ran longer than {limit:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Makes a key of `role` (of `tenant`, if named) through the operator's client `op`: its id and
/// its secret.
pub async fn new_key(
    op: &Client,
    role: tessera_api::Role,
    tenant: Option<&str>,
) -> (String, String) {
    let created = op
        .create_key(&tessera_api::NewKey {
            role,
            tenant: tenant.map(str::to_string),
            name: None,
        })
        .await
        .unwrap();
    assert!(created.secret.starts_with("tsk_"), "{}", created.secret);
    (created.key.id, created.secret)
}

/// A job named `name` whose root task is `task` (v0.0) with `input`: no retries, the default
/// cluster.
#[allow(dead_code)]
pub fn job_of(name: &str, task: &str, input: serde_json::Value) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        root: RootTask {
            identifier: TaskIdentifier::parse(task, "v0.0").unwrap(),
            input,
            max_retries: 0,
            display: None,
        },
        cluster: None,
    }
}
