//! The `loadtest` binary: everything is in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    loadtest::cli::main()
}
