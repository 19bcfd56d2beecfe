//! Log lines: which job each belongs to, and what a job's log quota keeps.

use std::collections::HashMap;

use tessera_api::LogLine;

use crate::store::StoreError;
use tessera_api::limits;

/// Fills in each log line's job from its task; refuses the whole batch if a line names a task
/// that does not exist or the wrong job.
pub(crate) fn logs(
    lines: &mut [LogLine],
    jobs: &HashMap<String, String>,
    runners: &HashMap<(String, u32), String>,
) -> Result<(), StoreError> {
    for line in lines.iter_mut() {
        // Only the runner that ran an attempt writes its lines (they may arrive after it
        // ended). Checked first, and one answer whether the task exists or not: a runner
        // learns nothing of tasks it did not run (another tenant's, say).
        let ran = runners.get(&(line.task_id.clone(), line.attempt));
        let job = jobs.get(&line.task_id);
        let (Some(job), true) = (job, ran == Some(&line.runner_id)) else {
            return Err(StoreError::Conflict(format!(
                "log line of task {} attempt {} comes from runner {}, which did not run that \
                 attempt (or there is no such task); nothing of this batch was stored",
                limits::elide(&line.task_id, 64),
                line.attempt,
                limits::elide(&line.runner_id, 64)
            )));
        };
        if !line.job_id.is_empty() && &line.job_id != job {
            return Err(StoreError::Conflict(format!(
                "log line names job {} but task {} belongs to job {job}; nothing of this batch was stored",
                limits::elide(&line.job_id, 64),
                line.task_id
            )));
        }
        line.job_id = job.clone();
    }
    Ok(())
}

/// Which log lines a job keeps under its tenant's quota: lines are kept in order while they
/// fit in the `room` left; the first that does not is replaced by one marker line saying so,
/// the rest are dropped, and the whole room counts as used, so that the job never gets
/// another marker. Returns the lines kept and the bytes to count.
pub fn logs_within(lines: Vec<LogLine>, room: u64, quota: u64) -> (Vec<LogLine>, u64) {
    let mut kept = Vec::with_capacity(lines.len());
    let mut used = 0u64;
    for line in lines {
        let size = log_size(&line);
        if used.saturating_add(size) <= room {
            used += size;
            kept.push(line);
            continue;
        }
        if room > 0 {
            kept.push(LogLine {
                level: tessera_api::Level::Warn,
                message: format!(
                    "this job reached its tenant's log quota (log_bytes_per_job: {quota} \
                     bytes); its later log lines are dropped"
                ),
                fields: Default::default(),
                ..line
            });
        }
        return (kept, room);
    }
    (kept, used)
}

/// The log lines a batch keeps under each job's quota (`quota` of its tenant) given the bytes
/// each job kept before (`kept`: its tenant and bytes), and the bytes to add per job. The
/// lines come out grouped by job, in their order within each job.
pub fn logs_under_quota(
    lines: Vec<LogLine>,
    kept: &HashMap<String, (crate::store::TenantId, u64)>,
    quota: impl Fn(crate::store::TenantId) -> u64,
) -> (Vec<LogLine>, Vec<(String, u64)>) {
    let mut by_job: Vec<(String, Vec<LogLine>)> = Vec::new();
    for line in lines {
        match by_job.iter_mut().find(|(j, _)| *j == line.job_id) {
            Some((_, group)) => group.push(line),
            None => by_job.push((line.job_id.clone(), vec![line])),
        }
    }
    let mut out = Vec::new();
    let mut added = Vec::new();
    for (job, group) in by_job {
        let (tenant, before) = kept
            .get(&job)
            .copied()
            .unwrap_or((crate::store::DEFAULT_TENANT, 0));
        let quota = quota(tenant);
        let (lines, bytes) = logs_within(group, quota.saturating_sub(before), quota);
        out.extend(lines);
        if bytes > 0 {
            added.push((job, bytes));
        }
    }
    (out, added)
}

/// The bytes a log line costs against a quota: its message and fields as stored.
pub fn log_size(line: &LogLine) -> u64 {
    let fields = serde_json::to_string(&line.fields).map_or(0, |f| f.len());
    (line.message.len() + fields) as u64
}

#[cfg(test)]
mod tests {

    use super::super::testing::*;

    use super::*;

    #[test]
    fn log_lines_get_their_job_or_the_batch_is_refused() {
        let line = |task: &str, job: &str| LogLine {
            time_unix_nano: 1,
            level: tessera_api::Level::Info,
            message: "m".into(),
            task_id: task.into(),
            job_id: job.into(),
            runner_id: "r".into(),
            attempt: 1,
            fields: Default::default(),
        };
        let jobs: HashMap<String, String> = [("t".to_string(), "j".to_string())].into();
        let ran: HashMap<(String, u32), String> = [(("t".to_string(), 1), "r".to_string())].into();
        let mut ok = vec![line("t", ""), line("t", "j")];
        logs(&mut ok, &jobs, &ran).unwrap();
        assert!(ok.iter().all(|l| l.job_id == "j"));
        assert!(logs(&mut [line("t", "other")], &jobs, &ran).is_err());
        assert!(logs(&mut [line("t", ""), line("u", "")], &jobs, &ran).is_err());
        // Only the runner that ran the attempt writes its lines.
        let mut forged = line("t", "");
        forged.runner_id = "intruder".into();
        let e = logs(&mut [line("t", ""), forged], &jobs, &ran).unwrap_err();
        assert!(e.to_string().contains("did not run that attempt"), "{e}");
        let mut other_attempt = line("t", "");
        other_attempt.attempt = 2;
        assert!(logs(&mut [other_attempt], &jobs, &ran).is_err());
    }

    #[test]
    fn a_job_keeps_log_lines_up_to_its_quota_then_one_marker() {
        // Each line costs its message and "{}" (2 bytes of fields).
        let lines: Vec<LogLine> = (0..5).map(|_| line("j", "12345678")).collect();
        let (kept, used) = logs_within(lines.clone(), 25, 100);
        assert_eq!(kept.len(), 3, "two lines fit, then the marker");
        assert!(
            kept[2].message.contains("log_bytes_per_job: 100"),
            "{:?}",
            kept[2]
        );
        assert_eq!(used, 25, "the whole room counts as used: no second marker");
        let (kept, used) = logs_within(lines.clone(), 0, 100);
        assert!(kept.is_empty() && used == 0);
        let (kept, used) = logs_within(lines, 1000, 1000);
        assert_eq!((kept.len(), used), (5, 50));
        // Per job, from what each kept before.
        let batch = vec![
            line("a", "12345678"),
            line("b", "12345678"),
            line("a", "12345678"),
        ];
        let before = HashMap::from([("a".to_string(), (1, 95)), ("b".to_string(), (2, 0))]);
        let (kept, added) = logs_under_quota(batch, &before, |_| 100);
        assert_eq!(
            kept.len(),
            2,
            "a's first line becomes the marker, b's line is kept"
        );
        assert_eq!(added, vec![("a".to_string(), 5), ("b".to_string(), 10)]);
    }
}
