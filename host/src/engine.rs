//! The process-wide wasmtime engine: configuration, instance allocation and the epoch ticker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::default_cache_dir;

/// How instances get their memories, tables and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// A pre-reserved pool (fast), falling back to on demand where it cannot be reserved.
    Auto,
    /// A pre-reserved pool; fail if it cannot be reserved.
    Pooling,
    /// Allocate per instance (slower, no up-front reservation).
    OnDemand,
}

/// Settings of the process-wide engine.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How many attempts may be instantiated at once (the pool's size).
    pub max_instances: u32,
    /// Pooling or on-demand allocation.
    pub allocation: Allocation,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of compiled code the cache keeps (least recently used evicted first).
    pub cache_max_bytes: u64,
    /// How often the epoch advances: the granularity of CPU fairness.
    pub epoch_tick: Duration,
    /// Deepest guest call stack, in bytes.
    pub max_wasm_stack: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_instances: 1000,
            allocation: Allocation::Auto,
            cache_dir: default_cache_dir(),
            cache_max_bytes: crate::cache::DEFAULT_CACHE_BYTES,
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 * 1024,
        }
    }
}

/// Which allocation the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationInUse {
    /// The pooling allocator, sized for this many instances.
    Pooling(u32),
    /// On-demand allocation.
    OnDemand,
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the configuration.
    #[error("could not create the WebAssembly engine: {0:#}")]
    Config(wasmtime::Error),
    /// The pool could not be reserved and pooling was required.
    #[error(
        "could not reserve the instance pool for {instances} instances: {source:#}; \
         lower --max-instances, raise the address-space limit (ulimit -v), or use on-demand allocation"
    )]
    Pool {
        /// The pool size asked for.
        instances: u32,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// A setting is out of range.
    #[error("invalid host setting: {0}")]
    Invalid(String),
}

fn base_config(config: &HostConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true)
        // Every proposal Tessera's guests do not need is off: less code a guest can reach.
        // Several 2026 wasmtime advisories were in GC, exceptions, function references and
        // component-model async. Those, and threads, are not even compiled in (the `gc`,
        // `threads` and `component-model-async` cargo features are off in Cargo.toml); the
        // rest are refused here.
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .wasm_shared_everything_threads(false)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false)
        .wasm_relaxed_simd(false)
        .wasm_component_model_error_context(false)
        .wasm_component_model_gc(false)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(16));
    c
}

/// Bytes of a pooled memory or table a finished attempt may leave resident to be reset in place.
const KEEP_RESIDENT: usize = 64 << 10;

fn pooling(instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    // A Rust component has a main module plus a couple of small shim modules with tables;
    // most have one memory, a few (wasip1-adapted ones) two. A Python component
    // (componentize-py) instantiates 14 core modules around one memory: core-instance slots
    // cost no reserved memory, so there are 16 per component instance.
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_add(instances / 4).max(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(16)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_unused_warm_slots(instances.min(100))
        // A finished attempt's memory and tables are reset for the next one. By default that
        // is an `madvise` of the whole initial memory (17 pages for a Rust guest) and of each
        // table: three system calls per attempt, each a process-wide TLB flush. With the
        // PAGEMAP_SCAN ioctl (Linux 6.7+; `Auto` leaves it off where missing) wasmtime finds
        // the pages the attempt wrote and resets just those in place, up to these budgets per
        // memory and table; only a guest that wrote more gets the `madvise`.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    pool
}

/// Builds the engine: pooling first where asked, on demand where the pool cannot be reserved.
pub(crate) fn build_engine(config: &HostConfig) -> Result<(Engine, AllocationInUse), EngineError> {
    if config.max_instances == 0 {
        return Err(EngineError::Invalid(
            "max_instances must be at least 1".into(),
        ));
    }
    if config.epoch_tick.is_zero() {
        return Err(EngineError::Invalid("epoch_tick must be positive".into()));
    }
    let on_demand = || {
        let mut c = base_config(config);
        c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Engine::new(&c)
            .map(|e| (e, AllocationInUse::OnDemand))
            .map_err(EngineError::Config)
    };
    if config.allocation == Allocation::OnDemand {
        return on_demand();
    }
    let mut c = base_config(config);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
        config.max_instances,
    )));
    match Engine::new(&c) {
        Ok(engine) => Ok((engine, AllocationInUse::Pooling(config.max_instances))),
        Err(source) if config.allocation == Allocation::Auto => {
            tracing::warn!(
                instances = config.max_instances,
                "instance pool could not be reserved ({source:#}); allocating on demand"
            );
            on_demand()
        }
        Err(source) => Err(EngineError::Pool {
            instances: config.max_instances,
            source,
        }),
    }
}

/// Advances the engine's epoch every tick until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tessera-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Refuses a concurrency whose instances would not fit under Linux's `vm.max_map_count`.
///
/// Measured (bench/README.md): the pool costs 2 mappings per slot up front and a live instance
/// about 4 more; a margin is kept for everything else the process maps.
pub fn check_map_count(concurrency: u32) -> Result<(), EngineError> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return Ok(());
    };
    let Ok(max) = text.trim().parse::<u64>() else {
        return Ok(());
    };
    let needed = 6 * u64::from(concurrency) + 2_000;
    if needed > max {
        return Err(EngineError::Invalid(format!(
            "--concurrency {concurrency} needs about {needed} memory mappings but vm.max_map_count \
             is {max}: lower --concurrency to at most {}, or raise the limit (sysctl -w \
             vm.max_map_count={})",
            (max.saturating_sub(2_000)) / 6,
            needed.next_power_of_two()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module: the header, then `sections` as they are.
    fn module(sections: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(sections);
        m
    }

    #[test]
    fn proposals_tessera_does_not_need_are_refused() {
        let engine = Engine::new(&base_config(&HostConfig::default())).unwrap();
        // An empty module compiles: the engine works.
        wasmtime::Module::new(&engine, module(&[])).unwrap();
        // A shared memory (threads): memory section, one memory, flags shared|max, 1..1 pages.
        let shared = wasmtime::Module::new(&engine, module(&[5, 4, 1, 3, 1, 1])).unwrap_err();
        assert!(format!("{shared:#}").contains("threads"), "{shared:#}");
        // A GC struct type: type section, one type, `struct` with no fields.
        let gc = wasmtime::Module::new(&engine, module(&[1, 3, 1, 0x5f, 0])).unwrap_err();
        assert!(format!("{gc:#}").to_lowercase().contains("gc"), "{gc:#}");
    }
}
