//! A store as JSON lines, so `fanout store export` / `import` can move it between engines (sled
//! and Postgres): the engines write and read [`ExportRecord`]s (`export/sled_store.rs`,
//! `pg/export.rs`), and this module alone knows the text.
//!
//! The text: a header `{"fanout_export": 1, "engine": ..., "exported_at_ms": ...}`, one record a
//! line tagged by `kind`, and a last line `{"fanout_export_end": <records>}`, so an export cut
//! short (a full disk, a failed read) is refused instead of imported in part. Records come in
//! one order whatever the engine (paused targets, events by arrival, history, `any`-group rounds,
//! jobs by target and due time, dead letters, owners), so two exports of the same state are
//! equal line for line.
//!
//! What moves: everything that decides a delivery. A job in flight is exported as queued (due
//! when it was due): the import delivers it again, at least once. Not moved: quarantined bytes,
//! inbox presence, and which ingest wrote a job (an engine's own bookkeeping; always 0 here).
//! Jobs, dead letters, history entries and owners are the store's record types as they are: a
//! change to those types is a new [`FORMAT`].

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::record::{DeadLetter, Disposition, EventRecord, HistoryEntry, Job, JobId, Owner};

#[cfg(test)]
mod tests;

mod sled_store;

/// The format this fanout writes, and the newest it reads.
pub const FORMAT: u32 = 1;

/// The first line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub fanout_export: u32,
    /// The engine it was exported from (`sled`, `postgres`): for the reader's information.
    pub engine: String,
    pub exported_at_ms: u64,
}

/// The last line: how many records came before it.
#[derive(Deserialize)]
struct End {
    fanout_export_end: Option<u64>,
}

/// One record of a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportRecord {
    Paused {
        target: String,
    },
    /// A committed event (a copy that lost a race, or an ingest that never committed, is not).
    Event(#[serde(with = "event_text")] EventRecord),
    History {
        event_id: String,
        received_at_ms: u64,
        entry: HistoryEntry,
    },
    /// An `any` group's round that a member delivered: its siblings still queued must not be.
    GroupRound {
        event_id: String,
        group: String,
        round: JobId,
        delivered_by: String,
    },
    Job(Job),
    DeadLetter(DeadLetter),
    Owner {
        object: String,
        owner: Owner,
    },
    /// An inbox created at run time (its token as the digest the store keeps).
    Inbox(crate::InboxRecord),
}

impl ExportRecord {
    /// A job as exported: whichever ingest wrote it on the source, the destination's own.
    pub(crate) fn job(job: Job) -> ExportRecord {
        ExportRecord::Job(Job { ingest: 0, lease: 0, ..job })
    }

    pub(crate) fn dead_letter(letter: DeadLetter) -> ExportRecord {
        ExportRecord::DeadLetter(DeadLetter { job: Job { ingest: 0, lease: 0, ..letter.job }, ..letter })
    }

    /// Its `kind`, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportRecord::Paused { .. } => "paused",
            ExportRecord::Event(_) => "event",
            ExportRecord::History { .. } => "history",
            ExportRecord::GroupRound { .. } => "group_round",
            ExportRecord::Job(_) => "job",
            ExportRecord::DeadLetter(_) => "dead_letter",
            ExportRecord::Owner { .. } => "owner",
            ExportRecord::Inbox(_) => "inbox",
        }
    }

    /// The highest job id it names (0: none): an importing engine hands out new ids past it, so
    /// a job made after the import never takes an imported job's id.
    pub(crate) fn newest_job_id(&self) -> JobId {
        let of_job = |job: &Job| job.siblings.iter().map(|(_, id)| *id).chain([job.id]).max().unwrap_or(job.id);
        match self {
            ExportRecord::Job(job) => of_job(job),
            ExportRecord::DeadLetter(letter) => of_job(&letter.job),
            ExportRecord::History { entry, .. } => entry.job,
            ExportRecord::GroupRound { round, .. } => *round,
            ExportRecord::Paused { .. }
            | ExportRecord::Event(_)
            | ExportRecord::Owner { .. }
            | ExportRecord::Inbox(_) => 0,
        }
    }
}

/// An [`EventRecord`] with its body as text (Stripe's bodies are JSON, so UTF-8, and stay
/// readable), or in hex for a body that is not UTF-8: either way the same bytes come back.
mod event_text {
    use std::borrow::Cow;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    use super::{Disposition, EventRecord};

    /// Borrowed from the record when written (no copy of the body), owned when read.
    #[derive(Serialize, Deserialize)]
    struct EventText<'a> {
        id: Cow<'a, str>,
        event_type: Cow<'a, str>,
        source: Cow<'a, str>,
        received_at_ms: u64,
        disposition: Cow<'a, Disposition>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_hex: Option<String>,
    }

    pub fn serialize<S: Serializer>(e: &EventRecord, to: S) -> Result<S::Ok, S::Error> {
        let (body, body_hex) = match std::str::from_utf8(&e.body) {
            Ok(text) => (Some(Cow::Borrowed(text)), None),
            Err(_) => (None, Some(hex::encode(&e.body))),
        };
        let (id, event_type, source) = (Cow::from(&e.id), Cow::from(&e.event_type), Cow::from(&e.source));
        let disposition = Cow::Borrowed(&e.disposition);
        EventText { id, event_type, source, received_at_ms: e.received_at_ms, disposition, body, body_hex }
            .serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<EventRecord, D::Error> {
        let e = EventText::deserialize(from)?;
        let body = match (e.body, e.body_hex) {
            (Some(text), None) => text.into_owned().into_bytes(),
            (None, Some(hex)) => hex::decode(hex).map_err(|x| D::Error::custom(format!("body_hex: {x}")))?,
            _ => return Err(D::Error::custom(format!("event {} needs one of `body` and `body_hex`", e.id))),
        };
        Ok(EventRecord {
            id: e.id.into_owned(),
            event_type: e.event_type.into_owned(),
            source: e.source.into_owned(),
            received_at_ms: e.received_at_ms,
            disposition: e.disposition.into_owned(),
            body,
        })
    }
}

/// Why an export cannot be read: always with the line, so the file can be looked at.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

fn at(line: usize, message: impl std::fmt::Display) -> ImportError {
    ImportError::Line { line, message: message.to_string() }
}

/// serde_json's words with a column (it counts the one line it was given as line 1).
fn unreadable(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(what, _)| what);
    match e.column() {
        0 => what.to_owned(),
        column => format!("{what} (column {column})"),
    }
}

/// Writes an export: the header at once, the records, then the end line on [`Writer::finish`]
/// (called only when every record was written: without it the export reads as cut short).
pub struct Writer<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> Writer<W> {
    pub fn start(mut out: W, engine: &str, now_ms: u64) -> std::io::Result<Writer<W>> {
        let header = Header { fanout_export: FORMAT, engine: engine.to_owned(), exported_at_ms: now_ms };
        line(&mut out, &header)?;
        Ok(Writer { out, records: 0 })
    }

    pub fn write(&mut self, record: &ExportRecord) -> std::io::Result<()> {
        line(&mut self.out, record)?;
        self.records += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        writeln!(self.out, "{{\"fanout_export_end\":{}}}", self.records)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Reads an export, record by record, checking its header first and its end line last. Blank
/// lines are passed over.
pub struct Reader<R> {
    lines: std::io::Lines<R>,
    line: usize,
    records: u64,
    ended: bool,
    pub header: Header,
}

impl<R: BufRead> Reader<R> {
    /// Reads the header; refuses what is not an export, or one of a newer format.
    pub fn new(input: R) -> Result<Reader<R>, ImportError> {
        let mut reader = Reader { lines: input.lines(), line: 0, records: 0, ended: false, header: no_header() };
        let Some(text) = reader.next_line()? else {
            return Err(at(1, "the input is empty: not a fanout export"));
        };
        let header: Header = serde_json::from_str(&text).map_err(|e| {
            let why = unreadable(&e);
            at(reader.line, format!("not a fanout export (no {{\"fanout_export\": N}} header): {why}"))
        })?;
        if header.fanout_export > FORMAT {
            let why = format!(
                "written by a newer fanout (export format {}; this one reads up to {FORMAT}): import it with that version",
                header.fanout_export
            );
            return Err(at(reader.line, why));
        }
        reader.header = header;
        Ok(reader)
    }

    /// The next line that is not blank.
    fn next_line(&mut self) -> Result<Option<String>, ImportError> {
        for text in self.lines.by_ref() {
            self.line += 1;
            let text = text?;
            if !text.trim().is_empty() {
                return Ok(Some(text));
            }
        }
        Ok(None)
    }

    fn next_record(&mut self) -> Result<Option<ExportRecord>, ImportError> {
        if self.ended {
            return Ok(None);
        }
        let Some(text) = self.next_line()? else {
            self.ended = true;
            let why = format!("the export ends without its end line after {} records: it was cut short", self.records);
            return Err(at(self.line, format!("{why}; export it again")));
        };
        if let Ok(End { fanout_export_end: Some(count) }) = serde_json::from_str::<End>(&text) {
            self.ended = true;
            if count != self.records {
                return Err(at(self.line, format!("the end line counts {count} records, but {} came", self.records)));
            }
            if self.next_line()?.is_some() {
                return Err(at(self.line, "a line after the end line"));
            }
            return Ok(None);
        }
        let record = serde_json::from_str(&text).map_err(|e| at(self.line, unreadable(&e)))?;
        self.records += 1;
        Ok(Some(record))
    }

    /// The line last read.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<ExportRecord, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn no_header() -> Header {
    Header { fanout_export: 0, engine: String::new(), exported_at_ms: 0 }
}
