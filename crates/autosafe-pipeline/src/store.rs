//! Crash-safe JSONL record stores.
//!
//! A stage appends one record per line. All appends go through one writer task fed by a bounded
//! channel, so lines never interleave however many workers produce records, and memory stays
//! bounded. Each line is written with a single `write_all` of the whole line (newline included)
//! on an unbuffered file, so a `kill -9` leaves at worst one torn last line. [`recover`] detects a
//! torn last line, truncates the file back to the last newline and returns the ids already
//! finished, so a restarted stage skips them and the file ends up exactly as an uninterrupted
//! run would have written it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{PipelineError, Result};

/// A record with a stable id, as stored in a stage's JSONL file.
pub trait Record: Serialize + DeserializeOwned + Send + 'static {
    /// The record's stable id.
    fn record_id(&self) -> &str;
}

impl Record for autosafe_ots::Scenario {
    fn record_id(&self) -> &str {
        &self.id
    }
}

impl Record for autosafe_ots::Snapshot {
    fn record_id(&self) -> &str {
        &self.id
    }
}

impl Record for autosafe_ots::LabelledStep {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// Only the `id` of a record: enough to resume or merge without knowing the record type.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IdOnly {
    /// The record id.
    pub id: String,
}

/// The bytes dropped from the end of a file because the last line was incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// File length after truncation (the byte after the last newline).
    pub kept_bytes: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// The 1-based line number of the dropped line.
    pub line: u64,
}

/// What [`recover`] found in an existing store.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Ids of the complete records already in the file.
    pub finished: HashSet<String>,
    /// Number of complete records (lines) in the file.
    pub records: u64,
    /// Lines whose id was already seen earlier in the file (should be 0).
    pub duplicates: u64,
    /// The torn last line that was dropped, if any.
    pub torn: Option<TornTail>,
}

/// Reads an existing store for resuming: checks every complete line parses as a record with an
/// `id`, drops (truncates) an incomplete last line, and returns the finished ids. A missing
/// file is an empty store. A complete line that does not parse is an error naming file and line:
/// that is corruption, not a torn write, and is never silently dropped.
pub fn recover(path: &Path) -> Result<Resume> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resume::default()),
        Err(e) => return Err(PipelineError::io(path, e)),
    };
    let mut resume = Resume::default();
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::new();
    let mut offset: u64 = 0;
    let mut line_no: u64 = 0;
    loop {
        line.clear();
        let n = read_line_capped(&mut reader, &mut line, path, line_no + 1)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if line.last() != Some(&b'\n') {
            resume.torn = Some(TornTail {
                kept_bytes: offset,
                dropped_bytes: n as u64,
                line: line_no,
            });
            break;
        }
        let text = &line[..n - 1];
        let rec: IdOnly =
            serde_json::from_slice(text).map_err(|e| PipelineError::json(path, line_no, &e))?;
        if !resume.finished.insert(rec.id) {
            resume.duplicates += 1;
        }
        resume.records += 1;
        offset += n as u64;
    }
    drop(reader);
    if let Some(torn) = &resume.torn {
        file.set_len(torn.kept_bytes)
            .map_err(|e| PipelineError::io(path, e))?;
        file.sync_all().map_err(|e| PipelineError::io(path, e))?;
    }
    Ok(resume)
}

/// Serialises a record as one JSONL line (with the trailing newline), every configured secret
/// value masked ([`autosafe_llm::redact::redact_values`]).
pub(crate) fn to_line<T: Serialize>(record: &T) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let text = serde_json::to_string(record)?;
    let mut buf = autosafe_llm::redact::redact_values(&text)
        .into_owned()
        .into_bytes();
    buf.push(b'\n');
    Ok(buf)
}

/// The longest record line read (64 MiB, far above any record): an endless or binary input
/// (`--scenarios /dev/zero`) is an error naming file and line instead of filling memory.
pub(crate) const MAX_LINE_BYTES: u64 = 64 << 20;

/// Reads one line of at most [`MAX_LINE_BYTES`] (newline included when there is one) into `buf`.
fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    path: &Path,
    line: u64,
) -> Result<usize> {
    let n = reader
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', buf)
        .map_err(|e| PipelineError::io(path, e))?;
    if n as u64 > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
        return Err(PipelineError::BadRecord {
            path: path.to_path_buf(),
            line,
            field: "record".into(),
            message: format!("line longer than {MAX_LINE_BYTES} bytes (not a record file?)"),
        });
    }
    Ok(n)
}

/// Streams the records of a finished JSONL file, one at a time (memory stays flat). Errors name
/// the file, line and field. An incomplete last line is reported as an error too: run
/// [`recover`] on a store before reading it if it may have been interrupted.
pub struct RecordReader<T> {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> RecordReader<T> {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        Ok(RecordReader {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            line: 0,
            buf: Vec::new(),
            _t: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> Iterator for RecordReader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match read_line_capped(&mut self.reader, &mut self.buf, &self.path, self.line + 1) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            self.line += 1;
            if self.buf.last() != Some(&b'\n') {
                return Some(Err(PipelineError::BadRecord {
                    path: self.path.clone(),
                    line: self.line,
                    field: "record".into(),
                    message: "incomplete last line (interrupted write; recover the store first)"
                        .into(),
                }));
            }
            let text = &self.buf[..self.buf.len() - 1];
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(text)
                    .map_err(|e| PipelineError::json(&self.path, self.line, &e)),
            );
        }
    }
}

/// Reads all records of a JSONL file into memory (small files: fixtures, tests).
pub fn read_all<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    RecordReader::open(path)?.collect()
}

/// Counts of a finished writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Records appended by this writer.
    pub written: u64,
    /// Records not written because their id was already in the store.
    pub skipped_duplicates: u64,
}

/// The appending side of a store: a writer task fed by a bounded channel.
///
/// Open it with [`RecordWriter::open`], hand [`RecordWriter::sender`] clones to workers, then
/// [`RecordWriter::finish`]. A record whose id is already in the store (from before a restart
/// or sent twice) is skipped, never written twice.
pub struct RecordWriter<T: Record> {
    tx: mpsc::Sender<T>,
    task: JoinHandle<Result<WriteReport>>,
    path: PathBuf,
}

impl<T: Record> RecordWriter<T> {
    /// Recovers `path` (see [`recover`]), then starts a writer that appends to it. `capacity`
    /// bounds the channel (back-pressure on producers). Must be called inside a tokio runtime.
    pub fn open(path: &Path, capacity: usize) -> Result<(Self, Resume)> {
        let resume = recover(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| PipelineError::io(parent, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PipelineError::io(path, e))?;
        file.seek(SeekFrom::End(0))
            .map_err(|e| PipelineError::io(path, e))?;
        let (tx, mut rx) = mpsc::channel::<T>(capacity.max(1));
        let mut seen = resume.finished.clone();
        let task_path = path.to_path_buf();
        let base = resume.records;
        let task = tokio::task::spawn_blocking(move || {
            let mut report = WriteReport::default();
            while let Some(record) = rx.blocking_recv() {
                if !seen.insert(record.record_id().to_string()) {
                    report.skipped_duplicates += 1;
                    continue;
                }
                let line = to_line(&record).map_err(|e| PipelineError::BadRecord {
                    path: task_path.clone(),
                    line: base + report.written + 1,
                    field: "record".into(),
                    message: e.to_string(),
                })?;
                file.write_all(&line)
                    .map_err(|e| PipelineError::io(&task_path, e))?;
                report.written += 1;
            }
            file.sync_data()
                .map_err(|e| PipelineError::io(&task_path, e))?;
            Ok(report)
        });
        Ok((
            RecordWriter {
                tx,
                task,
                path: path.to_path_buf(),
            },
            resume,
        ))
    }

    /// A handle producers send records through.
    pub fn sender(&self) -> mpsc::Sender<T> {
        self.tx.clone()
    }

    /// Sends one record (waits while the channel is full).
    pub async fn write(&self, record: T) -> Result<()> {
        self.tx
            .send(record)
            .await
            .map_err(|_| PipelineError::WriterClosed {
                path: self.path.clone(),
                message: "writer task ended (see finish() for its error)".into(),
            })
    }

    /// Closes the channel, waits for every queued record to be written and synced, and returns
    /// the counts. Other senders still alive keep the writer open until they are dropped.
    pub async fn finish(self) -> Result<WriteReport> {
        drop(self.tx);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(PipelineError::WriterClosed {
                path: self.path,
                message: e.to_string(),
            }),
        }
    }
}

/// Reads the raw bytes of a file (tests and merge helpers).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| PipelineError::io(path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct R {
        id: String,
        n: u32,
    }
    impl Record for R {
        fn record_id(&self) -> &str {
            &self.id
        }
    }

    fn rec(n: u32) -> R {
        R {
            id: format!("r{n:04}"),
            n,
        }
    }

    #[tokio::test]
    async fn writes_whole_lines_and_skips_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let (w, resume) = RecordWriter::<R>::open(&path, 4).unwrap();
        assert_eq!(resume.records, 0);
        let mut tasks = Vec::new();
        for k in 0..8u32 {
            let tx = w.sender();
            tasks.push(tokio::spawn(async move {
                for n in 0..50 {
                    tx.send(rec(k * 50 + n)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        w.write(rec(3)).await.unwrap();
        let report = w.finish().await.unwrap();
        assert_eq!(
            report,
            WriteReport {
                written: 400,
                skipped_duplicates: 1
            }
        );
        let all: Vec<R> = read_all(&path).unwrap();
        assert_eq!(all.len(), 400);
        let ids: HashSet<_> = all.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids.len(), 400);
    }

    #[tokio::test]
    async fn torn_tail_is_dropped_and_resume_completes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.jsonl");
        let cut = dir.path().join("cut.jsonl");
        let (w, _) = RecordWriter::<R>::open(&full, 2).unwrap();
        for n in 0..20 {
            w.write(rec(n)).await.unwrap();
        }
        w.finish().await.unwrap();
        let bytes = read_bytes(&full).unwrap();
        // Cut in the middle of line 8 (a torn write).
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let cut_at = line_starts[7] + 5;
        std::fs::write(&cut, &bytes[..cut_at]).unwrap();

        let (w, resume) = RecordWriter::<R>::open(&cut, 2).unwrap();
        assert_eq!(resume.records, 7);
        let torn = resume.torn.clone().expect("torn tail detected");
        assert_eq!(torn.line, 8);
        assert_eq!(torn.dropped_bytes, 5);
        assert_eq!(torn.kept_bytes, line_starts[7] as u64);
        for n in 0..20 {
            if !resume.finished.contains(&rec(n).id) {
                w.write(rec(n)).await.unwrap();
            }
        }
        let report = w.finish().await.unwrap();
        assert_eq!(report.written, 13);
        assert_eq!(
            read_bytes(&cut).unwrap(),
            bytes,
            "resumed file equals the uninterrupted one"
        );
    }

    #[test]
    fn corrupt_complete_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\n{\"nope\":1}\n").unwrap();
        let err = recover(&path).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2: id: missing field"), "{err}");
        let err = read_all::<R>(&path).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:1: n: missing field"), "{err}");
    }

    #[test]
    fn reader_reports_incomplete_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"id\":\"a\",\"n\":1}\n{\"id\":\"b\",\"n").unwrap();
        let out: Vec<Result<R>> = RecordReader::open(&path).unwrap().collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().n, 1);
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("t.jsonl:2: record: incomplete last line")
        );
        let resume = recover(&path).unwrap();
        assert_eq!(resume.records, 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"a\",\"n\":1}\n"
        );
    }

    #[test]
    fn an_endless_line_is_an_error_naming_file_and_line() {
        let path = Path::new("/dev/zero");
        let err = RecordReader::<R>::open(path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/dev/zero:1: record: line longer than"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let r = recover(&dir.path().join("none.jsonl")).unwrap();
        assert_eq!(r.records, 0);
        assert!(r.torn.is_none());
    }
}
