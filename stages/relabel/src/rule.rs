//! Relabel rules: the Prometheus YAML shape (`source_labels`, `separator`,
//! `target_label`, `regex`, `modulus`, `replacement`, `action`), its JSON
//! Schema, and compiling it with Prometheus's defaults and validation rules.

use std::fmt;

use panoptes_engine::stage::ConfigIssue;
use serde_json::{json, Map, Value};

use crate::template::Template;
use panoptes_model::goregex::AnchoredRegex;
use panoptes_model::Sym;

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    /// All actions, in documentation order.
    pub const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::KeepEqual,
        Action::DropEqual,
        Action::HashMod,
        Action::LabelMap,
        Action::LabelDrop,
        Action::LabelKeep,
        Action::Lowercase,
        Action::Uppercase,
    ];

    /// The YAML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// Parses an action name; case-insensitive, as Prometheus.
    pub fn parse(s: &str) -> Option<Action> {
        let lower = s.to_ascii_lowercase();
        Action::ALL.into_iter().find(|a| a.as_str() == lower)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) const DEFAULT_SEPARATOR: &str = ";";
pub(crate) const DEFAULT_REGEX: &str = "(.*)";
pub(crate) const DEFAULT_REPLACEMENT: &str = "$1";

/// One compiled relabel rule.
#[derive(Clone, Debug)]
pub struct RelabelRule {
    pub(crate) source_labels: Vec<Sym>,
    pub(crate) separator: String,
    pub(crate) regex: AnchoredRegex,
    pub(crate) modulus: u64,
    /// The target label as written (a template for `replace`).
    pub(crate) target_label: Sym,
    pub(crate) target_template: Option<Template>,
    pub(crate) replacement: Template,
    pub(crate) action: Action,
}

impl RelabelRule {
    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The source labels, in order.
    pub fn source_labels(&self) -> impl Iterator<Item = &str> + '_ {
        self.source_labels.iter().map(|s| &**s)
    }

    /// The regex as written (without Prometheus's implicit anchors).
    pub fn regex(&self) -> &str {
        self.regex.as_str()
    }

    /// The target label as written.
    pub fn target_label(&self) -> &str {
        &self.target_label
    }

    /// The replacement as written.
    pub fn replacement(&self) -> &str {
        self.replacement.as_str()
    }
}

/// Whether `s` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a `replace` target label or `labelmap` replacement containing
/// `$` references can expand to a label name: word characters and
/// `$name` / `${name}` references, not starting with a digit.
fn is_valid_label_template(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'$' => {}
        _ => return false,
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if b.get(i) == Some(&b'{') {
                i += 1;
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start || b.get(i) != Some(&b'}') {
                    return false;
                }
                i += 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if word(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

const LABEL_NAME_PATTERN: &str = "^[a-zA-Z_][a-zA-Z0-9_]*$";

/// JSON Schema of ONE relabel rule (used by the relabel, scrape and
/// discovery schemas).
pub fn relabel_rule_schema() -> Value {
    let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    json!({
        "type": "object",
        "description": "A Prometheus relabel rule (relabel_config).",
        "additionalProperties": false,
        "properties": {
            "source_labels": {
                "type": "array",
                "description": "Labels whose values are joined with `separator` and matched against `regex`.",
                "items": {"type": "string", "pattern": LABEL_NAME_PATTERN}
            },
            "separator": {
                "type": "string",
                "description": "Placed between concatenated source label values (default `;`)."
            },
            "regex": {
                "type": ["string", "number", "boolean"],
                "description": "RE2 regular expression, anchored at both ends (default `(.*)`)."
            },
            "modulus": {
                "type": "integer",
                "minimum": 0,
                "description": "Modulus for the hashmod action."
            },
            "target_label": {
                "type": "string",
                "description": "Label written by replace, hashmod, lowercase, uppercase; compared by keepequal/dropequal."
            },
            "replacement": {
                "type": ["string", "number", "boolean"],
                "description": "Replacement for replace and labelmap; `$1`, `${name}` refer to regex groups (default `$1`)."
            },
            "action": {
                "type": "string",
                "description": format!("One of {} (case-insensitive; default replace).", actions.join(", "))
            }
        }
    })
}

/// A scalar YAML value read as a string, the way Go's YAML decoder fills a
/// string field from `regex: 200`.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compiles a JSON array of rules; issues carry paths prefixed with
/// `path_prefix` (e.g. "relabel_configs"), like "relabel_configs[2].regex".
pub fn compile_rules(
    rules: &Value,
    path_prefix: &str,
) -> Result<Vec<RelabelRule>, Vec<ConfigIssue>> {
    let items = match rules {
        Value::Array(a) => a.as_slice(),
        Value::Null => &[],
        _ => {
            return Err(vec![ConfigIssue::new(
                path_prefix,
                "expected a list of relabel rules",
            )])
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut issues = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path_prefix}[{i}]");
        match compile_rule(item, &path) {
            Ok(r) => out.push(r),
            Err(mut e) => issues.append(&mut e),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Compiles one rule object; `path` is where it sits (e.g. `rules[0]`).
pub fn compile_rule(item: &Value, path: &str) -> Result<RelabelRule, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let Some(obj) = item.as_object() else {
        return Err(vec![ConfigIssue::new(
            path,
            "expected a relabel rule (a mapping with source_labels, regex, action, ...)",
        )]);
    };
    let at = |field: &str| format!("{path}.{field}");
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "source_labels"
                | "separator"
                | "regex"
                | "modulus"
                | "target_label"
                | "replacement"
                | "action"
        ) {
            issues.push(ConfigIssue::new(
                at(key),
                "unknown field (expected one of source_labels, separator, regex, modulus, target_label, replacement, action)",
            ));
        }
    }

    let source_labels = read_source_labels(obj, &at("source_labels"), &mut issues);
    let separator = read_string(obj, "separator", &at("separator"), &mut issues)
        .unwrap_or_else(|| DEFAULT_SEPARATOR.to_string());
    let regex_given = obj.contains_key("regex");
    let regex_src = read_string(obj, "regex", &at("regex"), &mut issues)
        .unwrap_or_else(|| DEFAULT_REGEX.to_string());
    let modulus = match obj.get("modulus") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(m) => m,
            None => {
                issues.push(ConfigIssue::new(
                    at("modulus"),
                    "expected a non-negative integer",
                ));
                0
            }
        },
    };
    let target_label =
        read_string(obj, "target_label", &at("target_label"), &mut issues).unwrap_or_default();
    let replacement = read_string(obj, "replacement", &at("replacement"), &mut issues)
        .unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string());
    let action = match read_string(obj, "action", &at("action"), &mut issues) {
        None => Some(Action::Replace),
        Some(s) if s.is_empty() => {
            issues.push(ConfigIssue::new(
                at("action"),
                "the relabel action cannot be empty",
            ));
            None
        }
        Some(s) => match Action::parse(&s) {
            Some(a) => Some(a),
            None => {
                issues.push(ConfigIssue::new(
                    at("action"),
                    format!(
                        "unknown relabel action {s:?} (expected one of {})",
                        Action::ALL
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                None
            }
        },
    };

    let regex = match AnchoredRegex::new(&regex_src) {
        Ok(r) => Some(r),
        Err(e) => {
            issues.push(ConfigIssue::new(
                at("regex"),
                format!("invalid regular expression: {e}"),
            ));
            None
        }
    };

    if let Some(action) = action {
        validate(
            action,
            &Fields {
                source_labels_given: obj.contains_key("source_labels"),
                separator: &separator,
                regex_given,
                modulus,
                target_label: &target_label,
                replacement: &replacement,
            },
            path,
            &mut issues,
        );
    }

    match (action, regex, source_labels) {
        (Some(action), Some(regex), Some(source_labels)) if issues.is_empty() => {
            let replacement_t = Template::compile(&replacement, &regex);
            let target_template = (action == Action::Replace && target_label.contains('$'))
                .then(|| Template::compile(&target_label, &regex));
            Ok(RelabelRule {
                source_labels,
                separator,
                regex,
                modulus,
                target_label: Sym::from(target_label),
                target_template,
                replacement: replacement_t,
                action,
            })
        }
        _ => Err(issues),
    }
}

struct Fields<'a> {
    source_labels_given: bool,
    separator: &'a str,
    regex_given: bool,
    modulus: u64,
    target_label: &'a str,
    replacement: &'a str,
}

/// Prometheus's validation rules for a rule, one issue per violation.
fn validate(action: Action, f: &Fields<'_>, path: &str, issues: &mut Vec<ConfigIssue>) {
    use Action::*;
    let at = |field: &str| format!("{path}.{field}");
    if action == HashMod && f.modulus == 0 {
        issues.push(ConfigIssue::new(
            at("modulus"),
            "hashmod requires a non-zero modulus",
        ));
    }
    let needs_target = matches!(
        action,
        Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if needs_target && f.target_label.is_empty() {
        issues.push(ConfigIssue::new(
            at("target_label"),
            format!("the {action} action requires a target_label"),
        ));
    } else if needs_target {
        let ok = if action == Replace && f.target_label.contains('$') {
            is_valid_label_template(f.target_label)
        } else {
            is_valid_label_name(f.target_label)
        };
        if !ok {
            issues.push(ConfigIssue::new(
                at("target_label"),
                format!(
                    "{:?} is not a valid target_label for the {action} action (expected a label name [a-zA-Z_][a-zA-Z0-9_]*{})",
                    f.target_label,
                    if action == Replace { ", which may contain $1 / ${name} references" } else { "" }
                ),
            ));
        }
    }
    if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
        && f.replacement != DEFAULT_REPLACEMENT
    {
        issues.push(ConfigIssue::new(
            at("replacement"),
            format!("replacement cannot be set for the {action} action"),
        ));
    }
    if action == LabelMap && !is_valid_label_template(f.replacement) {
        issues.push(ConfigIssue::new(
            at("replacement"),
            format!(
                "{:?} is not a valid replacement for the labelmap action (expected a label name, which may contain $1 / ${{name}} references)",
                f.replacement
            ),
        ));
    }
    if matches!(action, KeepEqual | DropEqual) {
        let mut extra = Vec::new();
        if f.regex_given {
            extra.push("regex");
        }
        if f.modulus != 0 {
            extra.push("modulus");
        }
        if f.separator != DEFAULT_SEPARATOR {
            extra.push("separator");
        }
        for field in extra {
            issues.push(ConfigIssue::new(
                at(field),
                format!("the {action} action takes only source_labels and target_label"),
            ));
        }
    }
    if matches!(action, LabelDrop | LabelKeep) {
        let mut extra = Vec::new();
        if f.source_labels_given {
            extra.push("source_labels");
        }
        if !f.target_label.is_empty() {
            extra.push("target_label");
        }
        if f.modulus != 0 {
            extra.push("modulus");
        }
        if f.separator != DEFAULT_SEPARATOR {
            extra.push("separator");
        }
        if f.replacement != DEFAULT_REPLACEMENT {
            extra.push("replacement");
        }
        for field in extra {
            issues.push(ConfigIssue::new(
                at(field),
                format!("the {action} action takes only regex"),
            ));
        }
    }
}

fn read_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    match obj.get(key) {
        None => None,
        // An explicit null is the field's zero value, as Go's YAML decoder
        // leaves it (e.g. `regex:` alone is the empty regex).
        Some(Value::Null) => Some(String::new()),
        Some(v) => match scalar_string(v) {
            Some(s) => Some(s),
            None => {
                issues.push(ConfigIssue::new(path, "expected a string"));
                None
            }
        },
    }
}

fn read_source_labels(
    obj: &Map<String, Value>,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Vec<Sym>> {
    match obj.get("source_labels") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, v) in items.iter().enumerate() {
                match v.as_str() {
                    Some(s) if is_valid_label_name(s) => out.push(Sym::from(s)),
                    Some(s) => {
                        ok = false;
                        issues.push(ConfigIssue::new(
                            format!("{path}[{i}]"),
                            format!(
                                "{s:?} is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)"
                            ),
                        ));
                    }
                    None => {
                        ok = false;
                        issues.push(ConfigIssue::new(
                            format!("{path}[{i}]"),
                            "expected a label name",
                        ));
                    }
                }
            }
            ok.then_some(out)
        }
        Some(_) => {
            issues.push(ConfigIssue::new(path, "expected a list of label names"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_template_validity_matches_prometheus() {
        for (s, ok) in [
            ("-label", false),
            ("label", true),
            ("label${1}", true),
            ("${1}label", true),
            ("${1}", true),
            ("${", false),
            ("$", false),
            ("${}", false),
            ("foo${", false),
            ("$1", true),
            ("asd$2asd", true),
            ("-foo${1}bar-", false),
            ("_${1}_", true),
            ("foo${bar}foo", true),
            ("0${3}", false),
        ] {
            assert_eq!(is_valid_label_template(s), ok, "{s}");
        }
    }

    #[test]
    fn action_is_case_insensitive() {
        assert_eq!(Action::parse("LabelMap"), Some(Action::LabelMap));
        assert_eq!(Action::parse("nope"), None);
    }
}
