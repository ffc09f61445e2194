//! Reading load traces: how many requests arrived in each consecutive
//! interval, turned into requests per second for the simulated fleet.
//!
//! A backtest is only as good as its load, and real loads come as files
//! someone else wrote, so this reader accepts the two shapes such files take
//! and says exactly where one is wrong (file, line, and the column: by
//! character in a one-number-per-line trace, by header name in a CSV)
//! instead of guessing.
//!
//! # Formats
//!
//! - **One number per line**: the requests that arrived in one interval. The
//!   interval's length is not in the file; it is [`TraceOptions::interval_secs`]
//!   (1 s by default). Blank lines and lines starting with `#` are skipped.
//! - **CSV with a header**: one column holds the time (named `ts`, `timestamp`
//!   or `time`, in any case), another the requests in the interval starting
//!   then ([`TraceOptions::value_column`], matched exactly, else the first
//!   column that is not the time). Fields are read by the [`csv`] crate: a
//!   field in double quotes may hold commas, line breaks and doubled quotes
//!   (`""`) when the quote is the field's first character (RFC 4180: not
//!   after a space), spaces around a field are ignored, and lines starting
//!   with `#` are comments. Times are unix seconds or milliseconds, told
//!   apart by the first row's magnitude (100 000 000 000
//!   or more is milliseconds: as seconds that would be after the year 5000,
//!   as milliseconds it is any time after March 1973), or RFC 3339 UTC times
//!   such as `1995-07-01T04:00:01Z` (fractional seconds and `±HH:MM` offsets
//!   are accepted too; parsed by the [`time`] crate). Rows must be sorted by
//!   time, without repeats.
//!
//!   The interval is the most common step between consecutive times (the
//!   smaller one on a tie); a file with a single row takes
//!   [`TraceOptions::interval_secs`]. Interval `k` covers
//!   `[t0 + k·step, t0 + (k+1)·step)`; a row between grid points adds to the
//!   interval containing it. **Intervals with no row are gaps and count as
//!   zero requests**: a log with nothing in a minute had no traffic in that
//!   minute, which is what a request log means. A CSV trace spanning more
//!   than [`MAX_INTERVALS`] intervals is an error rather than gigabytes of
//!   zeros (one wrong timestamp is enough to ask for them).
//!
//! The format is decided by the first line that is not blank or a comment: a
//! number means the first format, anything else must be a CSV header.
//! A file that starts with the gzip magic bytes (`1f 8b`) is decompressed as
//! it is read, whatever its name; concatenated gzip members are read in turn.
//!
//! # Transformations, in this order
//!
//! 1. **`compress` K** sums each K consecutive intervals into one interval of
//!    the *same length*. That is time compression by K: the trace becomes K
//!    times shorter and the load per interval K times higher, so a day of
//!    traffic plays in 1/K of a day at K times the rate. Summing also smooths
//!    the per-interval noise the way a K-times bigger audience would. A final
//!    group of fewer than K intervals is dropped, so that every interval is a
//!    sum of exactly K (a partial one would look like a sudden drop in load).
//! 2. **`limit` N** keeps the first N intervals of the result; a
//!    one-number-per-line trace is read no further, so a limited read of a
//!    long file is quick (a CSV is read whole, to infer its interval).
//! 3. **`scale`** multiplies every interval's requests.
//!
//! Finally each interval's requests are divided by its length:
//! [`Trace::rps`] is requests per second.
//!
//! Reading is streamed into reused buffers (a line, or a CSV record), so a
//! 5-million line trace costs its 40 MB of numbers and nothing more.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A CSV trace spanning more intervals than this is an error: at one
/// interval a second it is over a year and a half, ten times the NASA trace,
/// far more likely a wrong timestamp than a real trace.
pub const MAX_INTERVALS: u64 = 50_000_000;

/// A unix timestamp at or above this is in milliseconds (see the module docs).
const MILLISECONDS_FROM: f64 = 1e11;

/// Timestamps beyond ±this many milliseconds (about the year 33 000) are
/// rejected before they can overflow the arithmetic on them.
const MAX_ABS_TIMESTAMP_MS: f64 = 1e15;

/// The first bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Header names recognised as the timestamp column, compared ignoring case.
const TIMESTAMP_COLUMNS: [&str; 3] = ["ts", "timestamp", "time"];

/// Read buffer size: large reads keep the gzip decoder and the line splitter
/// busy rather than the system calls.
const READ_BUFFER_BYTES: usize = 1 << 16;

/// A load trace: requests per second in consecutive intervals of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Length of each interval, in seconds.
    pub interval_secs: f64,
    /// Requests per second in each interval, first interval first.
    pub rps: Vec<f64>,
}

impl Trace {
    /// Total time the trace covers, in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.rps.len() as f64 * self.interval_secs
    }

    /// Mean requests per second over the whole trace (0 for an empty trace).
    pub fn mean_rps(&self) -> f64 {
        if self.rps.is_empty() {
            0.0
        } else {
            self.rps.iter().sum::<f64>() / self.rps.len() as f64
        }
    }

    /// Highest requests per second in any interval (0 for an empty trace).
    pub fn peak_rps(&self) -> f64 {
        self.rps.iter().copied().fold(0.0, f64::max)
    }
}

/// How to read a trace and what to do to it; see the module docs for the order.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    /// Interval length, in seconds, of a one-number-per-line trace (and of a
    /// CSV trace with a single row, where no step can be inferred).
    pub interval_secs: f64,
    /// The CSV column holding requests; `None` takes the first column that is
    /// not the timestamp.
    pub value_column: Option<String>,
    /// Multiplies every interval's requests (1 keeps the trace as it is).
    pub scale: f64,
    /// Sums each K consecutive intervals into one of the same length: time
    /// compression by K (1 keeps the trace as it is).
    pub compress: u32,
    /// Keeps only the first N intervals, after compression.
    pub limit: Option<usize>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            interval_secs: 1.0,
            value_column: None,
            scale: 1.0,
            compress: 1,
            limit: None,
        }
    }
}

/// A trace that could not be read. `file` is the path, or the name the caller
/// gave to [`parse_trace`]; `line` and `column` count from 1.
#[derive(Debug, Error)]
pub enum TraceError {
    /// An option is out of range.
    #[error("invalid trace option {option}: {reason}")]
    InvalidOption {
        /// The option's name, as in [`TraceOptions`].
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be opened.
    #[error("{file}: cannot open: {source}")]
    Open {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading failed part-way (an I/O error, or a corrupt or truncated gzip stream).
    #[error("{file}:{line}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The line being read.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line of a one-number-per-line trace is not what it should be.
    #[error("{file}:{line}:{column}: {what}: {reason}, found {text:?}")]
    BadField {
        /// The file.
        file: String,
        /// The line.
        line: u64,
        /// Where in the line the field starts, in characters.
        column: usize,
        /// What the field should be ("a number of requests", "a timestamp", ...).
        what: &'static str,
        /// Why it is not.
        reason: String,
        /// The field as written.
        text: String,
    },
    /// A field of a CSV row is not what its column requires.
    #[error("{file}:{line}: {what} in column {column:?}: {reason}, found {text:?}")]
    BadCsvField {
        /// The file.
        file: String,
        /// The line where the row starts.
        line: u64,
        /// The column's name in the header.
        column: String,
        /// What the field should be ("a number of requests", "a timestamp", ...).
        what: &'static str,
        /// Why it is not.
        reason: String,
        /// The field as read (without its quotes and surrounding spaces).
        text: String,
    },
    /// The CSV header names no timestamp column.
    #[error(
        "{file}:{line}: expected a number of requests per line, or a CSV header with a column named ts, timestamp or time; found {header:?}"
    )]
    NoTimestampColumn {
        /// The file.
        file: String,
        /// The header's line.
        line: u64,
        /// The header as written.
        header: String,
    },
    /// The CSV header has no column to take requests from.
    #[error("{file}:{line}: no column {wanted} in the CSV header; its columns are {columns:?}")]
    NoValueColumn {
        /// The file.
        file: String,
        /// The header's line.
        line: u64,
        /// The column asked for, quoted, or a description when none was.
        wanted: String,
        /// The header's columns.
        columns: Vec<String>,
    },
    /// A CSV row has a different number of fields than the header.
    #[error("{file}:{line}: expected {expected} fields as in the header, found {found}")]
    FieldCount {
        /// The file.
        file: String,
        /// The row's line.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A CSV row's time is not after the previous row's.
    #[error(
        "{file}:{line}: time {text:?} is not after the previous row's (line {previous_line}); rows must be sorted by time, without repeats"
    )]
    NotIncreasing {
        /// The file.
        file: String,
        /// The row's line.
        line: u64,
        /// The timestamp as read.
        text: String,
        /// The line of the previous row.
        previous_line: u64,
    },
    /// A CSV trace would span more than [`MAX_INTERVALS`] intervals.
    #[error(
        "{file}:{line}: this row is {intervals} intervals after the first, more than the {MAX_INTERVALS} allowed; is a timestamp wrong?"
    )]
    TooManyIntervals {
        /// The file.
        file: String,
        /// The row's line.
        line: u64,
        /// Intervals from the first row to this one.
        intervals: u64,
    },
    /// Nothing was left to replay.
    #[error(
        "{file}: no complete interval: {input_intervals} interval(s) read, compressed by {compress}"
    )]
    Empty {
        /// The file.
        file: String,
        /// Intervals read before compression.
        input_intervals: u64,
        /// The compression factor.
        compress: u32,
    },
}

/// Reads the trace in `path` (gzip or plain, as its first bytes say).
pub fn read_trace(path: &Path, options: &TraceOptions) -> Result<Trace, TraceError> {
    let file_name = path.display().to_string();
    let file = File::open(path).map_err(|source| TraceError::Open {
        file: file_name.clone(),
        source,
    })?;
    parse_trace(
        BufReader::with_capacity(READ_BUFFER_BYTES, file),
        &file_name,
        options,
    )
}

/// Reads a trace from `reader` (gzip or plain, as its first bytes say);
/// `file` names it in errors.
pub fn parse_trace<R: BufRead>(
    mut reader: R,
    file: &str,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    validate(options)?;
    let is_gzip = reader
        .fill_buf()
        .map_err(|source| TraceError::Read {
            file: file.to_string(),
            line: 1,
            source,
        })?
        .starts_with(&GZIP_MAGIC);
    if is_gzip {
        let text = BufReader::with_capacity(READ_BUFFER_BYTES, MultiGzDecoder::new(reader));
        parse_text(LineReader::new(text, file), options)
    } else {
        parse_text(LineReader::new(reader, file), options)
    }
}

fn validate(options: &TraceOptions) -> Result<(), TraceError> {
    let invalid = |option, reason: String| Err(TraceError::InvalidOption { option, reason });
    if !(options.interval_secs.is_finite() && options.interval_secs > 0.0) {
        return invalid(
            "interval_secs",
            format!(
                "must be a positive number of seconds, not {}",
                options.interval_secs
            ),
        );
    }
    if !(options.scale.is_finite() && options.scale >= 0.0) {
        return invalid(
            "scale",
            format!("must be a finite number ≥ 0, not {}", options.scale),
        );
    }
    if options.compress == 0 {
        return invalid("compress", "must be at least 1".to_string());
    }
    if options.limit == Some(0) {
        return invalid("limit", "must be at least 1 interval".to_string());
    }
    Ok(())
}

/// Lines of text, skipping blank and `#` lines, counting line numbers.
struct LineReader<'f, R> {
    reader: R,
    file: &'f str,
    buffer: Vec<u8>,
    line: u64,
}

impl<'f, R: BufRead> LineReader<'f, R> {
    fn new(reader: R, file: &'f str) -> Self {
        LineReader {
            reader,
            file,
            buffer: Vec::with_capacity(256),
            line: 0,
        }
    }

    /// The reader, positioned after the last line returned.
    fn into_inner(self) -> R {
        self.reader
    }

    /// The next line with content and its number, without its line ending
    /// (leading spaces are kept, so that columns count from the line's start).
    fn next_content_line(&mut self) -> Result<Option<(u64, &str)>, TraceError> {
        // Find the line's extent first and borrow the buffer only once found:
        // returning a borrow from inside the loop would hold it across reads.
        let (start, end) = loop {
            self.buffer.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(|source| TraceError::Read {
                    file: self.file.to_string(),
                    line: self.line + 1,
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            // Spreadsheets like to start a CSV with a byte-order mark.
            let start = if self.line == 1 && self.buffer.starts_with(b"\xef\xbb\xbf") {
                3
            } else {
                0
            };
            let bytes = &self.buffer[start..];
            if matches!(bytes.trim_ascii().first(), None | Some(b'#')) {
                continue;
            }
            break (start, start + bytes.trim_ascii_end().len());
        };
        let bytes = &self.buffer[start..end];
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Some((self.line, text))),
            Err(_) => Err(TraceError::BadField {
                file: self.file.to_string(),
                line: self.line,
                column: 1,
                what: "a line of text",
                reason: "not valid UTF-8".to_string(),
                text: String::from_utf8_lossy(bytes).into_owned(),
            }),
        }
    }
}

/// Collects requests per input interval into compressed, limited intervals.
struct IntervalSink {
    compress: u32,
    limit: usize,
    group_requests: f64,
    group_len: u32,
    input_intervals: u64,
    requests: Vec<f64>,
}

impl IntervalSink {
    fn new(options: &TraceOptions) -> Self {
        IntervalSink {
            compress: options.compress,
            limit: options.limit.unwrap_or(usize::MAX),
            group_requests: 0.0,
            group_len: 0,
            input_intervals: 0,
            requests: Vec::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.requests.len() >= self.limit
    }

    fn push(&mut self, requests: f64) {
        self.input_intervals += 1;
        self.group_requests += requests;
        self.group_len += 1;
        if self.group_len == self.compress {
            self.requests.push(self.group_requests);
            self.group_requests = 0.0;
            self.group_len = 0;
        }
    }

    fn into_trace(self, file: &str, interval_secs: f64, scale: f64) -> Result<Trace, TraceError> {
        if self.requests.is_empty() {
            return Err(TraceError::Empty {
                file: file.to_string(),
                input_intervals: self.input_intervals,
                compress: self.compress,
            });
        }
        let per_request = scale / interval_secs;
        let mut rps = self.requests;
        for value in &mut rps {
            *value *= per_request;
        }
        Ok(Trace { interval_secs, rps })
    }
}

fn parse_text<R: BufRead>(
    mut lines: LineReader<'_, R>,
    options: &TraceOptions,
) -> Result<Trace, TraceError> {
    let file = lines.file;
    let mut sink = IntervalSink::new(options);
    let Some((first_line, first_text)) = lines.next_content_line()? else {
        return sink.into_trace(file, options.interval_secs, options.scale);
    };
    if first_text.trim().parse::<f64>().is_ok() {
        sink.push(parse_requests(
            file,
            first_line,
            first_text,
            first_text.trim(),
        )?);
        while !sink.is_full() {
            let Some((line, text)) = lines.next_content_line()? else {
                break;
            };
            sink.push(parse_requests(file, line, text, text.trim())?);
        }
        return sink.into_trace(file, options.interval_secs, options.scale);
    }
    // A CSV: the csv crate reads it from the header on, the header included.
    // Records end at `\n` only (a `\r` before it is trimmed with the field),
    // and the input ends with one, so that every record's line is known (see
    // `CsvReader::next_record`).
    let header_text = first_text.to_string();
    let rest = io::Cursor::new(format!("{header_text}\n"))
        .chain(lines.into_inner())
        .chain(&b"\n"[..]);
    let mut csv = CsvReader {
        reader: csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(READ_BUFFER_BYTES)
            .from_reader(rest),
        record: csv::ByteRecord::new(),
        file,
        first_line,
    };
    let header = CsvHeader::parse(&mut csv, &header_text, options)?;
    let rows = read_csv_rows(&mut csv, &header)?;
    let interval_ms = most_common_step_ms(&rows);
    let interval_secs = interval_ms.map_or(options.interval_secs, |ms| ms as f64 / 1000.0);
    fill_intervals(file, &rows, interval_ms, &mut sink)?;
    sink.into_trace(file, interval_secs, options.scale)
}

/// Requests in one interval: a finite number ≥ 0, or why it is not.
fn requests_value(field: &str) -> Result<f64, &'static str> {
    let value: f64 = field.parse().map_err(|_| "not a number")?;
    if !value.is_finite() {
        return Err("not a finite number");
    }
    if value < 0.0 {
        return Err("negative");
    }
    Ok(value)
}

/// A line of a one-number-per-line trace. `field` is a slice of `line_text`.
fn parse_requests(file: &str, line: u64, line_text: &str, field: &str) -> Result<f64, TraceError> {
    requests_value(field).map_err(|reason| TraceError::BadField {
        file: file.to_string(),
        line,
        column: column_of(line_text, field),
        what: "a number of requests",
        reason: reason.to_string(),
        text: field.to_string(),
    })
}

/// The 1-based character column at which `field`, a slice of `line`, starts.
fn column_of(line: &str, field: &str) -> usize {
    let offset = (field.as_ptr() as usize)
        .checked_sub(line.as_ptr() as usize)
        .filter(|offset| *offset <= line.len())
        .unwrap_or(0);
    line.get(..offset)
        .map_or(0, |prefix| prefix.chars().count())
        + 1
}

/// The csv crate's reader over a CSV trace from its header on, and the
/// record it reuses.
struct CsvReader<'f, R> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    file: &'f str,
    /// The file's line of the header, the reader's line 1.
    first_line: u64,
}

impl<R: Read> CsvReader<'_, R> {
    /// The file's line of a line the reader counts from 1.
    fn file_line(&self, csv_line: u64) -> u64 {
        self.first_line + csv_line.saturating_sub(1)
    }

    /// Reads the next record with content into `self.record`, and returns
    /// its line; `None` at the end.
    fn next_record(&mut self) -> Result<Option<u64>, TraceError> {
        loop {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|error| {
                    let line = error
                        .position()
                        .map_or_else(|| self.reader.position().line(), csv::Position::line);
                    // Reading bytes, flexible, the only error is the input's.
                    let source = match error.into_kind() {
                        csv::ErrorKind::Io(source) => source,
                        other => io::Error::other(format!("{other:?}")),
                    };
                    TraceError::Read {
                        file: self.file.to_string(),
                        line: self.file_line(line),
                        source,
                    }
                })?;
            if !more {
                return Ok(None);
            }
            // A line of only spaces is blank, as in the other format.
            if self.record.len() == 1 && self.record[0].trim_ascii().is_empty() {
                continue;
            }
            // The reader is now past the record's final `\n`; the record
            // starts as many lines before as it holds (in quoted fields).
            // (The record's own position is where the previous one ended,
            // before any comment or blank line the reader skipped.)
            let newlines = self
                .record
                .as_slice()
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            let line = self
                .reader
                .position()
                .line()
                .saturating_sub(1 + newlines as u64);
            return Ok(Some(self.file_line(line)));
        }
    }

    /// Field `index` of the record read last, on `line`, as text without
    /// surrounding spaces; `columns` name the fields in errors (the header's,
    /// or none while reading it).
    fn field(&self, index: usize, line: u64, columns: &[String]) -> Result<&str, TraceError> {
        let bytes = self.record.get(index).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::trim)
            .map_err(|_| TraceError::BadCsvField {
                file: self.file.to_string(),
                line,
                column: columns
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| format!("number {}", index + 1)),
                what: "text",
                reason: "not valid UTF-8".to_string(),
                text: String::from_utf8_lossy(bytes).into_owned(),
            })
    }
}

/// Which CSV columns hold the time and the requests, and their names.
struct CsvHeader {
    fields: usize,
    timestamp_index: usize,
    value_index: usize,
    columns: Vec<String>,
}

impl CsvHeader {
    /// Reads the header, the reader's first record; `text` is its line.
    fn parse<R: Read>(
        csv: &mut CsvReader<'_, R>,
        text: &str,
        options: &TraceOptions,
    ) -> Result<Self, TraceError> {
        let file = csv.file;
        let line = csv.first_line;
        let columns: Vec<String> = match csv.next_record()? {
            Some(line) => (0..csv.record.len())
                .map(|index| csv.field(index, line, &[]).map(str::to_string))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let timestamp_index = columns
            .iter()
            .position(|name| {
                TIMESTAMP_COLUMNS
                    .iter()
                    .any(|wanted| name.eq_ignore_ascii_case(wanted))
            })
            .ok_or_else(|| TraceError::NoTimestampColumn {
                file: file.to_string(),
                line,
                header: text.to_string(),
            })?;
        let value_index = match &options.value_column {
            Some(wanted) => columns.iter().position(|name| name == wanted),
            None => (0..columns.len()).find(|index| *index != timestamp_index),
        };
        let value_index = value_index.ok_or_else(|| TraceError::NoValueColumn {
            file: file.to_string(),
            line,
            wanted: options.value_column.as_ref().map_or_else(
                || "besides the timestamp".to_string(),
                |name| format!("{name:?}"),
            ),
            columns: columns.clone(),
        })?;
        Ok(CsvHeader {
            fields: columns.len(),
            timestamp_index,
            value_index,
            columns,
        })
    }
}

/// One CSV row: when, how many requests, and where it was in the file.
struct CsvRow {
    timestamp_ms: i64,
    requests: f64,
    line: u64,
}

/// How the file writes its timestamps, fixed by the first row.
#[derive(Clone, Copy)]
enum TimestampUnit {
    Seconds,
    Milliseconds,
    Rfc3339,
}

fn read_csv_rows<R: Read>(
    csv: &mut CsvReader<'_, R>,
    header: &CsvHeader,
) -> Result<Vec<CsvRow>, TraceError> {
    let file = csv.file;
    let mut rows: Vec<CsvRow> = Vec::new();
    let mut file_unit = None;
    while let Some(line) = csv.next_record()? {
        if csv.record.len() != header.fields {
            return Err(TraceError::FieldCount {
                file: file.to_string(),
                line,
                expected: header.fields,
                found: csv.record.len(),
            });
        }
        let bad_field = |index: usize, what, reason: String, text: &str| TraceError::BadCsvField {
            file: file.to_string(),
            line,
            column: header.columns[index].clone(),
            what,
            reason,
            text: text.to_string(),
        };
        let value_text = csv.field(header.value_index, line, &header.columns)?;
        let requests = requests_value(value_text).map_err(|reason| {
            bad_field(
                header.value_index,
                "a number of requests",
                reason.to_string(),
                value_text,
            )
        })?;
        let timestamp_text = csv.field(header.timestamp_index, line, &header.columns)?;
        let unit = *file_unit.get_or_insert_with(|| timestamp_unit(timestamp_text));
        let timestamp_ms = parse_timestamp_ms(timestamp_text, unit).map_err(|reason| {
            bad_field(
                header.timestamp_index,
                "a timestamp",
                reason,
                timestamp_text,
            )
        })?;
        if let Some(previous) = rows.last()
            && timestamp_ms <= previous.timestamp_ms
        {
            return Err(TraceError::NotIncreasing {
                file: file.to_string(),
                line,
                text: timestamp_text.to_string(),
                previous_line: previous.line,
            });
        }
        rows.push(CsvRow {
            timestamp_ms,
            requests,
            line,
        });
    }
    Ok(rows)
}

fn timestamp_unit(text: &str) -> TimestampUnit {
    match text.parse::<f64>() {
        Ok(value) if value.abs() >= MILLISECONDS_FROM => TimestampUnit::Milliseconds,
        Ok(_) => TimestampUnit::Seconds,
        Err(_) => TimestampUnit::Rfc3339,
    }
}

fn parse_timestamp_ms(text: &str, unit: TimestampUnit) -> Result<i64, String> {
    let per_unit_ms = match unit {
        TimestampUnit::Rfc3339 => return parse_rfc3339_ms(text),
        TimestampUnit::Seconds => 1000.0,
        TimestampUnit::Milliseconds => 1.0,
    };
    let value: f64 = text
        .parse()
        .map_err(|_| "not a number, and the first row's timestamp was a unix time".to_string())?;
    let ms = (value * per_unit_ms).round();
    if !(ms.is_finite() && ms.abs() <= MAX_ABS_TIMESTAMP_MS) {
        return Err("out of range".to_string());
    }
    // In range, so the conversion is exact.
    Ok(ms as i64)
}

/// Parses an RFC 3339 time, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, into
/// unix milliseconds (a fraction rounded to the nearest).
fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|error| {
        format!("expected a unix time or an RFC 3339 time such as 1995-07-01T04:00:01Z or 1995-07-01T00:00:01-04:00 ({error})")
    })?;
    // Years 0 to 9999, as RFC 3339 writes them: a few hundred billion
    // seconds at most, far inside an i64 of milliseconds.
    let ms = (time.unix_timestamp_nanos() + 500_000).div_euclid(1_000_000);
    i64::try_from(ms).map_err(|_| "out of range".to_string())
}

/// The most common step between consecutive rows, the smaller on a tie;
/// `None` with fewer than two rows.
fn most_common_step_ms(rows: &[CsvRow]) -> Option<i64> {
    let mut counts: HashMap<i64, u64> = HashMap::new();
    for pair in rows.windows(2) {
        *counts
            .entry(pair[1].timestamp_ms - pair[0].timestamp_ms)
            .or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|(step_a, count_a), (step_b, count_b)| {
            count_a.cmp(count_b).then(step_b.cmp(step_a))
        })
        .map(|(step, _)| step)
}

/// Sums the rows into intervals of `interval_ms` from the first row's time,
/// zeros in the gaps, and feeds them to `sink` until it is full.
fn fill_intervals(
    file: &str,
    rows: &[CsvRow],
    interval_ms: Option<i64>,
    sink: &mut IntervalSink,
) -> Result<(), TraceError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // The most common step is positive, as timestamps strictly increase; a
    // single row has no step, and any positive one puts it in interval 0.
    let interval_ms = interval_ms.unwrap_or(1);
    let mut current_index: u64 = 0;
    let mut current_requests = 0.0;
    for row in rows {
        if sink.is_full() {
            return Ok(());
        }
        // Non-negative and at most 2e15 (timestamps are bounded), so it fits.
        let index = ((row.timestamp_ms - first.timestamp_ms) / interval_ms) as u64;
        if index > MAX_INTERVALS {
            return Err(TraceError::TooManyIntervals {
                file: file.to_string(),
                line: row.line,
                intervals: index,
            });
        }
        while current_index < index {
            if sink.is_full() {
                return Ok(());
            }
            sink.push(current_requests);
            current_requests = 0.0;
            current_index += 1;
        }
        current_requests += row.requests;
    }
    if !sink.is_full() {
        sink.push(current_requests);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn parse(text: &str, options: &TraceOptions) -> Result<Trace, TraceError> {
        parse_trace(text.as_bytes(), "trace", options)
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text.as_bytes()).expect("write to memory");
        encoder.finish().expect("finish in memory")
    }

    fn with(change: impl FnOnce(&mut TraceOptions)) -> TraceOptions {
        let mut options = TraceOptions::default();
        change(&mut options);
        options
    }

    #[test]
    fn reads_traces() {
        let cases: &[(&str, &str, TraceOptions, f64, &[f64])] = &[
            (
                "numbers",
                "1\n2\n3\n",
                TraceOptions::default(),
                1.0,
                &[1.0, 2.0, 3.0],
            ),
            (
                "blank lines, comments, CRLF, spaces, no final newline",
                "# NASA\r\n\r\n 4 \r\n# x\r\n5.5",
                TraceOptions::default(),
                1.0,
                &[4.0, 5.5],
            ),
            (
                "interval of 10 s gives requests / 10",
                "10\n20\n",
                with(|o| o.interval_secs = 10.0),
                10.0,
                &[1.0, 2.0],
            ),
            (
                "scale multiplies",
                "1\n2\n",
                with(|o| o.scale = 100.0),
                1.0,
                &[100.0, 200.0],
            ),
            (
                "compress sums, same interval, partial tail dropped",
                "1\n2\n3\n4\n5\n",
                with(|o| o.compress = 2),
                1.0,
                &[3.0, 7.0],
            ),
            (
                "limit counts intervals after compression",
                "1\n2\n3\n4\n5\n6\n",
                with(|o| {
                    o.compress = 2;
                    o.limit = Some(2);
                }),
                1.0,
                &[3.0, 7.0],
            ),
            (
                "all transformations",
                "1\n2\n3\n4\n",
                with(|o| {
                    o.interval_secs = 2.0;
                    o.compress = 2;
                    o.scale = 10.0;
                }),
                2.0,
                &[15.0, 35.0],
            ),
            (
                "csv in seconds, first other column",
                "ts,requests,bytes\n100,5,9\n101,6,9\n102,7,9\n",
                TraceOptions::default(),
                1.0,
                &[5.0, 6.0, 7.0],
            ),
            (
                "csv in milliseconds, named column, quoted header",
                "\"requests\",\"bytes\",\"Timestamp\"\n1,10,1700000000000\n2,20,1700000060000\n",
                with(|o| o.value_column = Some("bytes".into())),
                60.0,
                &[10.0 / 60.0, 20.0 / 60.0],
            ),
            (
                "csv gaps are zeros, interval is the most common step",
                "time,n\n0,10\n10,20\n40,40\n50,50\n",
                TraceOptions::default(),
                10.0,
                &[1.0, 2.0, 0.0, 0.0, 4.0, 5.0],
            ),
            (
                "csv row off the grid adds to its interval",
                "ts,n\n0,1\n10,2\n15,3\n20,4\n30,5\n40,6\n",
                TraceOptions::default(),
                10.0,
                &[0.1, 0.5, 0.4, 0.5, 0.6],
            ),
            (
                "csv RFC 3339, Z and offsets, fractions",
                "ts,n\n1995-07-01T04:00:00Z,60\n1995-07-01T00:01:00-04:00,120\n1995-07-01T04:02:00.000Z,180\n",
                TraceOptions::default(),
                60.0,
                &[1.0, 2.0, 3.0],
            ),
            (
                "csv with a quoted comma, which the old comma splitter read as a fourth field",
                "ts,requests,note\n0,5,\"GET /, then /index.html\"\n1,6,\"a \"\"b\"\", c\"\n",
                TraceOptions::default(),
                1.0,
                &[5.0, 6.0],
            ),
            (
                "csv value column named with a comma, quoted values, spaces, comments",
                "# header next\n\"time\",\"requests, per minute\"\n\"0\",\"60\"\n# pause\n\n 60 , 120 \n",
                with(|o| o.value_column = Some("requests, per minute".into())),
                60.0,
                &[1.0, 2.0],
            ),
            (
                "csv with CRLF line endings and a quoted last field",
                "ts,n\r\n0,\"1\"\r\n1,\"2\"\r\n",
                TraceOptions::default(),
                1.0,
                &[1.0, 2.0],
            ),
            (
                "csv with a single row takes interval_secs",
                "ts,n\n5,30\n",
                with(|o| o.interval_secs = 3.0),
                3.0,
                &[10.0],
            ),
            (
                "csv compress and limit",
                "ts,n\n0,1\n1,2\n2,3\n3,4\n4,5\n",
                with(|o| {
                    o.compress = 2;
                    o.limit = Some(1);
                }),
                1.0,
                &[3.0],
            ),
            (
                "csv limit stops before a far row",
                "ts,n\n0,1\n1,2\n2,3\n99999999999,4\n",
                with(|o| o.limit = Some(2)),
                1.0,
                &[1.0, 2.0],
            ),
        ];
        for (name, text, options, interval_secs, rps) in cases {
            let trace = parse(text, options).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(trace.interval_secs, *interval_secs, "{name}");
            assert_eq!(trace.rps.len(), rps.len(), "{name}: {:?}", trace.rps);
            for (got, want) in trace.rps.iter().zip(rps.iter()) {
                assert!(
                    (got - want).abs() < 1e-9,
                    "{name}: {:?} != {rps:?}",
                    trace.rps
                );
            }
        }
    }

    #[test]
    fn reads_gzip_whatever_the_name_and_concatenated_members() {
        let mut bytes = gzip("1\n2\n");
        bytes.extend(gzip("3\n"));
        let trace = parse_trace(bytes.as_slice(), "trace.txt", &TraceOptions::default())
            .expect("gzip trace");
        assert_eq!(trace.rps, vec![1.0, 2.0, 3.0]);

        let csv = gzip("ts,n\n0,4\n2,6\n");
        let trace =
            parse_trace(csv.as_slice(), "trace.csv", &TraceOptions::default()).expect("gzip csv");
        assert_eq!(trace.rps, vec![2.0, 3.0]);
    }

    #[test]
    fn reads_a_file_from_disk_and_names_it_in_errors() {
        let path =
            std::env::temp_dir().join(format!("nova-backtest-trace-{}.gz", std::process::id()));
        std::fs::write(&path, gzip("7\n8\n")).expect("write temp file");
        let trace = read_trace(&path, &TraceOptions::default());
        let _ = std::fs::remove_file(&path);
        assert_eq!(trace.expect("trace").rps, vec![7.0, 8.0]);

        let missing = read_trace(&path, &TraceOptions::default());
        match missing {
            Err(TraceError::Open { file, .. }) => assert_eq!(file, path.display().to_string()),
            other => panic!("expected Open, got {other:?}"),
        }
    }

    #[test]
    fn truncated_gzip_is_a_read_error() {
        let bytes = gzip(&"12345\n".repeat(10_000));
        let truncated = &bytes[..bytes.len() / 2];
        match parse_trace(truncated, "cut.gz", &TraceOptions::default()) {
            Err(TraceError::Read { file, line, .. }) => {
                assert_eq!(file, "cut.gz");
                assert!(line > 1, "line {line}");
            }
            other => panic!("expected Read, got {other:?}"),
        }
    }

    /// (input, expected error variant, line, column) for bad files.
    #[test]
    fn names_what_is_wrong() {
        let cases: &[(&str, &[u8], &str, Option<(u64, usize)>)] = &[
            ("number", b"1\n2\n  x3\n", "BadField", Some((3, 3))),
            ("negative", b"1\n-2\n", "BadField", Some((2, 1))),
            ("not finite", b"1\nNaN\n", "BadField", Some((2, 1))),
            ("infinite", b"1\ninf\n", "BadField", Some((2, 1))),
            ("not utf-8", b"1\n\xff\xfe\n", "BadField", Some((2, 1))),
            (
                "header without time",
                b"when,n\n1,2\n",
                "NoTimestampColumn",
                Some((1, 0)),
            ),
            (
                "text that is no header",
                b"hello\n",
                "NoTimestampColumn",
                Some((1, 0)),
            ),
            (
                "header with only time",
                b"ts\n1\n",
                "NoValueColumn",
                Some((1, 0)),
            ),
            (
                "field count",
                b"ts,n\n1,2\n2,3,4\n",
                "FieldCount",
                Some((3, 0)),
            ),
            (
                "quoted comma in a field the header does not have",
                b"ts,n\n1,2\n2,3,\"4,5\"\n",
                "FieldCount",
                Some((3, 0)),
            ),
            (
                "bad value in csv",
                b"ts,n\n1,2\n2,lots\n",
                "BadCsvField",
                Some((3, 0)),
            ),
            (
                "bad unix time",
                b"ts,n\n1,2\n2x,3\n",
                "BadCsvField",
                Some((3, 0)),
            ),
            (
                "bad date",
                b"n,ts\n1,1995-02-29T00:00:00Z\n",
                "BadCsvField",
                Some((2, 0)),
            ),
            (
                "bad zone",
                b"ts,n\n1995-02-28T00:00:00+0400,1\n",
                "BadCsvField",
                Some((2, 0)),
            ),
            (
                "not utf-8 in csv",
                b"ts,n\n1,\xff\n",
                "BadCsvField",
                Some((2, 0)),
            ),
            (
                "line after a comment and a quoted line break",
                b"# c\nts,n,note\n0,1,\"two\nlines\"\n# c\n1,x,y\n",
                "BadCsvField",
                Some((6, 0)),
            ),
            (
                "line in a CRLF file with a blank line",
                b"ts,n\r\n1,2\r\n \r\n2,x\r\n",
                "BadCsvField",
                Some((4, 0)),
            ),
            (
                "not sorted",
                b"ts,n\n5,1\n6,1\n4,1\n",
                "NotIncreasing",
                Some((4, 0)),
            ),
            (
                "repeated time",
                b"ts,n\n5,1\n5,1\n",
                "NotIncreasing",
                Some((3, 0)),
            ),
            (
                "huge gap",
                b"ts,n\n0,1\n1,1\n99999999999,1\n",
                "TooManyIntervals",
                Some((4, 0)),
            ),
            (
                "timestamp out of range",
                b"ts,n\n1e300,1\n",
                "BadCsvField",
                Some((2, 0)),
            ),
            ("empty file", b"", "Empty", None),
            ("only comments", b"# nothing\n\n", "Empty", None),
            ("header only", b"ts,n\n", "Empty", None),
        ];
        for (name, bytes, want, position) in cases {
            let error = parse_trace(*bytes, "bad.txt", &TraceOptions::default()).expect_err(name);
            let (variant, line, column) = match &error {
                TraceError::BadField { line, column, .. } => ("BadField", *line, *column),
                TraceError::BadCsvField { line, .. } => ("BadCsvField", *line, 0),
                TraceError::NoTimestampColumn { line, .. } => ("NoTimestampColumn", *line, 0),
                TraceError::NoValueColumn { line, .. } => ("NoValueColumn", *line, 0),
                TraceError::FieldCount { line, .. } => ("FieldCount", *line, 0),
                TraceError::NotIncreasing { line, .. } => ("NotIncreasing", *line, 0),
                TraceError::TooManyIntervals { line, .. } => ("TooManyIntervals", *line, 0),
                TraceError::Empty { .. } => ("Empty", 0, 0),
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(variant, *want, "{name}: {error}");
            if let Some(position) = position {
                assert_eq!((line, column), *position, "{name}: {error}");
            }
            assert!(error.to_string().starts_with("bad.txt"), "{name}: {error}");
        }
    }

    #[test]
    fn csv_errors_name_the_line_and_column() {
        let cases: &[(&str, &str)] = &[
            (
                "ts,n\n1,2\n2,lots\n",
                "bad.csv:3: a number of requests in column \"n\": not a number, found \"lots\"",
            ),
            (
                "n,\"the time\",ts\n1,x,\"1995-02-29T00:00:00Z\"\n",
                "bad.csv:2: a timestamp in column \"ts\": expected a unix time or an RFC 3339 time such as 1995-07-01T04:00:01Z or 1995-07-01T00:00:01-04:00 (day was not in range)",
            ),
            (
                "ts,n\n5,1\n4,1\n",
                "bad.csv:3: time \"4\" is not after the previous row's (line 2)",
            ),
        ];
        for (text, want) in cases {
            let error = parse_trace(text.as_bytes(), "bad.csv", &TraceOptions::default())
                .expect_err(text)
                .to_string();
            assert!(error.starts_with(want), "{error}");
        }
    }

    #[test]
    fn names_a_missing_value_column() {
        let options = with(|o| o.value_column = Some("rps".into()));
        match parse("ts,requests\n1,2\n", &options) {
            Err(TraceError::NoValueColumn {
                wanted, columns, ..
            }) => {
                assert_eq!(wanted, "\"rps\"");
                assert_eq!(columns, vec!["ts", "requests"]);
            }
            other => panic!("expected NoValueColumn, got {other:?}"),
        }
    }

    #[test]
    fn too_short_to_compress_is_empty() {
        match parse("1\n2\n", &with(|o| o.compress = 3)) {
            Err(TraceError::Empty {
                input_intervals,
                compress,
                ..
            }) => assert_eq!((input_intervals, compress), (2, 3)),
            other => panic!("expected Empty, got {other:?}"),
        }
    }

    #[test]
    fn rejects_invalid_options() {
        let cases: &[(TraceOptions, &str)] = &[
            (with(|o| o.interval_secs = 0.0), "interval_secs"),
            (with(|o| o.interval_secs = f64::NAN), "interval_secs"),
            (with(|o| o.scale = -1.0), "scale"),
            (with(|o| o.scale = f64::INFINITY), "scale"),
            (with(|o| o.compress = 0), "compress"),
            (with(|o| o.limit = Some(0)), "limit"),
        ];
        for (options, want) in cases {
            match parse("1\n", options) {
                Err(TraceError::InvalidOption { option, .. }) => assert_eq!(option, *want),
                other => panic!("{want}: expected InvalidOption, got {other:?}"),
            }
        }
    }

    #[test]
    fn parses_rfc3339() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1995-07-01T04:00:01Z", Some(804_571_201_000)),
            ("1995-07-01T00:00:01-04:00", Some(804_571_201_000)),
            ("2000-02-29T12:00:00+01:30", Some(951_820_200_000)),
            ("2024-12-31 23:59:59.5z", Some(1_735_689_599_500)),
            ("1969-12-31T23:59:59Z", Some(-1000)),
            ("1970-01-01T00:00:00.0004Z", Some(0)),
            ("1970-01-01T00:00:00.0005Z", Some(1)),
            ("1969-12-31T23:59:59.9996Z", Some(0)),
            ("2023-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2023-13-01T00:00:00Z", None),
            ("2023-01-01T24:00:00Z", None),
            ("2023-01-01T00:00:00", None),
            ("2023-01-01T00:00:00.Z", None),
            ("2023-01-01T00:00:00+24:00", None),
            ("2023-1-01T00:00:00Z", None),
            ("2023-01-01T00:00:00Zjunk", None),
            ("2023-01-01T00:00:00Ž", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339_ms(text).ok(), *want, "{text}");
        }
    }

    #[test]
    fn tells_seconds_from_milliseconds() {
        let cases: &[(&str, f64)] = &[
            // 1 July 1995 in seconds and milliseconds, one-minute steps.
            ("ts,n\n804571200,60\n804571260,60\n", 60.0),
            ("ts,n\n804571200000,60\n804571260000,60\n", 60.0),
            // Small times are seconds.
            ("ts,n\n0,60\n60,60\n", 60.0),
            // Fractional seconds.
            ("ts,n\n0.5,1\n1.0,1\n", 0.5),
        ];
        for (text, interval_secs) in cases {
            let trace = parse(text, &TraceOptions::default()).expect(text);
            assert_eq!(trace.interval_secs, *interval_secs, "{text}");
        }
    }

    #[test]
    fn column_counts_characters() {
        let line = "é,  x";
        assert_eq!(column_of(line, &line[5..]), 5);
        assert_eq!(column_of(line, line), 1);
    }

    #[test]
    fn trace_summaries() {
        let trace = Trace {
            interval_secs: 2.0,
            rps: vec![1.0, 3.0, 2.0],
        };
        assert_eq!(trace.duration_secs(), 6.0);
        assert_eq!(trace.mean_rps(), 2.0);
        assert_eq!(trace.peak_rps(), 3.0);
        let empty = Trace {
            interval_secs: 1.0,
            rps: Vec::new(),
        };
        assert_eq!((empty.mean_rps(), empty.peak_rps()), (0.0, 0.0));
    }
}
