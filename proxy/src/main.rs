use clap::Parser;
use fanout::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// glibc's allocator is a quarter of ingest's CPU (`_int_malloc`, `malloc_consolidate`,
/// `_int_free` under sled's node clones and drops). With `--features mimalloc` the CPU per event
/// halves but RSS grows by ~80-100 MB (BENCHMARKS.md, performance round 2): off by default
/// until that is settled.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its proxy's info lines would drown the story.
    let quiet = matches!(cli.command, fanout::cli::Command::Demo { .. });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(if quiet { "error" } else { "info" }));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Lines are written by a background thread: formatting stays on the request path, the write
    // syscall does not (it was ~20 µs of every acknowledged event; BENCHMARKS.md). Not lossy: at
    // a burst beyond what stderr takes, logging slows ingest rather than drop lines.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("fanout-log")
        .finish(std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match fanout::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
