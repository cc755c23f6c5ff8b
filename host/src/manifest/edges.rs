//! Edges: endpoints and ports resolved, every source, node and sink connected, no cycles.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::raw::RawGraph;
use super::validate::Report;
use super::{
    BROADCAST_IN_PROCESS_ONLY, Connection, Edge, ErrorPolicy, Feedback, NodeSpec, Transport, Vertex,
};
use crate::DEFAULT_INPUT;
use flowhost_sdk::DEFAULT_OUTPUT;

/// Resolves edge endpoints and gives each node its port lists (in name order, default first).
pub(super) fn edges(
    r: &mut Report,
    raw: &RawGraph,
    ids: &BTreeMap<&str, Vertex>,
    nodes: &mut [NodeSpec],
) -> Vec<Edge> {
    let mut resolved = Vec::new();
    let mut seen = BTreeSet::new();
    for e in &raw.edges {
        let label = format!("edge from `{}` to `{}`", e.from.get_ref(), e.to.get_ref());
        let from = endpoint(r, &e.from, ids, &label, true);
        let to = endpoint(r, &e.to, ids, &label, false);
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        if !seen.insert((from.clone(), to.clone())) {
            r.at(e.from.span(), format!("{label} is declared twice"));
        }
        if let Some(t) = &e.topic {
            check_topic(r, t, &label);
        }
        if e.connection == Connection::Broadcast
            && raw.transport.as_ref().map(|t| *t.get_ref()) == Some(Transport::Kafka)
        {
            r.at(e.from.span(), format!("{label}: {BROADCAST_IN_PROCESS_ONLY}"));
        }
        let topic = match (&e.topic, kafka_endpoint(raw, from.0, to.0)) {
            (Some(t), Some(_)) => {
                r.at(
                    t.span(),
                    format!(
                        "{label}: `topic` does not apply: the edge uses its Kafka source's or sink's topic"
                    ),
                );
                None
            }
            (Some(t), None) => Some(t.get_ref().clone()),
            (None, fixed) => fixed,
        };
        let feedback = if let Some(f) = e.feedback.as_ref().filter(|f| *f.get_ref()) {
            if !matches!((from.0, to.0), (Vertex::Node(_), Vertex::Node(_))) {
                r.at(
                    f.span(),
                    format!("{label}: a feedback edge runs from a node to a node"),
                );
            }
            Some(Feedback {
                max_iterations: e.max_iterations.as_ref().map(|m| *m.get_ref()),
            })
        } else {
            if let Some(m) = &e.max_iterations {
                r.at(
                    m.span(),
                    format!("{label}: `max_iterations` applies to a feedback edge (`feedback = true`)"),
                );
            }
            None
        };
        resolved.push((from, to, e.connection, topic, feedback));
    }
    // Port lists: the default port first, then the others by name.
    let mut ports = |v: Vertex, port: &str, outputs: bool| {
        if let Vertex::Node(i) = v {
            let list = if outputs {
                &mut nodes[i].outputs
            } else {
                &mut nodes[i].inputs
            };
            if !list.iter().any(|p| p == port) {
                list.push(port.to_owned());
            }
        }
    };
    for ((from, fp), (to, tp), _, _, _) in &resolved {
        ports(*from, fp, true);
        ports(*to, tp, false);
    }
    for n in nodes.iter_mut() {
        // The default output is always there, connected or not: what a node writes to
        // it unconnected reaches the host, which counts it as dropped.
        if !n.outputs.iter().any(|p| p == DEFAULT_OUTPUT) {
            n.outputs.push(DEFAULT_OUTPUT.to_owned());
        }
        n.inputs.sort_by_key(|p| (p != DEFAULT_INPUT, p.clone()));
        n.outputs.sort_by_key(|p| (p != DEFAULT_OUTPUT, p.clone()));
    }
    let index = |v: Vertex, port: &str, outputs: bool| -> u16 {
        match v {
            Vertex::Node(i) => {
                let list = if outputs {
                    &nodes[i].outputs
                } else {
                    &nodes[i].inputs
                };
                list.iter().position(|p| p == port).unwrap_or(0) as u16
            }
            _ => 0,
        }
    };
    resolved
        .iter()
        .map(|((from, fp), (to, tp), connection, topic, feedback)| Edge {
            from: *from,
            from_port: index(*from, fp, true),
            to: *to,
            to_port: index(*to, tp, false),
            feedback: *feedback,
            connection: *connection,
            topic: topic.clone(),
        })
        .collect()
}

/// The topic of a Kafka source the edge starts at, or of a Kafka sink it ends at.
fn kafka_endpoint(raw: &RawGraph, from: Vertex, to: Vertex) -> Option<String> {
    let topic = match (from, to) {
        (Vertex::Source(i), _) => raw.sources.values().nth(i)?.topic.as_ref(),
        (_, Vertex::Sink(k)) => raw.sinks.values().nth(k)?.topic.as_ref(),
        _ => None,
    };
    topic.map(|t| t.get_ref().clone())
}

/// Kafka's rule for topic names: 1 to 249 of letters, digits, `.`, `_` and `-`.
pub(super) fn check_topic(r: &mut Report, topic: &Spanned<String>, what: &str) {
    let t = topic.get_ref();
    let ok = (1..=249).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && t != "."
        && t != "..";
    if !ok {
        r.at(
            topic.span(),
            format!("{what}: invalid topic name `{t}`: use 1 to 249 letters, digits, `.`, `_` and `-`"),
        );
    }
}

fn endpoint(
    r: &mut Report,
    text: &Spanned<String>,
    ids: &BTreeMap<&str, Vertex>,
    label: &str,
    from: bool,
) -> Option<(Vertex, String)> {
    let (id, port) = match text.get_ref().split_once('.') {
        Some((id, port)) => (id, Some(port)),
        None => (text.get_ref().as_str(), None),
    };
    let default = if from { DEFAULT_OUTPUT } else { DEFAULT_INPUT };
    let Some(&v) = ids.get(id) else {
        let wanted = if from {
            "a source or node"
        } else {
            "a node or sink"
        };
        r.at(text.span(), format!("{label}: `{id}` is not {wanted}"));
        return None;
    };
    match (v, from) {
        (Vertex::Sink(_), true) => r.at(
            text.span(),
            format!("{label}: `{id}` is a sink; edges cannot start at a sink"),
        ),
        (Vertex::Source(_), false) => r.at(
            text.span(),
            format!("{label}: `{id}` is a source; edges cannot end at a source"),
        ),
        _ => {}
    }
    if let Some(port) = port {
        if !matches!(v, Vertex::Node(_)) {
            r.at(
                text.span(),
                format!("{label}: only nodes have ports, `{id}` is a {v}"),
            );
        } else if port.is_empty()
            || !port
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.at(text.span(), format!("{label}: invalid port name `{port}`"));
        }
    }
    Some((v, port.unwrap_or(default).to_owned()))
}

pub(super) fn check_connected(r: &mut Report, raw: &RawGraph, edges: &[Edge], nodes: &[NodeSpec]) {
    let has_in = |v: Vertex| edges.iter().any(|e| e.to == v);
    let has_out = |v: Vertex| edges.iter().any(|e| e.from == v);
    for (i, id) in raw.sources.keys().enumerate() {
        if !has_out(Vertex::Source(i)) {
            r.at(
                id.span(),
                format!("source `{}` is not connected: no edge starts at it", id.get_ref()),
            );
        }
    }
    for (i, id) in raw.nodes.keys().enumerate() {
        if !has_in(Vertex::Node(i)) {
            r.at(
                id.span(),
                format!("node `{}` is not connected: no edge ends at it", id.get_ref()),
            );
        }
    }
    for (i, id) in raw.sinks.keys().enumerate() {
        let dead_letter = nodes.iter().any(|n| n.on_error == ErrorPolicy::DeadLetter(i));
        if !has_in(Vertex::Sink(i)) && !dead_letter {
            r.at(
                id.span(),
                format!("sink `{}` is not connected: no edge ends at it", id.get_ref()),
            );
        }
    }
}

/// Reports each cycle among nodes once, as `a -> b -> a`.
pub(super) fn check_cycles(r: &mut Report, raw: &RawGraph, edges: &[Edge]) {
    let ids: Vec<&Spanned<String>> = raw.nodes.keys().collect();
    // Feedback edges close loops on purpose; every other edge must leave the graph acyclic.
    let next = |i: usize| {
        edges.iter().filter_map(move |e| match (e.from, e.to) {
            (Vertex::Node(a), Vertex::Node(b)) if a == i && e.feedback.is_none() => Some(b),
            _ => None,
        })
    };
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; ids.len()];
    let mut stack = Vec::new();
    fn visit(
        i: usize,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        next: &dyn Fn(usize) -> Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        state[i] = 1;
        stack.push(i);
        for j in next(i) {
            match state[j] {
                0 => visit(j, state, stack, next, found),
                1 => {
                    let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                    found.push(stack[start..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state[i] = 2;
    }
    let mut found = Vec::new();
    let next_vec = |i: usize| next(i).collect::<Vec<_>>();
    for i in 0..ids.len() {
        if state[i] == 0 {
            visit(i, &mut state, &mut stack, &next_vec, &mut found);
        }
    }
    for cycle in found {
        let names: Vec<&str> = cycle.iter().map(|&i| ids[i].get_ref().as_str()).collect();
        let first = names[0];
        r.at(
            ids[cycle[0]].span(),
            format!(
                "cycle between nodes: {} -> {first} (mark the edge that closes it `feedback = true` to make it a loop)",
                names.join(" -> ")
            ),
        );
    }
    // A feedback edge must close a loop: from its consumer back to its producer.
    for e in edges.iter().filter(|e| e.feedback.is_some()) {
        let (Vertex::Node(u), Vertex::Node(v)) = (e.from, e.to) else {
            continue;
        };
        let mut seen = vec![false; ids.len()];
        let mut stack = vec![v];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            stack.extend(next(i));
        }
        if !seen[u] {
            let (from, to) = (ids[u].get_ref(), ids[v].get_ref());
            let named = |end: &Spanned<String>, id: &str| end.get_ref().split('.').next() == Some(id);
            let span = raw
                .edges
                .iter()
                .filter_map(|re| Some((re, re.feedback.as_ref().filter(|f| *f.get_ref())?)))
                .find(|(re, _)| named(&re.from, from) && named(&re.to, to))
                .map_or(0..0, |(_, f)| f.span());
            r.at(
                span,
                format!("edge from `{from}` to `{to}` is a feedback edge but closes no loop: nothing leads from `{to}` back to `{from}`"),
            );
        }
    }
}

/// A node whose default output has no edge while a named one does: what it writes to
/// `out` would be dropped — likely a typo in the edge (`parse.errors` for `parse`).
pub(super) fn check_default_outputs(r: &mut Report, raw: &RawGraph, edges: &[Edge], nodes: &[NodeSpec]) {
    for (i, (id, _)) in raw.nodes.iter().enumerate() {
        let from_here: Vec<u16> = edges
            .iter()
            .filter(|e| e.from == Vertex::Node(i))
            .map(|e| e.from_port)
            .collect();
        let outputs = &nodes[i].outputs;
        let default = outputs.iter().position(|p| p == DEFAULT_OUTPUT).map(|p| p as u16);
        if !from_here.is_empty() && !default.is_some_and(|d| from_here.contains(&d)) {
            let named: Vec<String> = from_here
                .iter()
                .map(|&p| format!("`{}.{}`", id.get_ref(), outputs[p as usize]))
                .collect();
            r.warn_at(
                id.span(),
                format!(
                    "node `{}`: no edge leaves its default port `{DEFAULT_OUTPUT}`, only {}: what it writes to `{DEFAULT_OUTPUT}` is dropped",
                    id.get_ref(),
                    named.join(", ")
                ),
            );
        }
    }
}
