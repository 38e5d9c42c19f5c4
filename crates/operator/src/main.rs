//! The operator binary: everything lives in the library, so tests and docs reach it too.

// jemalloc gives memory back after a burst; glibc's malloc kept the peak (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    operator::Args::parse_and_run().await
}
