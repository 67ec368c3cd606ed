//! The `ferrosan` command: daemon and CLI in one binary.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ferrosan::cli::main()
}
