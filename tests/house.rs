//! The shape of the code: no import circles between modules, and no
//! source file too long to read. Both read the sources, so a change that
//! breaks either fails here, with the offending modules or files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed, tests included.
const MAX_LINES: usize = 1_200;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => None,
        _ => Some(parts.join("::")),
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths named after each `prefix` in `text`: `prefix a::b::C`
/// gives `a::b::C`, and `prefix {a::X, b}` gives `a::X` and `b`.
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first level of a group: `{a::{X, Y}, b}` -> a, b.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => out.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            out.push(item);
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| is_ident(*c) || *c == ':')
                    .collect(),
            );
        }
    }
    out.into_iter()
        .map(|p| p.trim().trim_end_matches(':').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The module graph of `src/`, test code left out: module -> modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for file in &files {
        if let Some(module) = module_of(&src, file) {
            texts.insert(module, std::fs::read_to_string(file).unwrap());
        }
    }
    // Modules declared `#[cfg(test)] mod x;` are tests, not part of the house.
    let mut test_modules = BTreeSet::new();
    for (module, text) in &texts {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]" {
                let decl = pair[1]
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ");
                if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
                    test_modules.insert(format!("{module}::{name}"));
                }
            }
        }
    }
    let is_test = |m: &str| {
        test_modules
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    };
    let modules: BTreeSet<String> = texts.keys().filter(|m| !is_test(m)).cloned().collect();
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut graph = BTreeMap::new();
    for module in &modules {
        let text = &texts[module];
        let code = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or(text);
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut uses = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            uses.extend(resolve(&path));
        }
        for path in paths_after(&code, "super::") {
            let full = if parent.is_empty() {
                path.clone()
            } else {
                format!("{parent}::{path}")
            };
            match resolve(&full) {
                Some(m) if m != *module => {
                    uses.insert(m);
                }
                _ if !parent.is_empty() => {
                    uses.insert(parent.to_string());
                }
                _ => {}
            }
        }
        // Children used by their plain name (`settings::Webhook`).
        for child in modules.iter().filter(|c| {
            c.strip_prefix(&format!("{module}::"))
                .is_some_and(|rest| !rest.contains("::"))
        }) {
            let name = child.rsplit("::").next().unwrap_or(child);
            if !paths_after(&code, &format!("{name}::")).is_empty() {
                uses.insert(child.clone());
            }
        }
        uses.remove(module);
        uses.retain(|m| !is_test(m));
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The strongly connected components with more than one module.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    fn visit(
        v: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(v.to_string()) {
            return;
        }
        for w in graph.get(v).into_iter().flatten() {
            visit(w, graph, seen, out);
        }
        out.push(v.to_string());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in graph.keys() {
        visit(v, graph, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (v, ws) in graph {
        for w in ws {
            reversed.entry(w.clone()).or_default().insert(v.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        let mut component = Vec::new();
        visit(v, &reversed, &mut seen, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

#[test]
fn no_import_circles_between_modules_or_files() {
    let graph = module_graph();
    assert!(
        graph.len() > 30,
        "too few modules found: {:?}",
        graph.keys()
    );
    assert!(
        graph["config"].contains("monitor") && graph["delivery::settings"].contains("settings"),
        "the scan misses known edges: {graph:#?}"
    );
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, uses) in &graph {
        let a = module.split("::").next().unwrap_or(module).to_string();
        for used in uses {
            let b = used.split("::").next().unwrap_or(used).to_string();
            if a != b {
                top.entry(a.clone()).or_default().insert(b);
            }
        }
    }
    assert_eq!(
        circles(&top),
        Vec::<Vec<String>>::new(),
        "between top-level modules"
    );
    assert_eq!(circles(&graph), Vec::<Vec<String>>::new(), "between files");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        paths_after(
            "use crate::{a::X, b::{C, D}, c};\nlet _ = crate::d::e();",
            "crate::"
        ),
        ["a::X", "b", "c", "d::e"]
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines}", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "longer than {MAX_LINES} lines: {long:#?}");
}
