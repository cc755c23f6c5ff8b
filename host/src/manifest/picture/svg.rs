//! The picture as SVG, laid out here: boxes in columns by their longest path from a
//! source (feedback edges left out, so loops still have a direction), each column
//! ordered by where its inputs sit, arrows as curves — forward ones left to right,
//! feedback ones back below the boxes.
//!
//! With `live`, every box has three more lines of `<tspan data-field=…>` for the admin
//! page to fill from the status, inside a `<g data-vertex="<kind>:<id>">`.

use std::collections::HashMap;
use std::fmt::Write;

use super::{Arrow, Item, Shape, Style};

/// Width of a character of the 12px font, near enough to size boxes by.
const CHAR: f64 = 7.0;
/// Space between columns (room for an arrow's label), and between boxes of a column.
const COLUMN_GAP: f64 = 110.0;
const ROW_GAP: f64 = 26.0;
const MARGIN: f64 = 20.0;
const LINE: f64 = 15.0;

/// The live lines of a box: text before each field, and the field.
fn live_lines(shape: Shape) -> &'static [&'static [(&'static str, &'static str)]] {
    match shape {
        Shape::Source => &[&[("read ", "read")], &[("", "rate"), (" msg/s", "")], &[]],
        Shape::Node => &[
            &[("in ", "received"), (" · ", "rate"), (" msg/s", "")],
            &[("errors ", "errors"), (" · queue ", "queue")],
            &[("v", "version"), (" · lag ", "lag")],
        ],
        Shape::Sink => &[
            &[("wrote ", "written"), (" · ", "rate"), (" msg/s", "")],
            &[("queue ", "queue")],
            &[("lag ", "lag")],
        ],
        Shape::Store => &[&[("keys ", "keys")], &[("bytes ", "bytes")], &[]],
    }
}

/// Text for SVG.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where a box is drawn.
#[derive(Clone, Copy, Default)]
struct Place {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// Each box's column: its longest path from a box with no arrows in (feedback arrows
/// left out, so the rest is acyclic for a valid graph; a box on a cycle anyway stays in
/// the first column).
fn columns(boxes: &[Item], arrows: &[(usize, usize, &Arrow)]) -> Vec<usize> {
    let mut ins = vec![0usize; boxes.len()];
    for (_, to, _) in arrows.iter().filter(|a| !a.2.feedback) {
        ins[*to] += 1;
    }
    let mut column = vec![0usize; boxes.len()];
    let mut ready: Vec<usize> = (0..boxes.len()).filter(|&i| ins[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for (from, to, _) in arrows.iter().filter(|a| !a.2.feedback && a.0 == i) {
            column[*to] = column[*to].max(column[*from] + 1);
            ins[*to] -= 1;
            if ins[*to] == 0 {
                ready.push(*to);
            }
        }
    }
    column
}

/// The drawing of one graph's boxes and arrows.
pub(super) fn draw(name: &str, boxes: &[Item], arrows: &[Arrow], live: bool) -> String {
    let index: HashMap<&str, usize> = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i))
        .collect();
    let arrows: Vec<(usize, usize, &Arrow)> = arrows
        .iter()
        .filter_map(|a| Some((*index.get(a.from.as_str())?, *index.get(a.to.as_str())?, a)))
        .collect();
    let column = columns(boxes, &arrows);
    let count = column.iter().max().map_or(0, |m| m + 1);
    let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, c) in column.iter().enumerate() {
        by_column[*c].push(i);
    }
    // Each column in the order of its inputs' rows (the mean row of what leads in).
    let mut row = vec![0.0f64; boxes.len()];
    for members in &mut by_column {
        let key = |i: usize| {
            let from: Vec<f64> = arrows
                .iter()
                .filter(|a| a.1 == i && column[a.0] < column[i])
                .map(|a| row[a.0])
                .collect();
            match from.len() {
                0 => f64::MAX,
                n => from.iter().sum::<f64>() / n as f64,
            }
        };
        members.sort_by(|a, b| key(*a).total_cmp(&key(*b)));
        for (r, i) in members.iter().enumerate() {
            row[*i] = r as f64;
        }
    }

    let lines = if live { 4.0 } else { 1.0 };
    let height = 16.0 + lines * LINE;
    let width = |b: &Item| {
        let live = if live { 24 } else { 0 };
        (b.label.chars().count().max(live) as f64 * CHAR + 28.0).max(110.0)
    };
    let mut place = vec![Place::default(); boxes.len()];
    let mut x = MARGIN;
    let tallest = by_column
        .iter()
        .map(|c| c.len() as f64 * (height + ROW_GAP) - ROW_GAP)
        .fold(0.0, f64::max);
    for members in &by_column {
        let w = members.iter().map(|i| width(&boxes[*i])).fold(0.0, f64::max);
        let tall = members.len() as f64 * (height + ROW_GAP) - ROW_GAP;
        let mut y = MARGIN + (tallest - tall) / 2.0;
        for i in members {
            place[*i] = Place { x, y, w, h: height };
            y += height + ROW_GAP;
        }
        x += w + COLUMN_GAP;
    }
    let bottom = MARGIN + tallest;
    let loops = arrows.iter().any(|a| a.2.feedback);
    let (total_w, total_h) = (
        x - COLUMN_GAP + MARGIN,
        bottom + MARGIN + if loops { 60.0 } else { 0.0 },
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="flowhost-graph" viewBox="0 0 {total_w:.0} {total_h:.0}" width="{total_w:.0}" height="{total_h:.0}" font-family="sans-serif" font-size="12">
<title>{}</title>
<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##,
        escaped(name)
    );
    for (from, to, a) in &arrows {
        let (p, q) = (place[*from], place[*to]);
        let (path, label_at) = if a.feedback {
            // Back below the boxes, bottom to bottom.
            let (x1, x2) = if from == to {
                (p.x + p.w * 0.7, p.x + p.w * 0.3)
            } else {
                (p.x + p.w / 2.0, q.x + q.w / 2.0)
            };
            let (y1, y2, low) = (p.y + p.h, q.y + q.h, bottom + 45.0);
            (
                format!("M{x1:.1},{y1:.1} C{x1:.1},{low:.1} {x2:.1},{low:.1} {x2:.1},{y2:.1}"),
                ((x1 + x2) / 2.0, low - 8.0),
            )
        } else {
            let (x1, y1, x2, y2) = (p.x + p.w, p.y + p.h / 2.0, q.x, q.y + q.h / 2.0);
            let bend = (x2 - x1).abs().max(40.0) / 2.0;
            (
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                    x1 + bend,
                    x2 - bend
                ),
                ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 4.0),
            )
        };
        let style = match (a.style, a.feedback) {
            (Style::Data, false) => r##"stroke="#555" marker-end="url(#head)""##,
            (Style::Data, true) => r##"stroke="#2060c0" marker-end="url(#head)""##,
            (Style::DeadLetter, _) => r##"stroke="#c03030" stroke-dasharray="6 4" marker-end="url(#head)""##,
            (Style::Grant, _) => r##"stroke="#888" stroke-dasharray="2 3""##,
        };
        let _ = writeln!(
            out,
            r##"<g class="arrow" data-from="{}" data-to="{}"><path d="{path}" fill="none" {style}/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#666">{}</text></g>"##,
            escaped(&boxes[*from].vertex),
            escaped(&boxes[*to].vertex),
            label_at.0,
            label_at.1,
            escaped(&a.label)
        );
    }
    for (b, p) in boxes.iter().zip(&place) {
        let Place { x, y, w, h } = *p;
        let shape = match b.shape {
            Shape::Source => format!(
                r##"<polygon points="{x:.1},{y:.1} {:.1},{y:.1} {:.1},{:.1} {:.1},{:.1} {x:.1},{:.1}" fill="#eef6ee" stroke="#4a8a4a"/>"##,
                x + w - 12.0,
                x + w,
                y + h / 2.0,
                x + w - 12.0,
                y + h,
                y + h
            ),
            Shape::Node => format!(
                r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="8" fill="#eef2fa" stroke="#4a6aa8"/>"##
            ),
            Shape::Sink => format!(
                r##"<polygon points="{:.1},{y:.1} {:.1},{y:.1} {:.1},{:.1} {x:.1},{:.1}" fill="#faf3e6" stroke="#a8844a"/>"##,
                x + 8.0,
                x + w,
                x + w - 8.0,
                y + h,
                y + h
            ),
            Shape::Store => format!(
                r##"<path d="M{x:.1},{:.1} a{:.1},6 0 0 1 {w:.1},0 v{:.1} a{:.1},6 0 0 1 -{w:.1},0 z M{x:.1},{:.1} a{:.1},6 0 0 0 {w:.1},0" fill="#f4eefa" stroke="#7a4aa8"/>"##,
                y + 6.0,
                w / 2.0,
                h - 12.0,
                w / 2.0,
                y + 6.0,
                w / 2.0
            ),
        };
        let _ = write!(
            out,
            r##"<g class="box" data-vertex="{}">{shape}<text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"##,
            escaped(&b.vertex),
            x + 12.0,
            y + 8.0 + LINE,
            escaped(&b.label)
        );
        if live {
            for (n, parts) in live_lines(b.shape).iter().enumerate() {
                let _ = write!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" fill="#333">"##,
                    x + 12.0,
                    y + 8.0 + LINE * (n as f64 + 2.0)
                );
                for (before, field) in *parts {
                    let _ = write!(out, "{}", escaped(before));
                    if !field.is_empty() {
                        let _ = write!(out, r#"<tspan data-field="{field}">–</tspan>"#);
                    }
                }
                out.push_str("</text>");
            }
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// The picture of `graph` as SVG; with `live`, room in every box for the admin page's
/// numbers.
pub fn svg(graph: &crate::manifest::Graph, live: bool) -> String {
    let (boxes, arrows) = super::layout(graph);
    draw(&graph.name, &boxes, &arrows, live)
}
