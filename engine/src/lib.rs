//! The Panoptes pipeline engine.
pub use panoptes_model as model;
