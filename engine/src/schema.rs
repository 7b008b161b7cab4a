//! The pipeline JSON Schema, assembled from the engine's own keys and each
//! registered kind's section schema. `panoptes schema` prints it and
//! `schemas/pipeline.schema.json` is this output, checked by a test, so the
//! file, the validator and the config types cannot drift apart.

use serde_json::{json, Map, Value};

use panoptes_model::DURATION_PATTERN;

use crate::registry::Registry;

/// Keys every stage section may carry, handled by the engine itself.
pub const ENGINE_KEYS: [&str; 4] = ["kind", "inputs", "buffer", "when_full"];

/// Default capacity (in batches) of a stage's input channel.
pub const DEFAULT_BUFFER: usize = 256;

/// The `$defs` name of a kind's section schema.
pub fn kind_def_name(kind: &str) -> String {
    format!("stage_{kind}")
}

/// JSON Schema of a Prometheus duration string.
pub fn duration_schema() -> Value {
    json!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": "A Prometheus duration: 15s, 1m30s, 250ms, 2h, 1d, 1w, 1y"
    })
}

fn engine_key_schemas(kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "kind".into(),
        json!({"const": kind, "description": "The stage kind."}),
    );
    m.insert(
        "inputs".into(),
        json!({
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*(\\.[A-Za-z_][A-Za-z0-9_-]*)?$"},
            "description": "Upstream stages (`stage` or `stage.port`) whose output this stage consumes."
        }),
    );
    m.insert(
        "buffer".into(),
        json!({
            "type": "integer", "minimum": 1, "maximum": 1_000_000,
            "description": format!("Capacity of this stage's input channel, in batches (default {DEFAULT_BUFFER}).")
        }),
    );
    m.insert(
        "when_full".into(),
        json!({
            "enum": ["block", "drop"],
            "description": "When the input channel is full: block the producers (backpressure, the default) or drop the batch and count it."
        }),
    );
    m
}

/// The whole pipeline schema.
pub fn pipeline_schema(registry: &Registry) -> Value {
    let mut defs = Map::new();
    defs.insert("duration".into(), duration_schema());
    let mut branches = Vec::new();
    for kind in registry.kinds() {
        let mut section = kind.config_schema();
        if let Some(obj) = section.as_object_mut() {
            obj.entry("type").or_insert(json!("object"));
            obj.insert("additionalProperties".into(), json!(false));
            let props = obj
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut merged = engine_key_schemas(kind.name());
            for (k, v) in props {
                merged.insert(k, v);
            }
            obj.insert("properties".into(), Value::Object(merged));
            obj.entry("description")
                .or_insert_with(|| json!(kind.description()));
        }
        let def = kind_def_name(kind.name());
        branches.push(json!({
            "if": {"properties": {"kind": {"const": kind.name()}}, "required": ["kind"]},
            "then": {"$ref": format!("#/$defs/{def}")}
        }));
        defs.insert(def, section);
    }
    defs.insert(
        "stage".into(),
        json!({
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": registry.names()}},
            "allOf": branches
        }),
    );
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Panoptes pipeline",
        "description": "A Panoptes pipeline: stages (discovery, scrape, relabel, store, …) and the edges between them.",
        "type": "object",
        "additionalProperties": false,
        "required": ["stages"],
        "properties": {
            "global": {
                "type": "object",
                "additionalProperties": false,
                "description": "Defaults every stage may read.",
                "properties": {
                    "scrape_interval": {"$ref": "#/$defs/duration"},
                    "scrape_timeout": {"$ref": "#/$defs/duration"},
                    "evaluation_interval": {"$ref": "#/$defs/duration"},
                    "external_labels": {
                        "type": "object",
                        "propertyNames": {"pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                        "additionalProperties": {"type": "string"}
                    }
                }
            },
            "stages": {
                "type": "object",
                "description": "The stages, by id. An id names the stage in `inputs:` and in metrics.",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                "additionalProperties": {"$ref": "#/$defs/stage"}
            }
        },
        "$defs": defs
    })
}
