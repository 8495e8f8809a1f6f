//! The layering of the proxy crate, checked on its source: imports point one way, down. A module
//! may import only modules of a lower layer; the pure core imports nothing but the pure core; the
//! delivery workers know no wire format; only the HTTP edge, the APIs and the CLI speak in status
//! codes. ARCHITECTURE.md states these rules; this test keeps them true.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module's layer, lowest first. A module imports only lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("wire", 0),
    ("signature", 0),
    ("clock", 0),
    ("background", 0),
    ("fixtures", 0),
    ("route", 1),
    ("config", 2),
    ("verify", 3),
    ("plan", 3),
    ("recent", 3),
    ("metrics", 4),
    ("http", 4),
    ("deliver", 5),
    ("ingest", 6),
    ("retention", 6),
    ("inboxes", 6),
    ("api", 7),
    ("serve", 8),
    ("reload", 9),
    ("cli", 10),
];

/// The pure core: no I/O, and imports nothing outside itself.
const PURE: &[&str] =
    &["wire", "signature", "route", "config", "verify", "plan", "fixtures", "deliver::policy", "deliver::breaker"];

/// What doing I/O looks like in source: the pure core contains none of it.
const IO: &[&str] = &[
    "std::fs",
    "std::env",
    "std::process",
    "std::net::Tcp",
    "tokio",
    "sled::",
    "is_file()",
    "SystemTime::now",
    "Instant::now",
];

/// Where status codes may be made or read.
const HTTP_SPEAKERS: &[&str] = &["http", "api", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `deliver/policy.rs` → ["deliver", "policy"]; `lib.rs`, `main.rs` and test files → None.
fn module(path: &Path) -> Option<Vec<String>> {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.iter().any(|p| p == "tests") || ["lib", "main"].contains(&parts[0].as_str()) {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// The top-level modules a file names through `crate::` (comments and inline tests left out).
fn imports(text: &str) -> BTreeSet<String> {
    let code = code_of(text);
    let mut found = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                found.extend(top_level_items(group).iter().map(|g| ident(g.trim())).filter(|g| !g.is_empty()))
            }
            None => {
                found.insert(ident(rest));
            }
        }
    }
    found
}

/// The items of a `{a::{b, c}, d}` group (given without its opening brace), split at the
/// commas of its own level.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// Code without comments and without an inline test module.
fn code_of(text: &str) -> String {
    text.split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn layer(module: &str) -> u8 {
    LAYERS.iter().find(|(m, _)| *m == module).unwrap_or_else(|| panic!("module {module} has no layer in LAYERS")).1
}

#[test]
fn imports_point_down_and_the_pure_core_stays_pure() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let Some(parts) = module(&path) else { continue };
        let text = std::fs::read_to_string(&path).unwrap();
        let (top, full) = (parts[0].as_str(), parts.join("::"));
        let pure = PURE.contains(&full.as_str()) || PURE.contains(&top);
        for used in imports(&text) {
            if used == top {
                continue;
            }
            if layer(&used) >= layer(top) {
                wrong.push(format!("{full} imports {used}, which is not below it"));
            }
            if pure && !PURE.contains(&used.as_str()) {
                wrong.push(format!("{full} is pure core but imports {used}"));
            }
            if top == "deliver" && used == "wire" {
                wrong.push(format!("{full} uses wire types; deliver/ hands domain values up"));
            }
        }
        if pure {
            let code = code_of(&text);
            for io in IO.iter().filter(|io| code.contains(*io)) {
                wrong.push(format!("{full} is pure core but does I/O ({io})"));
            }
        }
        if text.contains("StatusCode") && !HTTP_SPEAKERS.contains(&top) {
            wrong.push(format!("{full} speaks in HTTP status codes; only {HTTP_SPEAKERS:?} may"));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    // The checker itself: a config file importing the delivery workers is caught.
    let found =
        imports("use crate::deliver::Deliveries;\nuse crate::{route::{A, B}, wire::admin, plan};\n// crate::cli\n");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["deliver", "plan", "route", "wire"]);
    assert!(layer("deliver") >= layer("config"));
}
