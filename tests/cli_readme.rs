//! The README's command blocks, run as written on a fresh pool.
//!
//! The convention (also in README.md's source, above its first block):
//! every block fenced as ```sh is run, block after block, in one working
//! directory; each line is one command (a trailing `\` continues it) and
//! must exit 0; a `#> TEXT` line under a command says what it prints, and
//! its output (stdout and stderr) must contain TEXT. Other blocks (```text,
//! indented) are not run.
//!
//! The commands run in `sh -c` with `ferrosan` on PATH (this build), the
//! real daemon on a fresh pool (the demo pool `serve` provisions) on a free
//! port, and FERROSAN_POOL naming that pool. The README's NBD address
//! `nbd://127.0.0.1:10809/` is rewritten to the daemon's, in commands and
//! expected output alike; nothing else is.

mod harness;

use std::path::Path;
use std::process::Command;

use harness::{BIN, Daemon, have, pool_dir};

/// The README's NBD address, as the commands write it.
const README_NBD: &str = "nbd://127.0.0.1:10809/";

/// One command of a runnable block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// Its first line in the README.
    line: usize,
    command: String,
    /// What its output must contain, from `#>` lines.
    expect: Vec<String>,
}

/// The commands of every ```sh block, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_sh = false;
    let mut open: Option<Step> = None;
    for (i, raw) in readme.lines().enumerate() {
        let line = raw.trim_end();
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if let Some(mut s) = open.take() {
            // The line continues a command ending in `\`.
            s.command.push('\n');
            s.command.push_str(line);
            match line.ends_with('\\') {
                true => open = Some(s),
                false => out.push(s),
            }
            continue;
        }
        let t = line.trim_start();
        if t.starts_with("```") {
            in_sh = false;
        } else if let Some(text) = t.strip_prefix("#>") {
            let last = out.last_mut().filter(|s| s.line < i + 1);
            let Some(last) = last else {
                panic!("README.md:{}: `#>` before any command", i + 1);
            };
            last.expect.push(text.trim().to_owned());
        } else if !(t.is_empty() || t.starts_with('#')) {
            let s = Step {
                line: i + 1,
                command: line.to_owned(),
                expect: Vec::new(),
            };
            match line.ends_with('\\') {
                true => open = Some(s),
                false => out.push(s),
            }
        }
    }
    assert!(
        open.is_none() && !in_sh,
        "README.md ends inside a ```sh block"
    );
    out
}

/// Runs one step in `sh -c`; panics with the README line on failure.
fn run(step: &Step, work: &Path, pool: &Path, nbd: &str) {
    let command = step.command.replace(README_NBD, nbd);
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(work)
        .env("PATH", std::env::join_paths(dirs).expect("PATH"))
        .env("FERROSAN_POOL", pool)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "README.md:{}: `{command}` failed ({}):\n{text}",
        step.line,
        out.status
    );
    for want in &step.expect {
        let want = want.replace(README_NBD, nbd);
        assert!(
            text.contains(&want),
            "README.md:{}: `{command}` does not print {want:?}:\n{text}",
            step.line
        );
    }
}

#[test]
fn every_readme_command_block_runs_as_written_on_a_fresh_pool() {
    if !have(&["nbdinfo", "qemu-img", "fio"]) {
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let steps = steps(&readme);
    assert!(steps.len() >= 20, "the README's tour: {steps:#?}");
    let dir = pool_dir();
    let pool = dir.path().join("pool");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("a working directory");
    let mut d = Daemon::start(&pool, &[]);
    let nbd = format!("{}/", d.url);
    for step in &steps {
        run(step, &work, &pool, &nbd);
    }
    d.stop();
}

#[test]
fn only_sh_blocks_run_with_their_expectations_and_continuations() {
    let readme = "\
# Title

    cargo run --release -- serve

```text
ferrosan serve [--pool DIR]
```

```sh
ferrosan pool show
#> nbd tcp
# a comment
fio --name=x \\
    --size=1M
#> WRITE: bw=
#> run status

ferrosan volume list
```
";
    let step = |line, command: &str, expect: &[&str]| Step {
        line,
        command: command.to_owned(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        steps(readme),
        [
            step(10, "ferrosan pool show", &["nbd tcp"]),
            step(
                13,
                "fio --name=x \\\n    --size=1M",
                &["WRITE: bw=", "run status"]
            ),
            step(18, "ferrosan volume list", &[]),
        ]
    );
}
