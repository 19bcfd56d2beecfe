//! Deployed components: the digest each new task of a job runs, from the job's pins.

use std::collections::HashMap;

use crate::store::StoreError;
use crate::store::driver::{JobGrowth, NewTask};
use crate::store::pins::Pins;

/// Gives each new task the component its job pinned for its task type, if any.
pub(crate) fn pin_components(
    tasks: &mut [NewTask],
    jobs: &HashMap<String, JobGrowth>,
) -> Result<(), StoreError> {
    let mut decoded: HashMap<&str, Pins> = HashMap::new();
    for task in tasks {
        let Some(job) = jobs.get(&task.job_id) else {
            continue;
        };
        if job.pins == "[]" {
            continue;
        }
        if !decoded.contains_key(task.job_id.as_str()) {
            let pins = Pins::decode(&job.pins).map_err(StoreError::Corrupt)?;
            decoded.insert(
                jobs.get_key_value(&task.job_id)
                    .expect("present")
                    .0
                    .as_str(),
                pins,
            );
        }
        task.component = decoded[task.job_id.as_str()]
            .resolve(&task.identifier)
            .map(str::to_string);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_api::TaskState;

    use super::super::testing::*;

    use super::*;

    #[test]
    fn new_tasks_get_the_component_their_job_pinned() {
        let pins = crate::store::pins::Pins::of(&[tessera_api::Component {
            digest: "sha256:new".into(),
            name: "tasks".into(),
            size: 1,
            task_types: vec![id("Leaf", "v1.2")],
            deployed_by: "me".into(),
            deployed_at: 1,
            undeployed_at: None,
        }]);
        let task = |job: &str, name: &str, version: &str| NewTask {
            id: "t".into(),
            job_id: job.into(),
            tenant: 1,
            parent_id: None,
            depth: 1,
            path: String::new(),
            identifier: id(name, version),
            input: "{}".into(),
            display: None,
            cluster: "default".into(),
            state: TaskState::Queued,
            depends_on: vec![],
            max_retries: 0,
            created_at: 0,
            finished_at: None,
            component: None,
        };
        let mut tasks = [
            task("pinned", "Leaf", "v1.0"),
            task("pinned", "Leaf", "v1.3"),
            task("pinned", "Other", "v0.0"),
            task("unpinned", "Leaf", "v1.0"),
        ];
        let jobs = HashMap::from([
            (
                "pinned".to_string(),
                JobGrowth {
                    total: 1,
                    pins: pins.encode(),
                },
            ),
            (
                "unpinned".to_string(),
                JobGrowth {
                    total: 1,
                    pins: "[]".into(),
                },
            ),
        ]);
        pin_components(&mut tasks, &jobs).unwrap();
        let got: Vec<Option<&str>> = tasks.iter().map(|t| t.component.as_deref()).collect();
        assert_eq!(got, [Some("sha256:new"), None, None, None]);
        let broken = HashMap::from([(
            "pinned".to_string(),
            JobGrowth {
                total: 1,
                pins: "{".into(),
            },
        )]);
        assert!(matches!(
            pin_components(&mut tasks, &broken),
            Err(StoreError::Corrupt(_))
        ));
    }
}
