//! The module map in `docs/architecture.md` is true: every top-level module of `src/` is in its
//! table, no module names a crate module its row does not allow, and the imports form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules any module may import (the document says so once instead of in every row).
const SHARED: [&str; 2] = ["error", "ground"];

/// `module → modules it may import`, from the table under "## Modules".
fn allowed() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let doc = std::fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let section = doc.split("## Modules").nth(1).expect("a `## Modules` section");
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a table row has three cells: {line}");
        let name = cells[0].trim_matches('`').to_string();
        // `cli` may import everything; a row listing modules allows those and the shared ones.
        let may = if cells[2].starts_with("every module") {
            None
        } else {
            Some(backticked(cells[2]).into_iter().chain(SHARED.map(String::from)).collect())
        };
        out.insert(name, may);
    }
    out
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(String::from).collect()
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

/// The code of a file without its comments (doc links may name any module).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The crate modules a piece of code names: `crate::m` and `crate::{m, n::…}`.
fn named(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rest in code.split("crate::").skip(1) {
        let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group.split('}').next().unwrap_or("").split(',').collect()
        } else {
            vec![rest]
        };
        for w in words {
            let ident: String = w.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `crate::Error` and friends are the root's re-exports of `error`.
            let module = if ident == "Error" || ident == "Result" { "error".to_string() } else { ident };
            if modules.contains(&module) {
                out.insert(module);
            }
        }
    }
    out
}

/// `module → crate modules its files name`, for every top-level module of `src/`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let top = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix("src").unwrap();
        let first = rel.components().next()?.as_os_str().to_str()?.to_string();
        let name = first.trim_end_matches(".rs").to_string();
        (name != "lib" && name != "main").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| top(p)).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let Some(m) = top(f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let mut found = named(&code(&text), &modules);
        found.remove(&m);
        out.get_mut(&m).unwrap().extend(found);
    }
    out
}

#[test]
fn every_module_imports_only_what_the_map_allows() {
    let allowed = allowed();
    let imports = imports();
    let mut wrong = Vec::new();
    for (module, names) in &imports {
        match allowed.get(module) {
            None => wrong.push(format!("`{module}` is not in the table of docs/architecture.md")),
            Some(None) => {}
            Some(Some(may)) => {
                for n in names.difference(may) {
                    wrong.push(format!("`{module}` imports `{n}`, which its row does not allow"));
                }
            }
        }
    }
    for module in allowed.keys().filter(|m| !imports.contains_key(*m)) {
        wrong.push(format!("the table lists `{module}`, which is not a module of src/"));
    }
    for (module, names) in &imports {
        if names.contains("cli") {
            wrong.push(format!("`{module}` imports `cli`"));
        }
    }
    assert!(wrong.is_empty(), "docs/architecture.md and the code disagree:\n{}", wrong.join("\n"));
}

#[test]
fn top_level_modules_form_no_cycle() {
    let imports = imports();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        m: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().cloned().chain([m.to_string()]).collect());
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for n in &imports[m] {
            if let Some(cycle) = visit(n, imports, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in imports.keys() {
        if let Some(cycle) = visit(m, &imports, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    // The parser must find what it is meant to: a guard against a checker that passes vacuously.
    let modules: BTreeSet<String> = ["plan", "spec", "error"].map(String::from).into();
    let found = named(&code("use crate::{plan::Plan, spec};\n// crate::error\nlet e: crate::Error;"), &modules);
    assert_eq!(found, ["error", "plan", "spec"].map(String::from).into());
    let imports = imports();
    assert!(imports["plan"].contains("stream") && imports["cli"].contains("plan"), "{imports:?}");
}
