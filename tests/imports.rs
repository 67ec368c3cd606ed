//! Imports run one way: every `crate::...` path in the non-test code of
//! `src/` must name a module its own module may use, as the table in
//! `docs/architecture.md` ("Layers and the imports they may make") says.
//! A failure names the file, the line and the import that breaks it.
//!
//! Test code (files `tests.rs`, `fuzz.rs`, folders `tests/`, and whatever
//! follows a file's `#[cfg(test)]`) may reach across: a node's tests use
//! the in-memory disk, and so on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Modules every module may use: error types, units, buffers, JSON helpers,
/// the lock order.
const EVERYWHERE: &[&str] = &["error", "units", "buf", "json", "lockorder"];

/// Each module and what it may import besides [`EVERYWHERE`], from the
/// bottom up. Keep in step with docs/architecture.md.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("units", &[]),
    ("buf", &[]),
    ("json", &[]),
    ("lockorder", &[]),
    ("blockdev", &[]),
    ("layout", &[]),
    ("disk", &["blockdev"]),
    ("rt", &["disk"]),
    ("meta", &["blockdev", "rt"]),
    ("stack", &["blockdev", "layout", "disk", "rt"]),
    ("nbd", &["blockdev", "stack", "rt"]),
    (
        "copy",
        &["blockdev", "stack", "layout", "disk", "rt", "meta"],
    ),
    ("pair", &["blockdev", "stack", "rt", "meta"]),
    ("divert", &["blockdev", "stack", "rt", "meta"]),
    ("reshape", &["blockdev", "stack", "rt", "meta"]),
    ("jobs", &["blockdev", "rt", "meta", "api::views"]),
    ("api::views", &["meta"]),
    (
        "engine",
        &[
            "blockdev",
            "layout",
            "disk",
            "rt",
            "meta",
            "stack",
            "copy",
            "pair",
            "divert",
            "reshape",
            "jobs",
            "api::views",
        ],
    ),
    ("api", &["engine", "meta", "api::views"]),
    (
        "daemon",
        &["engine", "nbd", "rt", "blockdev", "api", "api::views"],
    ),
    ("cli", &["api", "api::views", "daemon"]),
    ("lib", &["*"]),
    ("main", &["cli"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs")
            && !p
                .file_name()
                .is_some_and(|n| n == "tests.rs" || n == "fuzz.rs")
        {
            out.push(p);
        }
    }
}

/// The module a file belongs to: its first folder under `src/`, or its
/// own name for a file at the top (`units.rs` is `units`); `api/views` is
/// a module of its own.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.len() >= 2 && parts[0] == "api" && parts[1] == "views" {
        return "api::views".into();
    }
    parts[0].clone()
}

/// The module a `crate::` path reaches: `crate::api::views::X` is
/// `api::views`, `crate::disk::label::X` is `disk`.
fn target_of(path: &str) -> String {
    let mut it = path.split("::").skip(1);
    let first = it.next().unwrap_or("").to_string();
    if first == "api" && it.next() == Some("views") {
        return "api::views".into();
    }
    first
}

/// Every `crate::...` path in the non-test, non-comment lines of `text`,
/// with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.contains("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            out.push((n + 1, tail[..end].trim_end_matches(':').to_string()));
            rest = &tail[end..];
        }
    }
    out
}

fn check(file: &Path, text: &str, allowed: &BTreeMap<&str, &[&str]>) -> Vec<String> {
    let me = module_of(file);
    let Some(ok) = allowed.get(me.as_str()) else {
        return vec![format!(
            "{}: module {me} is not in the table of tests/imports.rs",
            file.display()
        )];
    };
    let mut bad = Vec::new();
    for (line, path) in crate_paths(text) {
        let to = target_of(&path);
        // `crate::Result`, `crate::Error`...: the root's re-exports of error
        // and buf.
        let root_item = to.starts_with(|c: char| c.is_ascii_uppercase());
        let fine = to == me
            || to.is_empty()
            || root_item
            || EVERYWHERE.contains(&to.as_str())
            || ok.contains(&"*")
            || ok.contains(&to.as_str())
            || (me == "api::views" && to == "api" && path.starts_with("crate::api::views"));
        if !fine {
            let rel = file.strip_prefix(src()).unwrap_or(file);
            bad.push(format!(
                "src/{}:{line}: {me} may not import {to} (`{path}`)",
                rel.display()
            ));
        }
    }
    bad
}

#[test]
fn imports_follow_the_layer_table() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read a source file");
        bad.extend(check(f, &text, &allowed));
    }
    assert!(
        bad.is_empty(),
        "imports against the layer table (docs/architecture.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import_and_ignores_tests_and_comments() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let file = src().join("disk/file.rs");
    let text = "use crate::blockdev::BlockDev;\n\
                // crate::engine::Pool in a comment\n\
                fn f() { crate::stack::raid::x(); }\n\
                #[cfg(test)]\n\
                mod tests { use crate::engine::Pool; }\n";
    let bad = check(&file, text, &allowed);
    assert_eq!(
        bad,
        ["src/disk/file.rs:3: disk may not import stack (`crate::stack::raid::x`)"]
    );
    let views = src().join("api/views/mod.rs");
    assert!(check(&views, "use crate::api::views::limits;", &allowed).is_empty());
    assert_eq!(
        check(&views, "use crate::engine::Pool;", &allowed).len(),
        1,
        "views may not import the engine"
    );
}
