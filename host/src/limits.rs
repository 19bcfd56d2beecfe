//! Per-attempt sandbox limits and the memory limiter that enforces the memory one.

use std::time::Duration;

/// Limits that apply to every task attempt; each has a default suited to a shared host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory one attempt may use, in bytes (all its memories together).
    pub memory_bytes: usize,
    /// Wall-clock time one attempt may take, sleeping included.
    pub deadline: Duration,
    /// CPU a guest may use before it must yield its thread to other tasks, in epoch ticks.
    pub cpu_slice_ticks: u64,
    /// Bytes of log text (messages, fields, stdout, stderr) one attempt may write before the
    /// rest is dropped behind a truncation marker.
    pub log_bytes: usize,
    /// Subtasks one attempt may submit.
    pub subtasks: usize,
    /// Size of a task's JSON input, in bytes (a subtask's too).
    pub input_bytes: usize,
    /// Bytes of subtasks, cache writes and output one attempt may hand back in all, so that
    /// its report fits in what the server accepts (runners derive it from the server's body
    /// limit).
    pub report_bytes: usize,
    /// Largest output or job-cache value, in bytes (runners lower it to the server's).
    pub value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(30 * 60),
            cpu_slice_ticks: 1,
            log_bytes: 1 << 20,
            subtasks: 100_000,
            input_bytes: 1 << 20,
            report_bytes: 16 << 20,
            value_bytes: tessera_api::limits::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

pub(crate) use tessera_api::limits::human_bytes;

/// Renders a duration for people: `30 s`, `1.5 s`, `250 ms`.
pub fn human_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Enforces [`Limits::memory_bytes`] on a store — over all its memories together, so that a
/// component with several memories gets no more than one with a single memory — and remembers
/// whether a guest hit it.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Bytes of linear memory the store's memories hold together.
    total: usize,
    /// The total a refused growth asked for, if any was refused.
    pub(crate) refused: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            total: 0,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Every memory's creation (from 0) and growth passes here; memories never shrink.
        let total = self.total.saturating_add(desired.saturating_sub(current));
        let allowed = total <= self.limit && maximum.is_none_or(|max| desired <= max);
        if allowed {
            self.total = total;
        } else {
            self.refused = Some(total);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real guest.
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humans_read_durations() {
        assert_eq!(human_duration(Duration::from_secs(30)), "30 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn limiter_refuses_growth_past_the_limit_and_remembers() {
        use wasmtime::ResourceLimiter;
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(l.refused.is_none());
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(l.refused, Some(2 << 20));
    }

    #[test]
    fn the_limit_counts_every_memory_of_the_attempt_together() {
        use wasmtime::ResourceLimiter;
        // Two 60 MiB memories under a 64 MiB limit: the second is refused.
        let mut l = MemoryLimiter::new(64 << 20);
        assert!(l.memory_growing(0, 60 << 20, None).unwrap());
        assert!(!l.memory_growing(0, 60 << 20, None).unwrap());
        assert_eq!(l.refused, Some(120 << 20));
        // Small ones still fit beside the first.
        assert!(l.memory_growing(0, 2 << 20, None).unwrap());
        assert!(l.memory_growing(2 << 20, 4 << 20, None).unwrap());
        assert!(!l.memory_growing(4 << 20, 5 << 20, None).unwrap());
    }
}
