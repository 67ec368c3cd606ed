//! The `ferrosan` command: daemon and CLI in one binary.

fn main() -> std::process::ExitCode {
    ferrosan::cli::main()
}
