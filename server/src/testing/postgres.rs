//! A fresh PostgreSQL database per test, on the server `TESSERA_TEST_POSTGRES` names.

/// The admin URL of the test server, if one is configured.
///
/// CI (which sets `CI`) must have one; elsewhere a missing one skips the PostgreSQL runs with a
/// message (start one with `eval "$(scripts/postgres-for-tests.sh)"`).
pub fn server_url() -> Option<String> {
    match std::env::var("TESSERA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TESSERA_TEST_POSTGRES is not set: CI must run the PostgreSQL tests (scripts/postgres-for-tests.sh)"
            );
            eprintln!(
                "SKIPPED a PostgreSQL run: set TESSERA_TEST_POSTGRES (eval \"$(scripts/postgres-for-tests.sh)\")"
            );
            None
        }
    }
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> Option<String> {
    let admin = server_url()?;
    let name = format!("tessera_test_{}", std::process::id()) + &format!("_{}", next());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("could not connect to TESSERA_TEST_POSTGRES={admin}: {e}"));
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("could not create database {name}: {e}"));
    drop(client);
    let _ = task.await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

fn next() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64 % 1000)
            .unwrap_or(0))
}
