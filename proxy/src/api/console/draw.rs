//! Pictures drawn on the server as inline SVG, and JSON coloured as HTML: no script draws
//! anything, so a page is whole as it arrives and the content security policy can forbid inline
//! scripts outright. Every text that came from an event goes through maud's escaping.

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde_json::Value;

use crate::recent::Edge;

/// A minute-by-minute bar chart of the last hour: delivered up, failed down from the middle.
pub fn sparkline(per_minute: &[(u64, u64)]) -> Markup {
    let (w, h, mid) = (180.0, 36.0, 24.0);
    let top = per_minute.iter().map(|m| m.0.max(m.1)).max().unwrap_or(0).max(1) as f64;
    let bar = w / per_minute.len().max(1) as f64;
    html! {
        svg.spark xmlns="http://www.w3.org/2000/svg" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)}
            role="img" aria-label="deliveries per minute, last hour" {
            line x1="0" y1=(mid) x2=(w) y2=(mid) class="axis" {}
            @for (i, (ok, failed)) in per_minute.iter().enumerate() {
                @if *ok > 0 {
                    @let hh = (*ok as f64 / top * (mid - 2.0)).max(1.0);
                    rect class="ok" x=(fmt(i as f64 * bar)) y=(fmt(mid - hh)) width=(fmt(bar - 0.5)) height=(fmt(hh)) {}
                }
                @if *failed > 0 {
                    @let hh = (*failed as f64 / top * (h - mid - 1.0)).max(1.0);
                    rect class="bad" x=(fmt(i as f64 * bar)) y=(mid) width=(fmt(bar - 0.5)) height=(fmt(hh)) {}
                }
            }
        }
    }
}

fn fmt(x: f64) -> String {
    format!("{x:.1}")
}

/// Where events went in the last hour: sources on the left, what routed them (rule, owner,
/// default, a drop) in the middle, destinations on the right; each edge labelled with its count.
pub fn flow(edges: &[(Edge, u64)]) -> Markup {
    if edges.is_empty() {
        return html! { p.empty { "No events in the last hour." } };
    }
    const NOWHERE: &str = "(delivered nowhere)";
    let mut left: BTreeMap<&str, u64> = BTreeMap::new();
    let mut middle: BTreeMap<&str, u64> = BTreeMap::new();
    let mut right: BTreeMap<&str, u64> = BTreeMap::new();
    let mut in_edges: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut out_edges: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (e, n) in edges {
        let to = e.destination.as_deref().unwrap_or(NOWHERE);
        *left.entry(&e.source).or_default() += n;
        *middle.entry(&e.via).or_default() += n;
        *right.entry(to).or_default() += n;
        *in_edges.entry((&e.source, &e.via)).or_default() += n;
        *out_edges.entry((&e.via, to)).or_default() += n;
    }
    // Each column ordered by where its inputs sit (the barycentre), so edges cross as little
    // as they can; sources by name.
    let left: Vec<(&str, u64)> = left.into_iter().collect();
    let middle = by_barycentre(middle, &in_edges, &left);
    let right = by_barycentre(right, &out_edges, &middle);
    let rows = left.len().max(middle.len()).max(right.len());
    let (w, row_h, node_w, node_h) = (760.0, 34.0, 170.0, 24.0);
    let h = rows as f64 * row_h + 10.0;
    let xs = [10.0, (w - node_w) / 2.0, w - node_w - 10.0];
    let y_of = |column: &[(&str, u64)], name: &str| {
        let i = column.iter().position(|(k, _)| *k == name).unwrap_or(0);
        let offset = (rows - column.len()) as f64 * row_h / 2.0;
        offset + i as f64 * row_h + 5.0 + node_h / 2.0
    };
    let max = edges.iter().map(|(_, n)| *n).max().unwrap_or(1) as f64;
    let stroke = |n: u64| fmt(1.5 + 6.0 * (n as f64).ln_1p() / max.ln_1p().max(1.0));
    let path = |x1: f64, y1: f64, x2: f64, y2: f64| {
        let c = (x1 + x2) / 2.0;
        format!("M{} {} C{} {} {} {} {} {}", fmt(x1), fmt(y1), fmt(c), fmt(y1), fmt(c), fmt(y2), fmt(x2), fmt(y2))
    };
    let edge = |from_col: usize, from: (&[(&str, u64)], &str), to: (&[(&str, u64)], &str), n: u64| {
        let (x1, x2) = (xs[from_col] + node_w, xs[from_col + 1]);
        let (y1, y2) = (y_of(from.0, from.1), y_of(to.0, to.1));
        // The count sits where the edge arrives, beside the node it feeds: never at a crossing.
        html! {
            path d=(path(x1, y1, x2, y2)) stroke-width=(stroke(n)) class="edge" {}
            text x=(fmt(x2 - 6.0)) y=(fmt(y2 - 5.0)) class="count" { (n) }
        }
    };
    let column = |col: usize, nodes: &[(&str, u64)], kind: &str| {
        html! {
            @for (name, n) in nodes {
                @let y = y_of(nodes, name) - node_h / 2.0;
                @let class = if *name == NOWHERE || (col == 1 && matches!(*name, "unrouted")) { "node nowhere" } else { kind };
                g class=(class) {
                    title { (name) ": " (n) }
                    rect x=(fmt(xs[col])) y=(fmt(y)) width=(node_w) height=(node_h) rx="4" {}
                    text x=(fmt(xs[col] + 8.0)) y=(fmt(y + 16.0)) { (clip(name)) " · " (n) }
                }
            }
        }
    };
    html! {
        svg.flow xmlns="http://www.w3.org/2000/svg" width=(w) height=(fmt(h)) viewBox={"0 0 " (w) " " (fmt(h))}
            role="img" aria-label="sources, rules and destinations of the last hour" {
            @for ((s, v), n) in &in_edges { (edge(0, (&left, s), (&middle, v), *n)) }
            @for ((v, d), n) in &out_edges { (edge(1, (&middle, v), (&right, d), *n)) }
            (column(0, &left, "node source"))
            (column(1, &middle, "node rule"))
            (column(2, &right, "node destination"))
        }
    }
}

/// A column's nodes ordered by the mean position of the nodes that feed them (weighted by
/// count), then by name.
fn by_barycentre<'a>(
    nodes: BTreeMap<&'a str, u64>,
    edges: &BTreeMap<(&'a str, &'a str), u64>,
    before: &[(&'a str, u64)],
) -> Vec<(&'a str, u64)> {
    let position = |name: &str| before.iter().position(|(k, _)| *k == name).unwrap_or(0) as f64;
    let mut ordered: Vec<(f64, &str, u64)> = nodes
        .into_iter()
        .map(|(name, n)| {
            let (sum, weight) = edges
                .iter()
                .filter(|((_, to), _)| *to == name)
                .fold((0.0, 0.0), |(s, w), ((from, _), k)| (s + position(from) * *k as f64, w + *k as f64));
            (if weight > 0.0 { sum / weight } else { 0.0 }, name, n)
        })
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    ordered.into_iter().map(|(_, name, n)| (name, n)).collect()
}

/// Names longer than a node is wide end in an ellipsis (the node's title holds the whole name).
fn clip(name: &str) -> String {
    if name.chars().count() <= 20 {
        name.to_owned()
    } else {
        format!("{}…", name.chars().take(19).collect::<String>())
    }
}

/// A JSON value, pretty-printed with two-space indents, its tokens in spans the stylesheet
/// colours. Strings are escaped by maud like any other text.
pub fn json(value: &Value) -> Markup {
    let mut out = Vec::new();
    json_into(value, 0, &mut out);
    html! { @for part in out { (part) } }
}

fn json_into(value: &Value, depth: usize, out: &mut Vec<Markup>) {
    let pad = |d: usize| "  ".repeat(d);
    match value {
        Value::Null => out.push(html! { span.j-null { "null" } }),
        Value::Bool(b) => out.push(html! { span.j-bool { (b) } }),
        Value::Number(n) => out.push(html! { span.j-num { (n) } }),
        Value::String(s) => out.push(html! { span.j-str { (Value::String(s.clone())) } }),
        Value::Array(items) if items.is_empty() => out.push(html! { "[]" }),
        Value::Object(map) if map.is_empty() => out.push(html! { "{}" }),
        Value::Array(items) => {
            out.push(html! { "[\n" });
            for (i, item) in items.iter().enumerate() {
                out.push(html! { (pad(depth + 1)) });
                json_into(item, depth + 1, out);
                out.push(html! { @if i + 1 < items.len() { "," } "\n" });
            }
            out.push(html! { (pad(depth)) "]" });
        }
        Value::Object(map) => {
            out.push(html! { "{\n" });
            for (i, (k, v)) in map.iter().enumerate() {
                out.push(html! { (pad(depth + 1)) span.j-key { (Value::String(k.clone())) } ": " });
                json_into(v, depth + 1, out);
                out.push(html! { @if i + 1 < map.len() { "," } "\n" });
            }
            out.push(html! { (pad(depth)) "}" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_coloured_and_escaped() {
        let v = serde_json::json!({"name": "<img src=x onerror=alert(1)>", "n": 3, "ok": true, "x": null, "l": [1]});
        let html = json(&v).into_string();
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(html.contains(r#"<span class="j-num">3</span>"#), "{html}");
        assert!(html.contains(r#"<span class="j-key">&quot;name&quot;</span>"#), "{html}");
        assert!(html.contains("[\n    <span class=\"j-num\">1</span>\n  ]"), "{html}");
    }

    #[test]
    fn flow_draws_every_edge_once_and_escapes_names() {
        let e = |s: &str, via: &str, to: Option<&str>| Edge {
            source: s.into(),
            via: via.into(),
            destination: to.map(str::to_owned),
        };
        let svg = flow(&[(e("stripe", "by-type", Some("staging")), 5), (e("stripe", "<b>", None), 2)]).into_string();
        assert_eq!(svg.matches("<path").count(), 4, "{svg}");
        assert!(svg.contains("staging · 5") && svg.contains("(delivered nowhere) · 2"), "{svg}");
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;"), "{svg}");
        assert!(flow(&[]).into_string().contains("No events"));
    }

    #[test]
    fn sparkline_has_a_bar_per_busy_minute() {
        let mut minutes = vec![(0, 0); 60];
        minutes[3] = (4, 0);
        minutes[10] = (1, 2);
        let svg = sparkline(&minutes).into_string();
        assert_eq!(svg.matches("class=\"ok\"").count(), 2);
        assert_eq!(svg.matches("class=\"bad\"").count(), 1);
    }
}
