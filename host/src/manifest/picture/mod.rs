//! `flowhost graph`: a validated graph as Graphviz DOT, a Mermaid flowchart or an SVG
//! drawing of its own — sources, nodes (replicas, error policy), sinks, stores and
//! grants; each edge labelled with its ports (when not the default ones) and how it
//! spreads messages over replicas. The admin endpoint's page draws the same SVG, with
//! room in each box for live numbers.

use std::fmt::Write;

mod svg;

pub use svg::svg;

use super::{Access, Connection, ErrorPolicy, Graph, SinkKind, SourceKind, Vertex};

/// The picture formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz (`dot -Tsvg`).
    Dot,
    /// Mermaid (GitHub renders it in Markdown).
    Mermaid,
    /// SVG, laid out by flowhost (no Graphviz needed).
    Svg,
}

/// One box of the picture.
struct Item {
    id: String,
    /// `<kind>:<id>` (`source:in`, `node:pass`, `sink:out`, `store:counts`): how the
    /// admin page finds a box's live numbers in the status.
    vertex: String,
    label: String,
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    Source,
    Node,
    Sink,
    Store,
}

/// One arrow of the picture.
struct Arrow {
    from: String,
    to: String,
    label: String,
    style: Style,
    /// A feedback edge: it closes a loop, so it is drawn going back.
    feedback: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Data,
    DeadLetter,
    Grant,
}

fn connection(c: Connection) -> &'static str {
    match c {
        Connection::RoundRobin => "round-robin",
        Connection::KeyHash => "key-hash",
        Connection::Broadcast => "broadcast",
    }
}

/// Boxes and arrows of `graph`, in a stable order.
fn layout(graph: &Graph) -> (Vec<Item>, Vec<Arrow>) {
    let vid = |v: Vertex| match v {
        Vertex::Source(i) => format!("source_{}", graph.sources[i].id),
        Vertex::Node(i) => format!("node_{}", graph.nodes[i].id),
        Vertex::Sink(i) => format!("sink_{}", graph.sinks[i].id),
    };
    let ident = |s: &str| s.replace('-', "_");
    let mut boxes = Vec::new();
    let mut push = |id: String, label: String, shape| {
        let (kind, name) = id.split_once('_').expect("<kind>_<id>");
        boxes.push(Item {
            id: ident(&id),
            vertex: format!("{kind}:{name}"),
            label,
            shape,
        })
    };
    for (i, s) in graph.sources.iter().enumerate() {
        let kind = match &s.kind {
            SourceKind::File { .. } => "file",
            SourceKind::Jsonl { .. } => "jsonl",
            SourceKind::Messages { .. } => "messages",
            SourceKind::Stdin => "stdin",
            SourceKind::Generator { .. } => "generator",
            SourceKind::Kafka { topic } => &format!("kafka {topic}"),
            SourceKind::Http(h) => &format!("http {}{}", h.listen, h.path),
        };
        let time = match s.watermark {
            Some(w) => format!(", watermark −{} ms", w.out_of_orderness.as_millis()),
            None => String::new(),
        };
        push(
            vid(Vertex::Source(i)),
            format!("{} ({kind}{time})", s.id),
            Shape::Source,
        );
    }
    for (i, n) in graph.nodes.iter().enumerate() {
        let mut label = n.id.clone();
        if n.replicas > 1 {
            let _ = write!(label, " ×{}", n.replicas);
        }
        match n.on_error {
            ErrorPolicy::Stop => {}
            ErrorPolicy::Skip => label.push_str(", on_error skip"),
            ErrorPolicy::DeadLetter(_) => label.push_str(", on_error dead-letter"),
        }
        push(vid(Vertex::Node(i)), label, Shape::Node);
    }
    for (i, s) in graph.sinks.iter().enumerate() {
        let kind = match &s.kind {
            SinkKind::Stdout => "stdout",
            SinkKind::File(_) => "file",
            SinkKind::Null => "null",
            SinkKind::Kafka(topic) => &format!("kafka {topic}"),
            SinkKind::Reply => "reply",
        };
        push(vid(Vertex::Sink(i)), format!("{} ({kind})", s.id), Shape::Sink);
    }
    for s in &graph.stores {
        let durability = format!("{:?}", s.durability).to_lowercase();
        push(
            format!("store_{}", s.name),
            format!("{} ({durability})", s.name),
            Shape::Store,
        );
    }

    let mut arrows = Vec::new();
    for e in &graph.edges {
        let out_port = match e.from {
            Vertex::Node(i) => Some(&graph.nodes[i].outputs[e.from_port as usize]),
            _ => None,
        };
        let in_port = match e.to {
            Vertex::Node(j) => Some(&graph.nodes[j].inputs[e.to_port as usize]),
            _ => None,
        };
        let mut label = String::new();
        let ports = (
            out_port.filter(|p| *p != crate::DEFAULT_OUTPUT),
            in_port.filter(|p| *p != crate::DEFAULT_INPUT),
        );
        match ports {
            (Some(o), Some(i)) => {
                let _ = write!(label, "{o} → {i}, ");
            }
            (Some(o), None) => {
                let _ = write!(label, "{o}, ");
            }
            (None, Some(i)) => {
                let _ = write!(label, "→ {i}, ");
            }
            (None, None) => {}
        }
        label.push_str(connection(e.connection));
        if let Some(f) = e.feedback {
            label.push_str(", feedback");
            if let Some(max) = f.max_iterations {
                let _ = write!(label, " ≤ {max}×");
            }
        }
        arrows.push(Arrow {
            from: ident(&vid(e.from)),
            to: ident(&vid(e.to)),
            label,
            style: Style::Data,
            feedback: e.feedback.is_some(),
        });
    }
    for (i, n) in graph.nodes.iter().enumerate() {
        if let ErrorPolicy::DeadLetter(k) = n.on_error {
            arrows.push(Arrow {
                from: ident(&vid(Vertex::Node(i))),
                to: ident(&vid(Vertex::Sink(k))),
                label: "dead letters".into(),
                style: Style::DeadLetter,
                feedback: false,
            });
        }
        for (store, access) in &n.state {
            let access = match access {
                Access::Read => "r",
                Access::ReadWrite => "rw",
            };
            arrows.push(Arrow {
                from: ident(&vid(Vertex::Node(i))),
                to: ident(&format!("store_{store}")),
                label: access.into(),
                style: Style::Grant,
                feedback: false,
            });
        }
    }
    (boxes, arrows)
}

fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The picture of `graph` in `format`.
pub fn render(graph: &Graph, format: Format) -> String {
    let (boxes, arrows) = layout(graph);
    let mut out = String::new();
    match format {
        Format::Svg => out = svg::draw(&graph.name, &boxes, &arrows, false),
        Format::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{\n  rankdir=LR;", quoted(&graph.name));
            for b in &boxes {
                let shape = match b.shape {
                    Shape::Source => "cds",
                    Shape::Node => "box, style=rounded",
                    Shape::Sink => "folder",
                    Shape::Store => "cylinder",
                };
                let _ = writeln!(out, "  {} [label=\"{}\", shape={shape}];", b.id, quoted(&b.label));
            }
            for a in &arrows {
                let style = match a.style {
                    Style::Data => "",
                    Style::DeadLetter => ", style=dashed, color=red",
                    Style::Grant => ", style=dotted, arrowhead=none",
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{}\"{style}];",
                    a.from,
                    a.to,
                    quoted(&a.label)
                );
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            let _ = writeln!(out, "flowchart LR");
            for b in &boxes {
                let label = b.label.replace('"', "#quot;");
                let _ = match b.shape {
                    Shape::Source => writeln!(out, "  {}>\"{label}\"]", b.id),
                    Shape::Node => writeln!(out, "  {}(\"{label}\")", b.id),
                    Shape::Sink => writeln!(out, "  {}[/\"{label}\"/]", b.id),
                    Shape::Store => writeln!(out, "  {}[(\"{label}\")]", b.id),
                };
            }
            for a in &arrows {
                let arrow = match a.style {
                    Style::Data => "-->",
                    Style::DeadLetter => "-.->",
                    Style::Grant => "-.-",
                };
                let _ = writeln!(
                    out,
                    "  {} {arrow}|\"{}\"| {}",
                    a.from,
                    a.label.replace('"', "#quot;"),
                    a.to
                );
            }
        }
    }
    out
}
