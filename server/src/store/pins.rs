//! The components a job pinned: when a job is submitted it records, for every task type some
//! deployed component exports, which digest serves it, so that redeploying while the job runs
//! does not change the code its remaining tasks (and their retries) run.

use tessera_api::{Component, TaskIdentifier};

/// Most task types the deployed components may export between them: a job's pins are a copy
/// of them, kept on its row.
pub const MAX_PINNED_TYPES: usize = 1_000;

/// Exported task types with the digest that serves each, most recently deployed first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pins(Vec<(TaskIdentifier, String)>);

impl Pins {
    /// The pins of the components deployed now (given most recently deployed first).
    pub fn of(deployed: &[Component]) -> Pins {
        Pins(
            deployed
                .iter()
                .flat_map(|c| c.task_types.iter().map(|t| (t.clone(), c.digest.clone())))
                .collect(),
        )
    }

    /// How many task types are pinned.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The digest that serves a task submitted as `task`: the most recently deployed
    /// component exporting a task type that can run it (same name and major version, minor
    /// not older).
    pub fn resolve(&self, task: &TaskIdentifier) -> Option<&str> {
        self.0
            .iter()
            .find(|(own, _)| own.can_run(task))
            .map(|(_, digest)| digest.as_str())
    }

    /// As stored on a job's row: `[["Name@v1.0","sha256:…"],…]`.
    pub fn encode(&self) -> String {
        let rows: Vec<(String, &str)> = self
            .0
            .iter()
            .map(|(t, d)| (t.to_string(), d.as_str()))
            .collect();
        serde_json::to_string(&rows).expect("strings serialize")
    }

    /// Reads what [`Pins::encode`] wrote.
    pub fn decode(text: &str) -> Result<Pins, String> {
        if text == "[]" {
            return Ok(Pins::default());
        }
        let rows: Vec<(String, String)> =
            serde_json::from_str(text).map_err(|e| format!("a job's pins ({e})"))?;
        rows.into_iter()
            .map(|(t, d)| {
                let (name, version) = t
                    .split_once('@')
                    .ok_or_else(|| format!("a job's pin {t:?}"))?;
                let id = TaskIdentifier::parse(name, version)
                    .map_err(|e| format!("a job's pin {t:?} ({e})"))?;
                Ok((id, d))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Pins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, version: &str) -> TaskIdentifier {
        TaskIdentifier::parse(name, version).unwrap()
    }

    fn component(digest: &str, types: &[(&str, &str)]) -> Component {
        Component {
            digest: digest.into(),
            name: "c".into(),
            size: 1,
            task_types: types.iter().map(|(n, v)| id(n, v)).collect(),
            deployed_by: "me".into(),
            deployed_at: 1,
            undeployed_at: None,
        }
    }

    #[test]
    fn the_most_recent_component_that_can_run_a_task_serves_it() {
        // Newest first: B exports Sleep v1.0 only, A exports Sleep v1.2 and Work v0.1.
        let pins = Pins::of(&[
            component("sha256:b", &[("Sleep", "v1.0")]),
            component("sha256:a", &[("Sleep", "v1.2"), ("Work", "v0.1")]),
        ]);
        assert_eq!(pins.count(), 3);
        assert_eq!(pins.resolve(&id("Sleep", "v1.0")), Some("sha256:b"));
        // B's v1.0 cannot run a v1.1 task: A's v1.2 can.
        assert_eq!(pins.resolve(&id("Sleep", "v1.1")), Some("sha256:a"));
        assert_eq!(pins.resolve(&id("Sleep", "v1.3")), None);
        assert_eq!(pins.resolve(&id("Sleep", "v2.0")), None);
        assert_eq!(pins.resolve(&id("Work", "v0.0")), Some("sha256:a"));
        assert_eq!(pins.resolve(&id("Other", "v0.0")), None);
    }

    #[test]
    fn pins_survive_their_encoding() {
        let pins = Pins::of(&[component(
            "sha256:a",
            &[("Sleep", "v1.2"), ("Work", "v0.1")],
        )]);
        let text = pins.encode();
        assert_eq!(
            text,
            r#"[["Sleep@v1.2","sha256:a"],["Work@v0.1","sha256:a"]]"#
        );
        assert_eq!(Pins::decode(&text).unwrap(), pins);
        assert_eq!(Pins::decode("[]").unwrap(), Pins::default());
        assert!(Pins::decode("[[\"Sleep\",\"x\"]]").is_err());
        assert!(Pins::decode("{").is_err());
    }
}
