//! The `loadtest` binary: everything is in the library; see `cli.rs`.

/// jemalloc instead of glibc malloc: under 2x overload (bench-mqtt at 14,000/s) glibc held
/// 1.1 GB of RSS for 312 MB of peak live heap (heaptrack), and its `_int_malloc` rose from 2.4%
/// to 6.9% of the CPU over a 60 s run at 7,000/s as the registration store fragmented the heap.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    loadtest::cli::main()
}
