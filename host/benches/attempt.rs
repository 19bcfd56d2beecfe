//! Per-attempt cost of a no-op task (instantiate, execute, drop), pooling and on demand.
//!
//! `cargo bench -p tessera-host --bench attempt`; results in `bench/README.md`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_host::{
    Allocation, AttemptSpec, DiscardLogs, Host, HostConfig, Limits, TaskIdentifier,
};

fn noop_attempt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wasm = support::guest("hostile-guest");
    let spec = AttemptSpec {
        job_id: "bench".into(),
        task_id: "noop".into(),
        attempt: 1,
        identifier: TaskIdentifier::parse("Noop", "v0.0").unwrap(),
        input: "{}".into(),
    };
    let limits = Limits::default();
    let sink: Arc<dyn tessera_host::LogSink> = Arc::new(DiscardLogs);
    let mut group = c.benchmark_group("noop_attempt");
    for (name, allocation) in [
        ("pooling", Allocation::Pooling),
        ("on_demand", Allocation::OnDemand),
    ] {
        let host = Host::new(HostConfig {
            allocation,
            cache_dir: Some(support::shared_cache()),
            max_instances: 100,
            ..HostConfig::default()
        })
        .unwrap();
        let component = rt.block_on(host.load(&wasm)).unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let outcome = host
                    .run(&component, spec.clone(), &limits, sink.clone())
                    .await;
                assert!(outcome.computed().is_some());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, noop_attempt);
criterion_main!(benches);
