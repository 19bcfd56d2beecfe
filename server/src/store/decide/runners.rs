//! Runners: which runners count as seen, and why a queued task has none.

use tessera_api::{RunnerInfo, Unserved};

use crate::store::driver::ReadyKind;

/// How long a runner counts as seen after its last claim.
pub(crate) const RUNNER_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Which kinds of ready queued tasks (cluster, task type, how many) no runner in `runners`
/// (those seen within [`RUNNER_WINDOW`]) could run, each with why: what the runners seen in that
/// cluster serve instead, or where the task type is served.
pub(crate) fn unserved(kinds: &[ReadyKind], runners: &[RunnerInfo]) -> Vec<Unserved> {
    let mut out = Vec::new();
    for ReadyKind {
        cluster,
        task,
        pinned,
        queued,
    } in kinds
    {
        let here: Vec<&RunnerInfo> = runners.iter().filter(|r| &r.cluster == cluster).collect();
        if here
            .iter()
            .any(|r| (*pinned && r.deployed) || r.identifiers.iter().any(|i| i.can_run(task)))
        {
            continue;
        }
        let list = |mut items: Vec<String>| {
            items.sort();
            items.dedup();
            let more = items.len().saturating_sub(5);
            items.truncate(5);
            let mut text = items.join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text
        };
        let versions: Vec<String> = here
            .iter()
            .flat_map(|r| &r.identifiers)
            .filter(|i| i.name == task.name)
            .map(|i| i.version.to_string())
            .collect();
        let minutes = RUNNER_WINDOW.as_secs() / 60;
        let reason = if !versions.is_empty() {
            format!(
                "no runner in cluster {cluster} has served {task} in the last {minutes} minutes; \
                 runners seen there serve {} {}",
                task.name,
                list(versions)
            )
        } else if !here.is_empty() && here.iter().all(|r| r.identifiers.is_empty()) {
            format!(
                "only fleet runners serve cluster {cluster}, and its job pinned no deployed \
                 component for {task}: deploy one that exports it (`tessera deploy`) and submit \
                 again, or start a runner with its component file"
            )
        } else if !here.is_empty() {
            let names = here
                .iter()
                .flat_map(|r| &r.identifiers)
                .map(ToString::to_string)
                .collect();
            format!(
                "no runner in cluster {cluster} has served {} in the last {minutes} minutes; \
                 runners seen there serve {}",
                task.name,
                list(names)
            )
        } else {
            let elsewhere: Vec<String> = runners
                .iter()
                .filter(|r| r.identifiers.iter().any(|i| i.can_run(task)))
                .map(|r| r.cluster.clone())
                .collect();
            if elsewhere.is_empty() && *pinned {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; start a fleet runner with `tessera runner --deployed --cluster \
                     {cluster}` (its job pinned a deployed component for {task})"
                )
            } else if elsewhere.is_empty() {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; start one whose component exports {task} with `tessera runner \
                     COMPONENT.wasm --cluster {cluster}`"
                )
            } else {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; {task} is served in cluster {}",
                    list(elsewhere)
                )
            }
        };
        out.push(Unserved {
            cluster: cluster.clone(),
            identifier: task.clone(),
            queued: *queued,
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {

    use super::super::testing::*;

    use super::*;
    use tessera_api::TaskIdentifier;

    #[test]
    fn unserved_kinds_say_who_was_seen_serving_what() {
        let runner = |cluster: &str, ids: &[(&str, &str)]| RunnerInfo {
            id: "r".into(),
            cluster: cluster.into(),
            identifiers: ids.iter().map(|(n, v)| id(n, v)).collect(),
            first_seen: 0,
            last_seen: 0,
            deployed: false,
            host: None,
            concurrency: None,
            wasmtime: None,
            running: 0,
        };
        let fleet = RunnerInfo {
            deployed: true,
            ..runner("fleet", &[])
        };
        let runners = [
            runner("default", &[("wordfreq.Job", "v1.2"), ("Other", "v0.0")]),
            runner("gpu", &[("Render", "v2.0")]),
            fleet,
        ];
        let kind = |cluster: &str, task: TaskIdentifier, pinned: bool, queued: u64| ReadyKind {
            cluster: cluster.into(),
            task,
            pinned,
            queued,
        };
        let kinds = [
            kind("default", id("wordfreq.Job", "v1.1"), false, 3),
            kind("default", id("wordfreq.Job", "v1.3"), false, 2),
            kind("default", id("Typo", "v0.0"), false, 1),
            kind("cpu", id("Render", "v2.0"), false, 4),
            kind("nowhere", id("Lost", "v0.0"), false, 5),
            // A fleet runner serves what its job pinned, and only in its cluster.
            kind("fleet", id("Deployed", "v0.0"), true, 6),
            kind("fleet", id("NotDeployed", "v0.0"), false, 7),
            kind("elsewhere", id("Deployed", "v0.0"), true, 8),
        ];
        let got = unserved(&kinds, &runners);
        let reasons: Vec<&str> = got.iter().map(|u| u.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                // v1.1 runs on the v1.2 runner; v1.3 does not.
                "no runner in cluster default has served wordfreq.Job@v1.3 in the last 5 \
                 minutes; runners seen there serve wordfreq.Job v1.2",
                "no runner in cluster default has served Typo in the last 5 minutes; runners \
                 seen there serve Other@v0.0, wordfreq.Job@v1.2",
                "no runner has asked for work in cluster cpu in the last 5 minutes; \
                 Render@v2.0 is served in cluster gpu",
                "no runner has asked for work in cluster nowhere in the last 5 minutes; start \
                 one whose component exports Lost@v0.0 with `tessera runner COMPONENT.wasm \
                 --cluster nowhere`",
                "only fleet runners serve cluster fleet, and its job pinned no deployed \
                 component for NotDeployed@v0.0: deploy one that exports it (`tessera deploy`) \
                 and submit again, or start a runner with its component file",
                "no runner has asked for work in cluster elsewhere in the last 5 minutes; start \
                 a fleet runner with `tessera runner --deployed --cluster elsewhere` (its job \
                 pinned a deployed component for Deployed@v0.0)",
            ]
        );
        assert_eq!(got[0].queued, 2);
    }
}
