//! Logs: ingestion, filters and pages.

use super::*;

pub async fn logs_filter_paginate_and_refuse_unknown_tasks(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let j = s.submit(&job("logs", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let task = root[0].task_id.clone();
    let line = |i: u64, level: Level| LogLine {
        time_unix_nano: T0 + 1000 - i,
        level,
        message: format!("line {i}"),
        task_id: task.clone(),
        job_id: String::new(),
        runner_id: "r1".into(),
        attempt: 1,
        fields: serde_json::Map::from_iter([("i".to_string(), json!(i))]),
    };
    let lines: Vec<LogLine> = (0..10)
        .map(|i| {
            line(
                i,
                if i % 3 == 0 {
                    Level::Error
                } else {
                    Level::Info
                },
            )
        })
        .collect();
    assert_eq!(s.add_logs(lines).await.unwrap(), 10);
    let page = s
        .logs(
            &j.id,
            &LogQuery {
                limit: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.logs[0].message, "line 9",
        "time order, not arrival order"
    );
    assert_eq!(page.logs[0].job_id, j.id);
    assert_eq!(page.logs[0].fields["i"], json!(9));
    let rest = s
        .logs(
            &j.id,
            &LogQuery {
                cursor: page.next_cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.logs.len(), 6);
    assert_eq!(rest.logs.last().unwrap().message, "line 0");
    let errors = s
        .logs(
            &j.id,
            &LogQuery {
                level: Some(Level::Warn),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(errors.logs.len(), 4);
    let none = s
        .logs(
            &j.id,
            &LogQuery {
                task: Some("other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.logs.is_empty());
    let mut bad = line(99, Level::Info);
    bad.task_id = "ghost".into();
    let err = s
        .add_logs(vec![line(50, Level::Info), bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    let after = s.logs(&j.id, &LogQuery::default()).await.unwrap();
    assert_eq!(after.logs.len(), 10, "a refused batch stores nothing");
}
