//! The registry of stage kinds: the one place a new kind is added (one line
//! in the binary's `registry()`), and the engine's only way to find a kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stage::StageKind;

/// Stage kinds by their `kind:` name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

/// The pipeline schema with its validator (or why it does not compile).
pub struct CheckedSchema {
    pub schema: serde_json::Value,
    pub validator: Result<jsonschema::Validator, String>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind. A second kind with the same name replaces the first.
    pub fn register(&mut self, kind: impl StageKind) -> &mut Self {
        self.kinds.insert(kind.name(), Arc::new(kind));
        self
    }

    /// The pipeline schema of these kinds with its validator. Built per
    /// use and dropped after: it takes milliseconds to build but holds
    /// ~12 MB, which a running server would keep for its next reload.
    ///
    /// Dropping it does not give everything back: building any validator
    /// first checks the schema against the Draft-7 meta-schema, and
    /// `jsonschema` (0.33, and still 0.61) builds that meta-schema's own
    /// validator once into a process-wide `Lazy` static that is never freed
    /// (~11 MB of heap), with no public option to skip the check. A
    /// long-running process should therefore not call this: `panoptes run`
    /// has a short-lived child process do the schema step and compiles with
    /// [`crate::compile::CompileOptions::schema_checked`].
    pub fn checked_schema(&self) -> CheckedSchema {
        let schema = crate::schema::pipeline_schema(self);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(&schema)
            .map_err(|e| e.to_string());
        CheckedSchema { schema, validator }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    /// All kinds, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> {
        self.kinds.values()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}
