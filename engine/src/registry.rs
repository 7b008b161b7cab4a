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

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind. A second kind with the same name replaces the first.
    pub fn register(&mut self, kind: impl StageKind) -> &mut Self {
        self.kinds.insert(kind.name(), Arc::new(kind));
        self
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
