//! Loading components: the disk cache, concurrency across many attempts, and clear refusals.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Collect, guest};
use tessera_host::{
    AttemptSpec, CacheOutcome, Host, HostConfig, Limits, LoadError, TaskIdentifier,
};

fn host_with_cache(dir: &std::path::Path) -> Host {
    Host::new(HostConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_instances: 64,
        ..HostConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_second_host_loads_from_the_cache_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("parallel-sleep");
    let first = host_with_cache(dir.path());
    let a = first.load(&wasm).await.unwrap();
    assert_eq!(a.cache_outcome(), CacheOutcome::Compiled);
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(a.digest()));

    let second = host_with_cache(dir.path());
    let b = second.load(&wasm).await.unwrap();
    assert_eq!(b.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(a.identifiers(), b.identifiers());
    // And the cached code runs.
    let outcome = second
        .run(
            &b,
            AttemptSpec {
                job_id: "j".into(),
                task_id: "t".into(),
                attempt: 1,
                identifier: TaskIdentifier::parse("SleepTask", "v0.0").unwrap(),
                input: json!({"index": 1, "seconds": 0.01}).to_string(),
            },
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    assert!(outcome.computed().is_some(), "{outcome:?}");
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("parallel-sleep");
    let first = host_with_cache(dir.path()).load(&wasm).await.unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let again = host_with_cache(dir.path()).load(&wasm).await.unwrap();
    assert_eq!(again.cache_outcome(), CacheOutcome::Compiled);
    assert_eq!(first.identifiers(), again.identifiers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sleeping_tasks_all_start_before_any_finishes() {
    let host = std::sync::Arc::new(support::host_for(1100));
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    let logs = Collect::default();
    let mut handles = Vec::new();
    for index in 0..1000 {
        let (host, component, sink) = (host.clone(), component.clone(), logs.sink());
        handles.push(tokio::spawn(async move {
            let spec = AttemptSpec {
                job_id: "j".into(),
                task_id: format!("t{index}"),
                attempt: 1,
                identifier: TaskIdentifier::parse("SleepTask", "v0.0").unwrap(),
                input: json!({"index": index, "seconds": 2.0}).to_string(),
            };
            host.run(&component, spec, &Limits::default(), sink).await
        }));
    }
    for h in handles {
        let outcome = h.await.unwrap();
        assert!(outcome.computed().is_some(), "{outcome:?}");
    }
    let lines = logs.lines();
    let starts: Vec<u64> = lines
        .iter()
        .filter(|l| l.message == "Starting sleep task")
        .map(|l| l.time_unix_nano)
        .collect();
    let ends: Vec<u64> = lines
        .iter()
        .filter(|l| l.message == "Finished sleep task")
        .map(|l| l.time_unix_nano)
        .collect();
    assert_eq!((starts.len(), ends.len()), (1000, 1000));
    let last_start = *starts.iter().max().unwrap();
    let first_end = *ends.iter().min().unwrap();
    assert!(
        last_start < first_end,
        "the last task started {} ms after the first one finished",
        (last_start - first_end) / 1_000_000
    );
}

#[tokio::test]
async fn files_that_are_not_task_components_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_cache(dir.path());
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "text.wasm",
            b"hello, I am not wasm",
            "is not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "is a core WebAssembly module, not a component",
        ),
        (
            "empty.wasm",
            b"\0asm\x0d\0\x01\0",
            "does not export tessera:task/tasks@0.2.0 or @0.1.0",
        ),
        (
            "broken.wasm",
            b"\0asm\x0d\0\x01\0\x07\x05garbage",
            "does not validate",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = host.load(&path).await.expect_err(name);
        let text = err.to_string();
        assert!(matches!(err, LoadError::Invalid { .. }), "{name}: {text}");
        assert!(text.contains(expect), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
    }
    let missing = host
        .load(dir.path().join("missing.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(missing, LoadError::Read { .. }), "{missing}");
    assert!(missing.to_string().contains("missing.wasm"));
    // The host still loads real components afterwards.
    tokio::time::timeout(Duration::from_secs(120), host.load(guest("parallel-sleep")))
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn five_hosts_starting_together_compile_once() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("parallel-sleep");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(5));
    let outcomes: Vec<CacheOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let (barrier, wasm, dir) = (barrier.clone(), wasm.clone(), dir.path());
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let host = Host::new(HostConfig {
                        cache_dir: Some(dir.to_path_buf()),
                        max_instances: 10,
                        ..HostConfig::default()
                    })
                    .unwrap();
                    barrier.wait();
                    rt.block_on(host.load(&wasm)).unwrap().cache_outcome()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let compiled = outcomes
        .iter()
        .filter(|o| **o == CacheOutcome::Compiled)
        .count();
    assert_eq!(compiled, 1, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == CacheOutcome::Hit).count(),
        4
    );
}

#[tokio::test]
async fn the_cache_keeps_to_its_bound_evicting_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let wasms = [
        guest("parallel-sleep"),
        guest("fan-out"),
        guest("hostile-guest"),
    ];
    let artifacts = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        names.sort();
        names
    };
    let sizes = |names: &[String]| -> u64 {
        names
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
            .sum()
    };
    // Learn the three artifacts' sizes with an unbounded cache.
    let host = host_with_cache(dir.path());
    let mut digests = Vec::new();
    for w in &wasms {
        digests.push(host.load(w).await.unwrap().digest().to_string());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = artifacts();
    assert_eq!(all.len(), 3);
    let total = sizes(&all);
    std::fs::remove_dir_all(dir.path()).unwrap();

    // Room for all but one byte of the three: loading the third evicts the least recently used.
    let bounded = Host::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        cache_max_bytes: total - 1,
        max_instances: 8,
        ..HostConfig::default()
    })
    .unwrap();
    bounded.load(&wasms[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    bounded.load(&wasms[1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Used again: now the second is the least recently used.
    let again = bounded.load(&wasms[0]).await.unwrap();
    assert_eq!(again.cache_outcome(), CacheOutcome::Hit);
    tokio::time::sleep(Duration::from_millis(20)).await;
    bounded.load(&wasms[2]).await.unwrap();
    let kept = artifacts();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|n| n.starts_with(&digests[0])), "{kept:?}");
    assert!(kept.iter().any(|n| n.starts_with(&digests[2])), "{kept:?}");
    assert!(sizes(&kept) < total);
}

#[tokio::test]
async fn a_component_whose_task_types_never_return_is_refused_quickly() {
    let host = host_with_cache(&tessera_testkit::shared_cache());
    let started = std::time::Instant::now();
    let err = host
        .load_with(
            guest("slow-load-guest"),
            &Limits {
                deadline: Duration::from_secs(1800),
                ..Limits::default()
            },
        )
        .await
        .map(|_| ())
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("did not list its task types within 5 s"),
        "{err}"
    );
    // The load deadline, not the attempt deadline (30 min here), bounded it.
    assert!(took < Duration::from_secs(120), "took {took:?}");
}
