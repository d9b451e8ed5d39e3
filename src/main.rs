//! The `loadtest` binary: everything is in the library; see `cli.rs`.

/// mimalloc rather than the system allocator: a registration allocates a few dozen small
/// buffers (IDs, bodies, JSON, samples), and glibc's malloc/free were a tenth of the
/// generator's instructions per request (benches/vs-wrk.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    loadtest::cli::main()
}
