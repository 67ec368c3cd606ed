//! cli: `ferrosan <noun> <verb>`, a thin client of the API.
//!
//! ```text
//!  argv --clap--> Cli (args.rs) --> commands.rs --hyper over <pool>/api.sock--> daemon
//!                                       |
//!                        tables (render.rs) or --json, progress bars (wait.rs)
//! ```
//!
//! Exit codes: 0 success, 1 an error (the API's message on stderr, or a job
//! that failed or was cancelled), 2 a usage error.

#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod pair;
mod render;
mod sparing;
mod svol;
use crate::units as size;
mod wait;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
pub use size::{format_size, parse_size};

/// A command that did not succeed: what to tell the user, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come this way too, with code 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Prints `text` and a newline on stdout. A closed pipe (`| head`) is not
/// an error.
fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| match text.ends_with('\n') {
            true => Ok(()),
            false => stdout.write_all(b"\n"),
        })
        .and_then(|()| stdout.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}
