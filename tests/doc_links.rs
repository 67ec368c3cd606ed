//! The link check (scripts/test.sh runs it): every relative link and image
//! in README.md and docs/**/*.md resolves to a file of the repository, an
//! anchor (`file.md#heading`, `#heading`) to a heading of its file, and no
//! text points at `../shared`, which a clone does not have. Links to other
//! sites (`https:`, `mailto:`...) are not followed.
//!
//! Links are Markdown inline links and images (`[t](x)`, `![a](x)`),
//! reference definitions (`[id]: x`) and HTML `href="x"` / `src="x"`;
//! fenced code blocks and inline code are not links.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The Markdown files the check covers, relative to `root`.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut dirs = vec![PathBuf::from("docs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = dir.join(e.file_name());
            if e.path().is_dir() {
                dirs.push(rel);
            } else if rel.extension().is_some_and(|x| x == "md") {
                files.push(rel);
            }
        }
    }
    files.sort();
    files
}

/// Lines outside fenced code blocks, with inline code blanked, numbered
/// from 1.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, blank_code_spans(line))),
            _ => {}
        }
    }
    out
}

/// `line` with the inside of each `code span` replaced by spaces.
fn blank_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(c);
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The link targets of one line of prose.
fn targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = closing_paren(after);
        out.push(first_token(&after[..end]));
        rest = &after[end..];
    }
    let t = line.trim_start();
    if let Some(def) = t.strip_prefix('[').and_then(|x| x.split_once("]:")) {
        out.push(first_token(def.1));
    }
    for attr in ["href=\"", "src=\""] {
        for piece in line.split(attr).skip(1) {
            out.push(piece.split('"').next().unwrap_or_default().to_owned());
        }
    }
    out
}

/// Where the `(` before `text` closes (nested pairs allowed).
fn closing_paren(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// The destination of `(dest "title")` or `(<dest>)`.
fn first_token(text: &str) -> String {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('<') {
        return inner.split('>').next().unwrap_or_default().to_owned();
    }
    t.split_whitespace().next().unwrap_or_default().to_owned()
}

/// GitHub's anchors for a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(title) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while !seen.insert(unique.clone()) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
    }
    seen
}

/// `%20` and friends decoded.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The problem with link `target` of file `file` (relative to `root`).
fn check_target(root: &Path, file: &Path, target: &str) -> Option<String> {
    if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let dir = file.parent().unwrap_or(Path::new(""));
    let rel = if path.is_empty() {
        file.to_path_buf()
    } else {
        dir.join(percent_decoded(path))
    };
    let full = root.join(&rel);
    let inside = std::fs::canonicalize(&full)
        .ok()
        .zip(std::fs::canonicalize(root).ok())
        .is_some_and(|(f, r)| f.starts_with(r));
    if !inside {
        return Some(format!("{target}: no such file in the repository"));
    }
    if anchor.is_empty() || full.extension().is_none_or(|x| x != "md") {
        return None;
    }
    let text = std::fs::read_to_string(&full).unwrap_or_default();
    (!anchors(&text).contains(anchor))
        .then(|| format!("{target}: no heading #{anchor} in {}", rel.display()))
}

/// Every problem of the Markdown files under `root`, as `file:line: what`.
fn problems(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in markdown_files(root) {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            out.push(format!("{}: cannot be read", file.display()));
            continue;
        };
        let prose: std::collections::HashMap<usize, String> =
            prose_lines(&text).into_iter().collect();
        for (i, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.display(), i + 1);
            let links = prose.get(&(i + 1)).map(|l| targets(l)).unwrap_or_default();
            for t in links {
                if let Some(p) = check_target(root, &file, &t) {
                    out.push(format!("{at}: {p}"));
                }
            }
            if line.contains("../shared") {
                out.push(format!(
                    "{at}: points at ../shared, which is not part of the repository"
                ));
            }
        }
    }
    out
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files(root);
    assert!(files.len() >= 3, "README.md and docs/: {files:?}");
    let found = problems(root);
    assert!(found.is_empty(), "broken links:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_broken_links_anchors_images_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("docs/img")).unwrap();
    std::fs::write(root.join("docs/img/ok.png"), b"png").unwrap();
    std::fs::write(
        root.join("docs/a.md"),
        "# A page\n\n## Crash consistency, as built\n\nBack to [the top](../README.md#top-heading).\n\
         ![fine](img/ok.png) ![gone](img/gone.png)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Top heading\n\n\
         See [a](docs/a.md), [its rules](docs/a.md#crash-consistency-as-built), [here](#top-heading),\n\
         [the web](https://example.com) and [mail](mailto:x@example.com).\n\
         Broken: [missing](docs/missing.md) and [no anchor](docs/a.md#nope).\n\
         Out of the repository: [up](../outside.md).\n\
         ```sh\n[not a link](nowhere.md)\n```\n\
         `[not a link either](nowhere.md)`\n\
         [ref]: docs/gone-too.md\n\
         <img src=\"docs/img/missing.svg\">\n\
         The plan was `../shared/DESIGN.md`.\n",
    )
    .unwrap();
    assert_eq!(
        problems(root),
        [
            "README.md:5: docs/missing.md: no such file in the repository",
            "README.md:5: docs/a.md#nope: no heading #nope in docs/a.md",
            "README.md:6: ../outside.md: no such file in the repository",
            "README.md:11: docs/gone-too.md: no such file in the repository",
            "README.md:12: docs/img/missing.svg: no such file in the repository",
            "README.md:13: points at ../shared, which is not part of the repository",
            "docs/a.md:6: img/gone.png: no such file in the repository",
        ]
    );
}
