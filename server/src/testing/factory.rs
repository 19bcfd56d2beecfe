//! A row factory over any store (River's `testfactory`): plant a job whose tasks are already in
//! the states a test needs, instead of walking submit → claim → report to get there.
//!
//! ```text
//! let mut job = JobPlan::new("j", T0);
//! let root = job.root("Root", TaskState::Computed);
//! let leaf = job.child(root, "Leaf", TaskState::Running);
//! job.task(leaf).lease_expires_at = Some(T0 - 1); // a lease that ran out
//! let planted = job.plant(&*store).await;
//! ```
//!
//! Defaults by state: *queued* has no attempt; *running* is attempt 1 under lease 1 of runner
//! `factory`, started at the plan's time and expiring 10 s later, with an open span; *computed*
//! ran once and is completed when all its children are; *failed* ran once, spent its retries
//! and fails its job; *canceled* finished at the plan's time. Children, open children, pending
//! dependencies and the job's completion follow from the tree when it is planted.

use crate::Store;
use crate::store::plant::{PlantedJob, PlantedTask, child_path};
use tessera_api::{TaskIdentifier, TaskState};

/// A task of a [`JobPlan`], by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRef(pub usize);

/// A job being put together.
pub struct JobPlan {
    job: PlantedJob,
    at: u64,
}

/// What was planted: the job's id and its tasks' ids, in the order they were added.
#[derive(Debug, Clone)]
pub struct Planted {
    pub job_id: String,
    pub task_ids: Vec<String>,
}

impl Planted {
    /// The id of task `t`.
    pub fn id(&self, t: TaskRef) -> &str {
        &self.task_ids[t.0]
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl JobPlan {
    /// A job named `name` submitted at `at` (ns since the epoch), in cluster `default`.
    pub fn new(name: &str, at: u64) -> Self {
        JobPlan {
            job: PlantedJob {
                id: new_id(),
                name: name.into(),
                cluster: "default".into(),
                canceled: false,
                failed: false,
                submitted_at: at,
                completed_at: None,
                tasks: Vec::new(),
            },
            at,
        }
    }

    /// The job row, to change before planting (e.g. `canceled`).
    pub fn job(&mut self) -> &mut PlantedJob {
        &mut self.job
    }

    /// Task `t`'s row, to change before planting.
    pub fn task(&mut self, t: TaskRef) -> &mut PlantedTask {
        &mut self.job.tasks[t.0]
    }

    /// The root task: task type `name` (version v0.0) in `state`.
    pub fn root(&mut self, name: &str, state: TaskState) -> TaskRef {
        assert!(self.job.tasks.is_empty(), "a job has one root, added first");
        self.add(None, name, state)
    }

    /// A subtask of `parent`: task type `name` (version v0.0) in `state`.
    pub fn child(&mut self, parent: TaskRef, name: &str, state: TaskState) -> TaskRef {
        self.add(Some(parent), name, state)
    }

    fn add(&mut self, parent: Option<TaskRef>, name: &str, state: TaskState) -> TaskRef {
        let at = self.at;
        let (parent_id, path, depth) = match parent {
            None => (None, String::new(), 0),
            Some(p) => {
                let index = self
                    .job
                    .tasks
                    .iter()
                    .filter(|t| t.parent_id.as_deref() == Some(&self.job.tasks[p.0].id))
                    .count();
                let parent = &self.job.tasks[p.0];
                (
                    Some(parent.id.clone()),
                    child_path(&parent.path, index),
                    parent.depth + 1,
                )
            }
        };
        let ran = state != TaskState::Queued && state != TaskState::Canceled;
        let ended = state != TaskState::Queued && state != TaskState::Running;
        self.job.tasks.push(PlantedTask {
            id: new_id(),
            parent_id,
            path,
            depth,
            identifier: TaskIdentifier::parse(name, "v0.0").expect("a valid task type name"),
            input: serde_json::json!({}),
            display: None,
            cluster: self.job.cluster.clone(),
            state,
            depends_on: Vec::new(),
            pending_deps: 0,
            children: 0,
            open_children: 0,
            completed: false,
            attempt: u32::from(ran),
            lease: u64::from(ran),
            runner: (state == TaskState::Running).then(|| "factory".to_string()),
            lease_expires_at: (state == TaskState::Running).then_some(at + 10_000_000_000),
            retries_used: 0,
            max_retries: 0,
            lost: 0,
            not_before: 0,
            error: (state == TaskState::Failed).then(|| "planted failure".to_string()),
            created_at: at,
            started_at: ran.then_some(at),
            finished_at: ended.then_some(at),
        });
        TaskRef(self.job.tasks.len() - 1)
    }

    /// Makes `task` wait for `on` (an earlier sibling).
    pub fn depends(&mut self, task: TaskRef, on: TaskRef) {
        let on = self.job.tasks[on.0].id.clone();
        self.job.tasks[task.0].depends_on.push(on);
    }

    /// Puts the job in `store`; panics (naming the job) if the store refuses it.
    pub async fn plant(mut self, store: &dyn Store) -> Planted {
        let tasks = &mut self.job.tasks;
        // Children and completion follow from the tree, leaves up (children come after parents).
        for i in (0..tasks.len()).rev() {
            let id = tasks[i].id.clone();
            let children: Vec<bool> = tasks
                .iter()
                .filter(|t| t.parent_id.as_deref() == Some(&id))
                .map(|t| t.completed)
                .collect();
            let t = &mut tasks[i];
            t.children = children.len() as u64;
            t.open_children = children.iter().filter(|c| !**c).count() as u64;
            t.completed = t.state == TaskState::Computed && t.open_children == 0;
        }
        let completed: Vec<String> = tasks
            .iter()
            .filter(|t| t.completed)
            .map(|t| t.id.clone())
            .collect();
        for t in tasks.iter_mut() {
            t.pending_deps = t
                .depends_on
                .iter()
                .filter(|d| !completed.contains(d))
                .count() as u32;
        }
        if tasks.first().is_some_and(|root| root.completed) {
            self.job.completed_at.get_or_insert(self.at);
        }
        self.job.failed |= tasks.iter().any(|t| t.state == TaskState::Failed);
        let planted = Planted {
            job_id: self.job.id.clone(),
            task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
        };
        store
            .plant(&self.job)
            .await
            .unwrap_or_else(|e| panic!("could not plant job {}: {e:?}", self.job.name));
        planted
    }
}
