//! Guests that misbehave, for the host's sandbox tests, plus a few well-behaved ones.
//!
//! Each task type tries one thing a sandboxed task must not be able to do (or must not be
//! able to do to anyone else). Where the sandbox holds, the attempt fails with a clear reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_guest::{Context, Subtask, Task, TaskError, export_tasks, info};

/// Does nothing: the cost of an attempt itself.
#[derive(Serialize, Deserialize)]
pub struct Noop {}

impl Task for Noop {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Spins forever without calling the host.
#[derive(Serialize, Deserialize)]
pub struct InfiniteLoop {}

impl Task for InfiniteLoop {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

/// Allocates until something stops it.
#[derive(Serialize, Deserialize)]
pub struct MemoryBomb {}

impl Task for MemoryBomb {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 8 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

#[inline(never)]
fn recurse(depth: u64, acc: &mut [u64; 4]) -> u64 {
    let mut local = [depth; 4];
    std::hint::black_box(&mut local);
    acc[0] = acc[0].wrapping_add(local[1]);
    if depth == 0 {
        return acc[0];
    }
    recurse(depth - 1, acc).wrapping_add(local[2])
}

/// Recurses without end.
#[derive(Serialize, Deserialize)]
pub struct StackOverflow {}

impl Task for StackOverflow {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        let mut acc = [0u64; 4];
        let n = recurse(std::hint::black_box(u64::MAX), &mut acc);
        Err(TaskError::new(format!("recursion returned {n}")))
    }
}

/// Panics with a message.
#[derive(Serialize, Deserialize)]
pub struct Panic {
    /// The panic message.
    pub message: String,
}

impl Task for Panic {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        panic!("{}", self.message);
    }
}

/// Executes `unreachable`.
#[derive(Serialize, Deserialize)]
pub struct Trap {}

impl Task for Trap {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        std::process::abort();
    }
}

/// Tries to read a file of the host.
#[derive(Serialize, Deserialize)]
pub struct ReadFile {
    /// The path to read.
    pub path: String,
}

impl Task for ReadFile {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                info!(ctx, bytes = bytes.len(), "read the host's file");
                Ok(())
            }
            Err(e) => {
                Err(TaskError::new(format!("cannot read {}: {e}", self.path)).with_code("denied"))
            }
        }
    }
}

/// Tries to read an environment variable of the host.
#[derive(Serialize, Deserialize)]
pub struct ReadEnv {
    /// The variable's name.
    pub name: String,
}

impl Task for ReadEnv {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let all = std::env::vars().count();
        match std::env::var(&self.name) {
            Ok(value) => {
                info!(ctx, value = value, "read the host's environment");
                Ok(())
            }
            Err(e) => Err(TaskError::new(format!(
                "cannot read {}: {e} ({all} variables visible)",
                self.name
            ))
            .with_code("denied")),
        }
    }
}

/// Tries to open a TCP connection.
#[derive(Serialize, Deserialize)]
pub struct OpenSocket {
    /// `host:port` to connect to.
    pub address: String,
}

impl Task for OpenSocket {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        match std::net::TcpStream::connect(&self.address) {
            Ok(_) => {
                info!(ctx, "connected");
                Ok(())
            }
            Err(e) => Err(
                TaskError::new(format!("cannot connect to {}: {e}", self.address))
                    .with_code("denied"),
            ),
        }
    }
}

/// Writes `lines` log lines through the host and to stdout, then succeeds.
#[derive(Serialize, Deserialize)]
pub struct LogFlood {
    /// How many lines of each kind.
    pub lines: u32,
}

impl Task for LogFlood {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        for i in 0..self.lines {
            info!(
                ctx,
                i = i,
                "flooding the log with line number {i} and some padding text"
            );
            println!("stdout flood line {i}");
        }
        Ok(())
    }
}

/// Submits subtasks in batches until the host refuses.
#[derive(Serialize, Deserialize)]
pub struct SubtaskBomb {
    /// Subtasks per submission.
    pub batch: u32,
}

impl Task for SubtaskBomb {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        loop {
            ctx.submit_subtasks((0..self.batch).map(|_| Subtask::new(&Noop {})))?;
        }
    }
}

/// Prints to stdout and stderr, reports progress and returns an error with a code.
#[derive(Serialize, Deserialize)]
pub struct Chatty {
    /// Whether to fail at the end.
    pub fail: bool,
}

impl Task for Chatty {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        println!("hello from stdout");
        eprintln!("hello from stderr");
        print!("no newline at the end");
        ctx.progress("items").add_total(10).done(4);
        ctx.set_display("Chatty!");
        info!(
            ctx,
            job = ctx.job_id(),
            task = ctx.task_id(),
            attempt = ctx.attempt(),
            "who am i"
        );
        if self.fail {
            return Err(TaskError::new("the chatty task gave up").with_code("gave-up"));
        }
        Ok(())
    }
}

/// Spins on the CPU for `millis` (wall clock), then succeeds.
#[derive(Serialize, Deserialize)]
pub struct Busy {
    /// How long to spin.
    pub millis: u64,
}

impl Task for Busy {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(self.millis) {
            std::hint::black_box(0);
        }
        Ok(())
    }
}

/// Allocates and touches `mib` MiB, then succeeds: fails under a smaller memory limit.
#[derive(Serialize, Deserialize)]
pub struct Allocate {
    /// How much to allocate.
    pub mib: u32,
}

impl Task for Allocate {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let block = vec![7u8; (self.mib as usize) << 20];
        let sum: u64 = block.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        info!(ctx, mib = self.mib, touched = sum, "allocated");
        Ok(())
    }
}

/// What one attempt wrote must be gone for the next in the same pooled slot: `write` leaves a
/// marker over a value from the data segment, over a zero-initialized buffer and over the heap;
/// otherwise the task fails if it finds either static changed.
#[derive(Serialize, Deserialize)]
pub struct Residue {
    /// Leave the markers (true) or look for them (false).
    pub write: bool,
}

const AS_COMPILED: [u8; 16] = *b"as-compiled-data";
static mut IMAGE: [u8; 16] = AS_COMPILED;
static mut ZEROED: [u8; 3 * 4096] = [0; 3 * 4096];

impl Task for Residue {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        // SAFETY: an attempt runs on one thread and nothing else names these statics.
        let (image, zeroed) = unsafe {
            (
                &mut *std::ptr::addr_of_mut!(IMAGE),
                &mut *std::ptr::addr_of_mut!(ZEROED),
            )
        };
        if self.write {
            image.copy_from_slice(b"left-by-previous");
            zeroed.fill(0xA5);
            let heap = std::hint::black_box(vec![0xA5u8; 256 << 10]);
            info!(ctx, heap = heap.len(), "left markers");
            return Ok(());
        }
        if *image != AS_COMPILED {
            return Err(TaskError::new(format!(
                "the data segment holds {:?}",
                String::from_utf8_lossy(image)
            )));
        }
        if let Some(at) = zeroed.iter().position(|&b| b != 0) {
            return Err(TaskError::new(format!(
                "a zero-initialized buffer holds {:#x} at {at}",
                zeroed[at]
            )));
        }
        Ok(())
    }
}

/// A newer minor version of a task, to check version resolution.
#[derive(Serialize, Deserialize)]
pub struct Versioned {}

impl Task for Versioned {
    fn identifier() -> tessera_guest::TaskIdentifier {
        tessera_guest::TaskIdentifier::new("Versioned", "v1.3")
    }

    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        info!(ctx, "versioned ran");
        Ok(())
    }
}

/// Takes any JSON and succeeds.
#[derive(Serialize, Deserialize)]
pub struct Echo {
    /// Anything.
    pub value: serde_json::Value,
}

impl Task for Echo {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Sends the host output the server would refuse, one way per `how`.
#[derive(Serialize, Deserialize)]
pub struct Misuse {
    /// `huge-error`, `duplicate-deps`, `deep-input`, `big-inputs`, `progress-overflow`,
    /// `control-text`, `exit` (with status `size`), `reserve-then-panic`, `escaped-logs`
    /// (`size` lines of 1,000 control bytes) or `float-inputs` (a subtask input sent as just
    /// under `size` MiB of `1e15`s, each 18 bytes as stored).
    pub how: String,
    /// A size in MiB (`huge-error`, `big-inputs`) or a depth (`deep-input`).
    #[serde(default)]
    pub size: u32,
}

impl Task for Misuse {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let mib = (self.size as usize) << 20;
        match self.how.as_str() {
            "huge-error" => Err(TaskError::new("e".repeat(mib))),
            "duplicate-deps" => {
                ctx.submit_subtasks([
                    Subtask::new(&Noop {}),
                    Subtask::new(&Noop {}).depends_on([0, 0]),
                ])?;
                Ok(())
            }
            "deep-input" => {
                let value =
                    (0..self.size).fold(serde_json::json!(1), |v, _| serde_json::json!([v]));
                ctx.submit_subtask(&Echo { value })?;
                Ok(())
            }
            "big-inputs" => {
                let value = serde_json::Value::String("x".repeat(mib));
                ctx.submit_subtasks([
                    Subtask::new(&Echo {
                        value: value.clone(),
                    }),
                    Subtask::new(&Echo { value }),
                ])?;
                Ok(())
            }
            "progress-overflow" => {
                ctx.progress("overflow").add_total(u64::MAX).done(u64::MAX);
                ctx.progress("overflow").add_total(u64::MAX).done(u64::MAX);
                Ok(())
            }
            "control-text" => {
                info!(
                    ctx,
                    field = "v\x1b[31m",
                    "log \x1b]0;owned\x07\r\n12:00:00.000 INFO forged"
                );
                println!("stdout \x1b[2J cleared");
                ctx.set_display("spoof\x1b[2J\x1b]0;title\x07\r");
                Err(
                    TaskError::new("bad\x1b[31m red \x1b]52;c;Y2xpcA==\x07 \x00 end")
                        .with_code("\x1b[1mcode"),
                )
            }
            "exit" => std::process::exit(self.size as i32),
            // Lines of control bytes: each raw byte becomes six once JSON-escaped (`\u0001`).
            "escaped-logs" => {
                let line = "\x01".repeat(1000);
                for i in 0..self.size {
                    info!(ctx, n = i, "{line}");
                }
                Ok(())
            }
            "float-inputs" => {
                // Raw text through the WIT import, as a guest in any language may send it:
                // `1e15,` is 5 bytes sent, and `1000000000000000.0,` 19 as the server stores it.
                let count = mib / 100 * 95 / 5;
                let mut numbers = String::with_capacity(count * 5 + 2);
                for i in 0..count {
                    numbers.push_str(if i == 0 { "1e15" } else { ",1e15" });
                }
                use tessera_guest::bindings::tessera::task::{host, types};
                let subtask = types::Subtask {
                    identifier: types::TaskIdentifier {
                        name: "Echo".into(),
                        version: "v0.0".into(),
                    },
                    input: format!("{{\"value\":[{numbers}]}}"),
                    display: None,
                    depends_on: vec![],
                    depends_on_all: false,
                    max_retries: 0,
                    cluster: None,
                };
                host::submit_subtasks(&[subtask])
                    .map_err(|e| TaskError::new(format!("submit-subtasks refused: {e:?}")))?;
                Ok(())
            }
            "reserve-then-panic" => {
                let mut hoard: Vec<u8> = Vec::new();
                // Refused by the memory limit, and handled: not the cause of what follows.
                let refused = hoard.try_reserve(1 << 30).is_err();
                panic!("gave up for another reason (the reservation was refused: {refused})");
            }
            other => Err(TaskError::new(format!("unknown misuse {other:?}"))),
        }
    }
}

/// Honest work with a large result: submits `count` subtasks of `kib` KiB input each.
#[derive(Serialize, Deserialize)]
pub struct WideFanOut {
    /// How many subtasks.
    pub count: u32,
    /// Input size of each, in KiB.
    pub kib: u32,
}

impl Task for WideFanOut {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let value = serde_json::Value::String("y".repeat((self.kib as usize) << 10));
        ctx.submit_subtasks((0..self.count).map(|_| {
            Subtask::new(&Echo {
                value: value.clone(),
            })
        }))?;
        Ok(())
    }
}

/// Leaves submitted one by one, then a final step after all of them (by handle), then a call
/// mixing an index within the call and a handle; with `bad`, a handle not yet issued.
#[derive(Serialize, Deserialize)]
pub struct AfterHandles {
    /// Also try a handle from the future (refused).
    pub bad: bool,
}

impl Task for AfterHandles {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let a = ctx.submit_subtask(&Noop {})?;
        let b = ctx.submit_subtask(&Noop {})?;
        ctx.submit_subtasks([Subtask::new(&Noop {}).after([a, b]).display("final")])?;
        ctx.submit_subtasks([
            Subtask::new(&Noop {}),
            Subtask::new(&Noop {}).depends_on([0]).after([b]),
        ])?;
        if self.bad {
            let future = tessera_guest::SubtaskHandle { index: 99 };
            ctx.submit_subtasks([Subtask::new(&Noop {}).after([future])])?;
        }
        Ok(())
    }
}

/// A Rust root whose subtasks a Python component serves: `count` × `PyLeaf`, then a
/// `DataProbe` reading their outputs, whose output the root takes as its own.
#[derive(Serialize, Deserialize)]
pub struct RustToPython {
    /// How many Python subtasks.
    pub count: u32,
}

impl Task for RustToPython {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        ctx.submit_subtasks((0..self.count).map(|index| Subtask::new(&PyLeaf { index })))?;
        // A Rust step after every Python leaf reads their outputs; its output is the root's.
        let probe = DataProbe {
            how: "read".into(),
            size: 0,
        };
        let last = ctx.submit_subtasks([Subtask::new(&probe).after_all()])?;
        ctx.set_output_from(last[0])?;
        Ok(())
    }
}

/// The input of the Python task type `PyLeaf` (cli/tests/python.rs): not exported here, a
/// Python component serves it.
#[derive(Serialize, Deserialize)]
pub struct PyLeaf {
    /// Which leaf.
    pub index: u32,
}

impl Task for PyLeaf {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        Err(TaskError::new("PyLeaf is served by a Python component"))
    }
}

/// Exercises outputs and the job cache one way per `how`, and returns what it saw as its
/// output (a JSON object), so that a test can check every answer of the host.
#[derive(Serialize, Deserialize)]
pub struct DataProbe {
    /// `cache`, `read`, `limits`, `wide-keys`, `big-output`, `fail-after-write`, `output-from`
    /// or `write-then-sleep` (`size` seconds, on the first attempt only).
    pub how: String,
    /// KiB of output (`big-output`) or seconds (`write-then-sleep`).
    #[serde(default)]
    pub size: u32,
}

fn code(result: Result<impl std::fmt::Debug, tessera_guest::DataError>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => e.code().to_string(),
    }
}

impl Task for DataProbe {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let cache = ctx.cache();
        let mut seen = serde_json::Map::new();
        let mut note = |k: &str, v: serde_json::Value| {
            seen.insert(k.to_string(), v);
        };
        match self.how.as_str() {
            "cache" => {
                cache.put("a/1", &serde_json::json!({"v": 1}))?;
                cache.put_bytes("a/2", &[0, 255])?;
                cache.put("b/1", &true)?;
                cache.delete("committed")?;
                note(
                    "a1",
                    serde_json::json!(cache.get::<serde_json::Value>("a/1")?),
                );
                note("a2", serde_json::json!(cache.get_bytes("a/2")?));
                note(
                    "committed",
                    serde_json::json!(cache.get_bytes("committed")?),
                );
                note("other", serde_json::json!(cache.get::<u32>("other")?));
                note("missing", serde_json::json!(cache.get_bytes("missing")?));
                note("list_a", serde_json::json!(cache.list("a/")?));
                note("list_all", serde_json::json!(cache.list("")?));
            }
            "read" => {
                let deps = ctx.dependencies()?;
                note(
                    "deps",
                    serde_json::json!(deps.iter().map(|d| d.index).collect::<Vec<_>>()),
                );
                let mut outputs = Vec::new();
                for d in &deps {
                    outputs.push(serde_json::json!(ctx.output_bytes_of(*d)?));
                }
                note("outputs", serde_json::json!(outputs));
                let stranger = tessera_guest::SubtaskHandle { index: 77 };
                note(
                    "stranger",
                    serde_json::json!(code(ctx.output_bytes_of(stranger))),
                );
                if let Some(first) = deps.first() {
                    note(
                        "typed",
                        serde_json::json!(code(ctx.output_of::<u64>(*first))),
                    );
                }
            }
            "limits" => {
                let big = vec![7u8; 1 << 20 | 1];
                note(
                    "too_large",
                    serde_json::json!(code(cache.put_bytes("big", &big))),
                );
                note("empty_key", serde_json::json!(code(cache.put("", &1))));
                note(
                    "control_key",
                    serde_json::json!(code(cache.put("a\u{1b}b", &1))),
                );
                let long = "k".repeat(513);
                note("long_key", serde_json::json!(code(cache.get_bytes(&long))));
                let mut writes = 0;
                let last = loop {
                    match cache.put(&format!("n/{writes}"), &writes) {
                        Ok(()) => writes += 1,
                        Err(e) => break e.code(),
                    }
                };
                note("writes", serde_json::json!(writes));
                note("after_last", serde_json::json!(last));
            }
            "wide-keys" => {
                // Keys and prefixes at their limits in characters, of characters that take 4
                // and 3 bytes (12 and 9 once percent-encoded in a URL).
                cache.put(&"😀".repeat(512), &1)?;
                cache.put(&"語".repeat(512), &2)?;
                let listed = |prefix: &str| code(cache.list(prefix).map(|keys| keys.len()));
                note("emoji", serde_json::json!(listed(&"😀".repeat(200))));
                note("cjk", serde_json::json!(listed(&"語".repeat(400))));
                note("whole_key", serde_json::json!(listed(&"😀".repeat(512))));
                note("control", serde_json::json!(listed("a\u{1}")));
                note("too_long", serde_json::json!(listed(&"k".repeat(513))));
            }
            "big-output" => {
                ctx.set_output_bytes(vec![b'x'; (self.size as usize) << 10]);
                return Ok(());
            }
            "fail-after-write" => {
                cache.put("doomed", &ctx.attempt())?;
                ctx.set_output(&"doomed")?;
                return Err(TaskError::new(format!(
                    "failing attempt {} on purpose",
                    ctx.attempt()
                )));
            }
            "write-then-sleep" => {
                cache.put("sleeper", &ctx.attempt())?;
                ctx.set_output(&"slept")?;
                if ctx.attempt() == 1 {
                    ctx.sleep(Duration::from_secs(self.size as u64));
                }
                return Ok(());
            }
            "output-from" => {
                let handles =
                    ctx.submit_subtasks([Subtask::new(&Noop {}), Subtask::new(&Noop {})])?;
                let refused = ctx.set_output_from(tessera_guest::SubtaskHandle { index: 9 });
                ctx.set_output_from(handles[1])?;
                ctx.set_output(&format!("{refused:?}"))?;
                return Ok(());
            }
            other => return Err(TaskError::new(format!("unknown probe {other:?}"))),
        }
        ctx.set_output(&seen)?;
        Ok(())
    }
}

/// The input of `SleepTask`, which the parallel-sleep component built against
/// `tessera:task@0.1.0` serves (host/tests/fixtures): not exported here.
#[derive(Serialize, Deserialize)]
pub struct SleepTask {
    pub index: u32,
    pub seconds: f64,
}

impl Task for SleepTask {
    fn execute(&self, _ctx: &mut Context) -> Result<(), TaskError> {
        Err(TaskError::new(
            "SleepTask is served by the 0.1.0 parallel-sleep component",
        ))
    }
}

/// A 0.2.0 root whose job mixes contracts: `count` × `SleepTask` (a 0.1.0 component runs
/// them), then a `DataProbe` reading their outputs after all of them, whose output the root
/// takes as its own.
#[derive(Serialize, Deserialize)]
pub struct MixedRoot {
    pub count: u32,
}

impl Task for MixedRoot {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        ctx.submit_subtasks((0..self.count).map(|index| {
            Subtask::new(&SleepTask {
                index,
                seconds: 0.05,
            })
        }))?;
        let probe = DataProbe {
            how: "read".into(),
            size: 0,
        };
        let last = ctx.submit_subtasks([Subtask::new(&probe).after_all()])?;
        ctx.set_output_from(last[0])?;
        Ok(())
    }
}

export_tasks!(
    MixedRoot,
    DataProbe,
    RustToPython,
    AfterHandles,
    Noop,
    InfiniteLoop,
    MemoryBomb,
    StackOverflow,
    Panic,
    Trap,
    ReadFile,
    ReadEnv,
    OpenSocket,
    LogFlood,
    SubtaskBomb,
    Chatty,
    Busy,
    Allocate,
    Versioned,
    Echo,
    Misuse,
    WideFanOut,
    Residue,
);
