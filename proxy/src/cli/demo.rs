//! `fanout demo` (to be written).
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
