//! The pipeline as a petgraph graph: stages are nodes, data edges carry the
//! message type of the upstream port. Used for the cycle check, the start
//! and stop order, and `panoptes graph` (Graphviz DOT).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::compile::CompiledStage;
use crate::stage::MessageType;

/// A node: one stage.
#[derive(Clone, Debug)]
pub struct StageNode {
    pub id: String,
    pub kind: &'static str,
}

/// An edge: `from.port → to`.
#[derive(Clone, Debug)]
pub struct DataEdge {
    pub port: String,
    pub message: MessageType,
}

/// The data graph of a pipeline (query references to stores are not edges).
#[derive(Clone, Debug, Default)]
pub struct PipelineGraph {
    pub graph: DiGraph<StageNode, DataEdge>,
    index: BTreeMap<String, NodeIndex>,
    /// `(rule stage, store stage)` query references, drawn dashed.
    pub store_refs: Vec<(String, String)>,
}

impl PipelineGraph {
    /// Builds the graph; inputs that name unknown stages or ports are skipped
    /// (the compiler reports them).
    pub fn build(stages: &BTreeMap<String, CompiledStage>) -> Self {
        let mut g = PipelineGraph::default();
        for (id, st) in stages {
            let n = g.graph.add_node(StageNode {
                id: id.clone(),
                kind: st.kind,
            });
            g.index.insert(id.clone(), n);
        }
        for (id, st) in stages {
            for input in &st.inputs {
                let (Some(&from), Some(&to)) = (g.index.get(&input.stage), g.index.get(id)) else {
                    continue;
                };
                let Some(up) = stages.get(&input.stage) else {
                    continue;
                };
                let Some(port) = up
                    .config
                    .outputs()
                    .into_iter()
                    .find(|p| p.name == input.port)
                else {
                    continue;
                };
                g.graph.add_edge(
                    from,
                    to,
                    DataEdge {
                        port: input.port.clone(),
                        message: port.message,
                    },
                );
            }
            for store in st.config.store_refs() {
                g.store_refs.push((id.clone(), store));
            }
        }
        g
    }

    /// A cycle, as the stage ids along it, if there is one.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        for scc in tarjan_scc(&self.graph) {
            let is_cycle = scc.len() > 1
                || scc
                    .first()
                    .is_some_and(|&n| self.graph.find_edge(n, n).is_some());
            if is_cycle {
                let mut ids: Vec<String> = scc.iter().map(|&n| self.graph[n].id.clone()).collect();
                ids.reverse();
                return Some(ids);
            }
        }
        None
    }

    /// Stage ids upstream first (sources first). Falls back to id order for
    /// a cyclic graph, which compile never produces.
    pub fn upstream_first(&self) -> Vec<String> {
        match toposort(&self.graph, None) {
            Ok(order) => order.iter().map(|&n| self.graph[n].id.clone()).collect(),
            Err(_) => self.index.keys().cloned().collect(),
        }
    }

    /// Graphviz DOT: stages as nodes labelled with their kind, edges
    /// labelled with their message type (and port).
    pub fn to_dot(&self, name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_id(name));
        out.push_str("  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n");
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let _ = writeln!(
                out,
                "  {} [label=\"{}\\n({})\"];",
                dot_id(&node.id),
                node.id,
                node.kind
            );
        }
        for e in self.graph.edge_indices() {
            let Some((a, b)) = self.graph.edge_endpoints(e) else {
                continue;
            };
            let edge = &self.graph[e];
            let label = if edge.port.is_empty() {
                edge.message.to_string()
            } else {
                format!("{} ({})", edge.message, edge.port)
            };
            let _ = writeln!(
                out,
                "  {} -> {} [label=\"{}\"];",
                dot_id(&self.graph[a].id),
                dot_id(&self.graph[b].id),
                label
            );
        }
        for (rule, store) in &self.store_refs {
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label=\"query\"];",
                dot_id(store),
                dot_id(rule)
            );
        }
        out.push_str("}\n");
        out
    }
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
