//! Prometheus relabeling: the library behind `relabel_configs` and
//! `metric_relabel_configs` (used by the scrape and discovery stages), and
//! the `relabel` stage that applies rules to sample batches on an edge.
//!
//! Semantics follow Prometheus's `model/relabel`: every action, its
//! defaults (separator `;`, regex `(.*)` anchored at both ends, replacement
//! `$1`, action `replace`), its validation rules, Go's `$`-template
//! expansion and RE2's ASCII Perl classes.

mod process;
mod rule;
mod stage;
mod template;

pub use process::{process, process_cow};
pub use rule::{
    compile_rule, compile_rules, is_valid_label_name, relabel_rule_schema, Action, RelabelRule,
};
pub use stage::{RelabelConfig, RelabelKind};
