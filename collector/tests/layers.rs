//! The collector's modules depend downward only: no import cycle between
//! the top-level modules of `src/`, and every import goes down `FLOORS`,
//! the order ARCHITECTURE.md and `lib.rs` give. A path `crate::x` in any
//! file of module `m` (a `use`, or a path written inline) is an edge
//! `m -> x`; the crate writes every reference to another module that way.
//! Run alone with `cargo test --release --workspace --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The collector's modules, top floor first; a module may use only those
/// on floors below its own. A new module takes its place here.
const FLOORS: &[&[&str]] = &[
    &["server"],
    &["bootstrap"],
    &["ingest"],
    &["api"],
    &["error"],
    &["auth"],
    &["tls"],
    &["config"],
    &["alerts"],
    &["analytics"],
    &["analyze"],
    &["store"],
    &["decode"],
    &[
        "record",
        "query",
        "clock",
        "metrics",
        "geoip",
        "listen",
        "background",
        "offline",
    ],
];

/// Edges of `graph` that do not go down `floors`, and modules not on any.
fn upward(graph: &Graph, floors: &[&[&str]]) -> Vec<String> {
    let floor = |m: &str| floors.iter().position(|f| f.contains(&m));
    let mut wrong = Vec::new();
    for (m, uses) in graph {
        let Some(mine) = floor(m) else {
            wrong.push(format!("{m} is on no floor"));
            continue;
        };
        for x in uses {
            match floor(x) {
                None => wrong.push(format!("{x} (used by {m}) is on no floor")),
                Some(theirs) if theirs <= mine => wrong.push(format!("{m} -> {x}")),
                Some(_) => {}
            }
        }
    }
    wrong
}

/// The top-level modules each module's files name.
fn graph_of(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = Path::new(first.as_os_str())
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let edges = graph.entry(module.clone()).or_default();
        for target in crate_paths(&text) {
            if target != module {
                edges.insert(target);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The first segment of every `crate::` path in `text`, outside line
/// comments; `crate::{a, b::c}` names `a` and `b`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let mut depth = 1;
                    let mut start = true;
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 1 => break,
                            '}' => depth -= 1,
                            ',' if depth == 1 => start = true,
                            c if c.is_whitespace() => {}
                            _ if start => {
                                out.insert(ident(&group[i..]));
                                start = false;
                            }
                            _ => {}
                        }
                    }
                }
                None => {
                    out.insert(ident(rest));
                }
            }
        }
    }
    out.remove("");
    out
}

/// A cycle of `graph`, as the modules along it, if it has one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).expect("on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut marks, &mut Vec::new()))
}

#[test]
fn the_collectors_modules_import_only_downward_and_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph_of(&src);
    // The reader must see the crate, or this passes on nothing.
    for (module, uses) in [
        ("server", "store"),
        ("api", "analytics"),
        ("alerts", "store"),
    ] {
        assert!(
            graph.get(module).is_some_and(|e| e.contains(uses)),
            "{module} -> {uses} not found in {}: {graph:?}",
            src.display()
        );
    }
    if let Some(c) = cycle(&graph) {
        panic!(
            "an import cycle between the collector's modules: {}\nwhere each goes: {graph:#?}",
            c.join(" -> ")
        );
    }
    let wrong = upward(&graph, FLOORS);
    assert!(
        wrong.is_empty(),
        "imports that do not go down FLOORS (move the code, or the module's floor here and in ARCHITECTURE.md): {wrong:?}"
    );
}

#[test]
fn paths_and_cycles_are_found() {
    let text = "use crate::store::{Store, StoreError};\n\
                use crate::{alerts::rules::Kind, clock};\n\
                let x = crate::geoip::GeoIp::open(p); // crate::not_this\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["alerts", "clock", "geoip", "store"]);

    let graph = |edges: &[(&str, &str)]| -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(
        cycle(&graph(&[
            ("api", "store"),
            ("alerts", "store"),
            ("api", "alerts")
        ])),
        None
    );
    assert_eq!(
        cycle(&graph(&[
            ("api", "alerts"),
            ("alerts", "store"),
            ("store", "api")
        ])),
        Some(vec![
            "alerts".to_string(),
            "store".into(),
            "api".into(),
            "alerts".into()
        ])
    );
}
