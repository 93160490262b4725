//! Container logs: one line per record, in the CRI format Kubernetes
//! uses, so the two streams stay apart and interleave by time:
//!
//! ```text
//! 2026-12-02T18:26:07.123456789Z stdout F a whole line
//! 2026-12-02T18:26:07.123501234Z stderr P the first 16 KiB of a longer line
//! ```
//!
//! The shim writes them ([`LogWriter`], from the container's pipes) and
//! rotates by size: `container.log` becomes `container.log.1`, and so on,
//! keeping `files` files in all. The agent reads them back ([`select`]):
//! oldest file first, filtered by stream and time, the last N lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The longest line kept whole; longer ones are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;
/// Default size at which the log rotates: 10 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Default number of files kept (the current one included).
pub const DEFAULT_FILES: u32 = 3;

/// How a task's log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Rotate once the current file is this big (bytes).
    pub max_size: u64,
    /// Files kept, the current one included.
    pub files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: DEFAULT_MAX_SIZE,
            files: DEFAULT_FILES,
        }
    }
}

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the shim read it (RFC 3339, UTC, nanoseconds).
    pub time: String,
    /// Nanoseconds since the epoch, parsed from `time`.
    pub nanos: i64,
    /// Its stream.
    pub stream: Stream,
    /// The line continues in the next record of its stream.
    pub partial: bool,
    /// The text, without the newline.
    pub text: String,
}

/// Parses a record line; `None` for a line that is not one.
pub fn parse(line: &str) -> Option<Record> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = match it.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match it.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    let text = it.next().unwrap_or("");
    let nanos = chrono::DateTime::parse_from_rfc3339(time)
        .ok()?
        .timestamp_nanos_opt()?;
    Some(Record {
        time: time.to_string(),
        nanos,
        stream,
        partial,
        text: text.to_string(),
    })
}

/// The path of rotated file `n` (0: the current one).
pub fn file_n(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

/// Writes records to a task's log, rotating by size.
pub struct LogWriter {
    path: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
    /// Bytes of an unfinished line, per stream.
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, limits: LogLimits) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            limits,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Takes bytes read from `stream`: whole lines become `F` records; a
    /// line longer than [`MAX_LINE`] is cut into `P` records.
    pub fn feed(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[i]);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            self.write_cut(stream, &buf[start..end])?;
            start = end + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.record(stream, true, &rest)?;
            rest = tail;
        }
        self.pending[i] = rest;
        Ok(())
    }

    /// Writes what is left of unfinished lines (the container ended).
    pub fn flush_partial(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.record(stream, false, &rest)?;
            }
        }
        Ok(())
    }

    fn write_cut(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            return self.record(stream, false, b"");
        }
        while let Some(c) = chunks.next() {
            self.record(stream, chunks.peek().is_some(), c)?;
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(now.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.limits.files.max(1);
        let _ = std::fs::remove_file(file_n(&self.path, keep - 1));
        for n in (1..keep.saturating_sub(1)).rev() {
            let _ = std::fs::rename(file_n(&self.path, n), file_n(&self.path, n + 1));
        }
        if keep > 1 {
            std::fs::rename(&self.path, file_n(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Which records to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only the last this many lines (0: all).
    pub tail: usize,
    /// Only records at or after this time (ns since the epoch; 0: all).
    pub since_nanos: i64,
    /// Only this stream (none: both).
    pub stream: Option<Stream>,
}

impl Filter {
    /// Whether `r` passes the stream and time filters.
    pub fn admits(&self, r: &Record) -> bool {
        self.stream.is_none_or(|s| s == r.stream) && r.nanos >= self.since_nanos
    }
}

/// A line as a record; a line that is not one (a log from before this
/// format) is plain stdout text.
pub fn parse_or_plain(line: &str) -> Record {
    parse(line).unwrap_or_else(|| Record {
        time: String::new(),
        nanos: 0,
        stream: Stream::Stdout,
        partial: false,
        text: line.to_string(),
    })
}

/// The records that pass a filter, keeping only the last `tail` ones.
#[derive(Debug, Default)]
pub struct Selection {
    filter: Filter,
    records: VecDeque<Record>,
}

impl Selection {
    /// An empty selection under `filter`.
    pub fn new(filter: Filter) -> Selection {
        Selection {
            filter,
            records: VecDeque::new(),
        }
    }

    /// Takes one line.
    pub fn push(&mut self, line: &str) {
        let r = parse_or_plain(line);
        if !self.filter.admits(&r) {
            return;
        }
        self.records.push_back(r);
        if self.filter.tail > 0 && self.records.len() > self.filter.tail {
            self.records.pop_front();
        }
    }

    /// Takes every line of the rotated files of the log at `path` (all
    /// but the current one, oldest first) of the `keep` kept.
    pub fn rotated(&mut self, path: &Path, keep: u32) -> std::io::Result<()> {
        for n in (1..keep.max(1)).rev() {
            self.file(&file_n(path, n))?;
        }
        Ok(())
    }

    /// Takes every line of one file (a missing file has none).
    pub fn file(&mut self, path: &Path) -> std::io::Result<()> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in BufReader::new(f).split(b'\n') {
            self.push(&String::from_utf8_lossy(&line?));
        }
        Ok(())
    }

    /// The records selected, oldest first.
    pub fn into_records(self) -> Vec<Record> {
        self.records.into()
    }
}

/// The records of the log at `path` (its rotated files too, oldest first)
/// that pass `filter`; with `tail`, only the last ones.
pub fn select(path: &Path, keep: u32, filter: &Filter) -> std::io::Result<Vec<Record>> {
    let mut sel = Selection::new(filter.clone());
    sel.rotated(path, keep)?;
    sel.file(path)?;
    Ok(sel.into_records())
}

/// A record as `berth logs` prints it: the text and its newline (none
/// after a partial record), with the time and stream in front when asked.
pub fn render(r: &Record, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(r.time.as_bytes());
        out.push(b' ');
        out.extend_from_slice(r.stream.as_str().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(r.text.as_bytes());
    if !r.partial {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_streams_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let limits = LogLimits {
            max_size: 400,
            files: 3,
        };
        let mut w = LogWriter::open(&path, limits).unwrap();
        w.feed(Stream::Stdout, b"one\ntw").unwrap();
        w.feed(Stream::Stderr, b"oops\n").unwrap();
        w.feed(Stream::Stdout, b"o\n").unwrap();
        let all = select(&path, 3, &Filter::default()).unwrap();
        let texts: Vec<&str> = all.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["one", "oops", "two"]);
        let err = select(
            &path,
            3,
            &Filter {
                stream: Some(Stream::Stderr),
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].text, "oops");
        // Past max_size the log rotates; at most `files` files stay.
        for i in 0..100 {
            w.feed(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(file_n(&path, 1).exists() && file_n(&path, 2).exists());
        assert!(!file_n(&path, 3).exists());
        for n in 0..3 {
            assert!(std::fs::metadata(file_n(&path, n)).unwrap().len() <= 400);
        }
        let tail = select(
            &path,
            3,
            &Filter {
                tail: 2,
                ..Filter::default()
            },
        )
        .unwrap();
        let texts: Vec<&str> = tail.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["line 98", "line 99"]);
    }

    #[test]
    fn long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut w = LogWriter::open(&path, LogLimits::default()).unwrap();
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        w.feed(Stream::Stdout, &long).unwrap();
        w.feed(Stream::Stdout, b"\n").unwrap();
        let rs = select(&path, 1, &Filter::default()).unwrap();
        assert_eq!(rs.len(), 3);
        assert!(rs[0].partial && rs[1].partial && !rs[2].partial);
        let mut out = Vec::new();
        for r in &rs {
            render(r, false, &mut out);
        }
        assert_eq!(out.len(), long.len() + 1);
    }

    #[test]
    fn since_filters_by_time() {
        let r = parse("2026-12-02T18:26:07.000000001Z stdout F hi").unwrap();
        assert_eq!(r.text, "hi");
        let f = Filter {
            since_nanos: r.nanos + 1,
            ..Filter::default()
        };
        assert!(!f.admits(&r));
        assert!(parse("garbage").is_none());
    }
}
