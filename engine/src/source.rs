//! Pipeline source text: the YAML document as a JSON value plus the position
//! of every node, so that every error can point at `FILE:LINE:COL`.
//!
//! Values come from `serde_yaml` (its YAML 1.2 scalar resolution is the one
//! users expect); positions come from a second pass over `yaml-rust2`'s event
//! stream, which carries a marker for each node. Both read the same text, so
//! the paths they produce agree.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders a path the way errors print it: `stages.node.inputs[0]`.
pub fn render_path(segs: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.is_empty() || k.contains(['.', '[', ']', ' ']) {
                    out.push_str(&format!("{k:?}"));
                } else {
                    out.push_str(k);
                }
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A YAML document ready for checking: its value and where each node is.
#[derive(Debug)]
pub struct SourceDoc {
    pub value: serde_json::Value,
    /// Rendered path → position of the node's value.
    value_pos: HashMap<String, Pos>,
    /// Rendered path → position of the mapping key that introduced the node.
    key_pos: HashMap<String, Pos>,
}

/// The text is not YAML (or not representable as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl SourceDoc {
    /// Parses YAML text. An empty document is an empty mapping.
    pub fn parse(text: &str) -> Result<SourceDoc, SyntaxError> {
        let yaml: serde_yaml::Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let pos = e
                    .location()
                    .map(|l| Pos {
                        line: l.line(),
                        col: l.column(),
                    })
                    .unwrap_or(Pos { line: 1, col: 1 });
                return Err(SyntaxError {
                    pos,
                    message: format!("invalid YAML: {}", strip_location(&e.to_string())),
                });
            }
        };
        let value = yaml_to_json(&yaml, &mut Vec::new())?;
        let mut recorder = PosRecorder::default();
        let mut parser = Parser::new_from_str(text);
        // serde_yaml accepted the text, so a failure here would be a
        // disagreement between the two parsers: positions are then missing,
        // which only degrades error locations to the document start.
        let _ = parser.load(&mut recorder, false);
        Ok(SourceDoc {
            value,
            value_pos: recorder.value_pos,
            key_pos: recorder.key_pos,
        })
    }

    /// The best position for a path: the key that introduced it, else its
    /// value, else the nearest ancestor's.
    pub fn pos_of(&self, segs: &[PathSeg]) -> Pos {
        self.pos_of_kind(segs, true)
    }

    /// The position of a node's value (for "wrong value" errors).
    pub fn value_pos_of(&self, segs: &[PathSeg]) -> Pos {
        self.pos_of_kind(segs, false)
    }

    fn pos_of_kind(&self, segs: &[PathSeg], prefer_key: bool) -> Pos {
        for n in (0..=segs.len()).rev() {
            let p = render_path(&segs[..n]);
            let (first, second) = if prefer_key {
                (&self.key_pos, &self.value_pos)
            } else {
                (&self.value_pos, &self.key_pos)
            };
            if let Some(pos) = first.get(&p).or_else(|| second.get(&p)) {
                return *pos;
            }
        }
        Pos { line: 1, col: 1 }
    }
}

fn strip_location(msg: &str) -> String {
    // serde_yaml appends " at line L column C"; the position is printed
    // separately in front of the message.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn yaml_to_json(
    v: &serde_yaml::Value,
    path: &mut Vec<PathSeg>,
) -> Result<serde_json::Value, SyntaxError> {
    use serde_json::Value as J;
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(J::Number)
                    // YAML's .inf/.nan have no JSON number: keep them as the
                    // strings Prometheus configs would use.
                    .unwrap_or_else(|| J::String(format!("{f}")))
            }
        }
        Y::String(s) => J::String(s.clone()),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(PathSeg::Index(i));
                out.push(yaml_to_json(item, path)?);
                path.pop();
            }
            J::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    _ => {
                        return Err(SyntaxError {
                            pos: Pos { line: 1, col: 1 },
                            message: format!(
                                "{}: mapping keys must be plain strings",
                                render_path(path)
                            ),
                        })
                    }
                };
                path.push(PathSeg::Key(key.clone()));
                let jv = yaml_to_json(val, path)?;
                path.pop();
                out.insert(key, jv);
            }
            J::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(&t.value, path)?,
    })
}

/// Walks yaml-rust2 events, tracking the current path.
#[derive(Default)]
struct PosRecorder {
    stack: Vec<Frame>,
    path: Vec<PathSeg>,
    value_pos: HashMap<String, Pos>,
    key_pos: HashMap<String, Pos>,
}

enum Frame {
    /// Inside a mapping; `Some(key)` once a key has been read and its value
    /// is expected next.
    Map(Option<String>),
    Seq(usize),
}

fn to_pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

impl PosRecorder {
    /// Called when a node (scalar or collection start) begins: decides
    /// whether it is a key or a value, and records its position.
    /// Returns true if the node is a mapping key.
    fn begin_node(&mut self, pos: Pos, scalar: Option<&str>) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map(pending)) if pending.is_none() => {
                // A key. Only scalar keys are tracked.
                let key = scalar.unwrap_or("").to_string();
                *pending = Some(key.clone());
                let mut p = self.path.clone();
                p.push(PathSeg::Key(key));
                self.key_pos.entry(render_path(&p)).or_insert(pos);
                true
            }
            Some(Frame::Map(pending)) => {
                let key = pending.clone().unwrap_or_default();
                self.path.push(PathSeg::Key(key));
                self.value_pos.entry(render_path(&self.path)).or_insert(pos);
                false
            }
            Some(Frame::Seq(i)) => {
                let idx = *i;
                self.path.push(PathSeg::Index(idx));
                self.value_pos.entry(render_path(&self.path)).or_insert(pos);
                false
            }
            None => {
                self.value_pos.entry(String::new()).or_insert(pos);
                false
            }
        }
    }

    /// Called when a value node (scalar, or collection after its end) is
    /// complete: pops its path segment and advances the parent.
    fn end_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map(pending)) => {
                *pending = None;
                self.path.pop();
            }
            Some(Frame::Seq(i)) => {
                *i += 1;
                self.path.pop();
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for PosRecorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = to_pos(mark);
        match ev {
            Event::Scalar(s, ..) if !self.begin_node(pos, Some(&s)) => self.end_value(),
            Event::Alias(_) if !self.begin_node(pos, None) => self.end_value(),
            Event::SequenceStart(..) => {
                if self.begin_node(pos, None) {
                    // A sequence used as a mapping key: not addressable by
                    // path; treat as opaque by pushing a frame that is
                    // popped on its end.
                    self.path.push(PathSeg::Key(String::new()));
                }
                self.stack.push(Frame::Seq(0));
            }
            Event::MappingStart(..) => {
                if self.begin_node(pos, None) {
                    self.path.push(PathSeg::Key(String::new()));
                }
                self.stack.push(Frame::Map(None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> Vec<PathSeg> {
        segs.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => PathSeg::Index(i),
                Err(_) => PathSeg::Key(s.to_string()),
            })
            .collect()
    }

    #[test]
    fn positions_of_keys_and_values() {
        let text = "global:\n  scrape_interval: 10s\nstages:\n  node:\n    kind: scrape\n    inputs: [targets, other]\n    list:\n      - a: 1\n        b: 2\n";
        let doc = SourceDoc::parse(text).unwrap();
        assert_eq!(
            doc.pos_of(&p(&["global", "scrape_interval"])),
            Pos { line: 2, col: 3 }
        );
        assert_eq!(
            doc.value_pos_of(&p(&["global", "scrape_interval"])),
            Pos { line: 2, col: 20 }
        );
        assert_eq!(
            doc.value_pos_of(&p(&["stages", "node", "inputs", "1"])),
            Pos { line: 6, col: 23 }
        );
        assert_eq!(
            doc.pos_of(&p(&["stages", "node", "list", "0", "b"])),
            Pos { line: 9, col: 9 }
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            doc.pos_of(&p(&["stages", "node", "missing"])),
            Pos { line: 4, col: 3 }
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = SourceDoc::parse("stages:\n  a: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(err.message.starts_with("invalid YAML"));
    }

    #[test]
    fn renders_paths() {
        assert_eq!(
            render_path(&p(&["stages", "node", "inputs", "0"])),
            "stages.node.inputs[0]"
        );
    }
}
