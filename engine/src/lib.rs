//! The Panoptes pipeline engine: compiles a pipeline YAML into a checked
//! graph of stages, runs them on bounded channels, and reloads them. It knows
//! stages only through the [`stage`] contract.

pub use panoptes_model as model;

pub mod clock;
pub mod global;
pub mod port;
pub mod stage;
