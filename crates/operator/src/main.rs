//! The operator binary: everything lives in the library, so tests and docs reach it too.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    operator::Args::parse_and_run().await
}
