//! The Panoptes pipeline engine: compiles a pipeline YAML into a checked
//! graph of stages, runs them on bounded channels, and reloads them. It knows
//! stages only through the [`stage`] contract.

pub use panoptes_model as model;

pub mod clock;
pub mod compile;
pub mod global;
pub mod graph;
pub mod port;
pub mod registry;
pub mod runtime;
pub mod schema;
pub mod source;
pub mod stage;
pub mod supervisor;
pub mod tap;

pub use compile::{compile, CompiledPipeline, Diagnostic, Diagnostics};
pub use registry::Registry;
pub use runtime::{Engine, EngineOptions, ReloadReport};
pub use supervisor::{PipelineSource, Supervisor};
