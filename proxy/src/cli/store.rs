//! `fanout store export` / `import`: a store moved between engines (sled and Postgres) through
//! the JSON lines of `fanout_store::export`. The engines read and write the records; this side
//! moves the text, off the async threads: one thread writes (or reads) the file while the store
//! works, a bounded channel between them, so neither end holds the whole store.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use fanout_store::engine::Engine;
use fanout_store::export::{ImportError, Reader, Writer};
use fanout_store::ExportRecord;
use tokio::sync::mpsc;

use crate::{clock, reload, serve};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Write the store as JSON lines: queued jobs (those in flight as queued), dead letters,
    /// events with their dedup ids and history, owners, `any`-group rounds, paused targets.
    /// A sled store is locked by a running `fanout serve`: stop it first.
    Export {
        #[arg(long, short, default_value = "routing.yaml")]
        config: PathBuf,
        /// Where to write (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Read an export into the store the config names, which must be empty (a new data_dir, or
    /// a new database). A sled store is locked by a running `fanout serve`: stop it first.
    Import {
        #[arg(long, short, default_value = "routing.yaml")]
        config: PathBuf,
        /// What to read (default: stdin).
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

/// Records handed to the store at a time (Postgres: one transaction each).
const BATCH: usize = 500;

/// How long a stop waits for the store's background work.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Export { config, out } => export(&config, out.as_deref()).await,
        StoreCommand::Import { config, input } => import(&config, input.as_deref()).await,
    }
}

async fn open(config: &Path) -> anyhow::Result<Engine> {
    let config = reload::load(config)?;
    // The sled engine's own words say a running `fanout serve` may be holding the store.
    Ok(serve::open_store(&config).await?)
}

async fn export(config: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let engine = open(config).await?;
    let to: Box<dyn Write + Send> = match out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    let writer = Writer::start(BufWriter::new(to), engine.name(), clock::unix_now_ms())?;
    let (sender, receiver) = mpsc::channel(BATCH);
    let writing = tokio::task::spawn_blocking(move || write_records(writer, receiver));
    let exported = engine.export(sender).await;
    let written = writing.await.context("the export's writer failed")?;
    engine.close(CLOSE_WITHIN).await;
    // A write that failed explains the store's hang-up best; an export that failed leaves the
    // output without its end line, so it is never imported as if whole.
    let (writer, tally) = written.context("cannot write the export")?;
    exported.context("cannot export the store")?;
    tokio::task::spawn_blocking(move || writer.finish()).await?.context("cannot write the export")?;
    eprintln!("exported {}", describe(&tally));
    Ok(())
}

type Tally = BTreeMap<&'static str, u64>;

fn write_records<W: Write>(
    mut writer: Writer<W>,
    mut records: mpsc::Receiver<ExportRecord>,
) -> std::io::Result<(Writer<W>, Tally)> {
    let mut tally = Tally::new();
    while let Some(record) = records.blocking_recv() {
        writer.write(&record)?;
        *tally.entry(record.kind()).or_default() += 1;
    }
    Ok((writer, tally))
}

async fn import(config: &Path, input: Option<&Path>) -> anyhow::Result<()> {
    let from: Box<dyn BufRead + Send> = match input {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    // A file is read through once before anything is written, so one cut short or damaged is
    // refused whole; standard input can be read only once, and is checked as it is imported.
    if let Some(path) = input {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || check_whole(&path))
            .await
            .context("the export's reader failed")?
            .context("nothing was imported")?;
    }
    let engine = open(config).await?;
    if !engine.is_empty().await.context("cannot look into the store")? {
        bail!(
            "the store is not empty: an import goes only into an empty store, so nothing is mixed up. \
             Point the config at a new data_dir or an empty database"
        );
    }
    let (sender, mut batches) = mpsc::channel(2);
    let reading = tokio::task::spawn_blocking(move || read_batches(from, sender));
    let mut tally = Tally::new();
    let mut imported = Ok(());
    while let Some(batch) = batches.recv().await {
        let counts: Vec<&'static str> = batch.iter().map(ExportRecord::kind).collect();
        imported = engine.import(batch).await;
        if imported.is_err() {
            break;
        }
        counts.into_iter().for_each(|kind| *tally.entry(kind).or_default() += 1);
    }
    drop(batches);
    let read = reading.await.context("the export's reader failed")?;
    engine.close(CLOSE_WITHIN).await;
    let partly = |e: anyhow::Error| {
        if tally.is_empty() {
            return e.context("nothing was imported");
        }
        e.context(format!(
            "stopped after importing {}: empty the store (a new data_dir, or an empty database) before importing again",
            describe(&tally)
        ))
    };
    imported.map_err(|e| partly(anyhow::Error::new(e).context("cannot import into the store")))?;
    read.map_err(|e| partly(anyhow::Error::new(e)))?;
    eprintln!("imported {}", describe(&tally));
    Ok(())
}

/// Reads a whole export without keeping it: every line, the end line and the count.
fn check_whole(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let from: Box<dyn BufRead + Send> = Box::new(BufReader::new(file));
    for record in Reader::new(from)? {
        record?;
    }
    Ok(())
}

/// Reads the export into batches for the store until it ends, an error, or the store stops
/// taking them.
fn read_batches(from: Box<dyn BufRead + Send>, to: mpsc::Sender<Vec<ExportRecord>>) -> Result<(), ImportError> {
    let mut batch = Vec::with_capacity(BATCH);
    for record in Reader::new(from)? {
        batch.push(record?);
        if batch.len() == BATCH && to.blocking_send(std::mem::take(&mut batch)).is_err() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = to.blocking_send(batch);
    }
    Ok(())
}

/// `12 records (event: 1, job: 3, ...)`.
fn describe(tally: &Tally) -> String {
    let total: u64 = tally.values().sum();
    let kinds: Vec<String> = tally.iter().map(|(kind, n)| format!("{kind}: {n}")).collect();
    match total {
        0 => "0 records".to_owned(),
        _ => format!("{total} records ({})", kinds.join(", ")),
    }
}
