//! Field transcripts: every plist a host and one iPad exchanged (usbmuxd, lockdownd, each
//! service), in order, with the channel and the time since the transcript began
//! (`docs/protocol.md` §9).
//!
//! The protocol crates record through a [`Transcript`] handle. It is off by default and then
//! costs nothing: no tap is made, no stream is wrapped. When on, a connection gets a [`Tap`]
//! (its channel and a connection number) and its stream is wrapped in a [`Recorded`], which
//! splits the 4-byte-framed plists going each way. Recording sits above TLS: lockdownd's
//! session stream is wrapped again once TLS is on. Every message goes through
//! [`crate::redact::redact`] before a sink sees it, so no sink can write a secret.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use plist::{Dictionary, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bounded_plist::{self, BoundedPlistError, Limits};
use crate::plist_guard::SwitchTest;
use crate::plist_service::{LIMITS, MAX_MESSAGE_LEN};

/// The `Format` of a transcript's first entry.
pub const FORMAT: &str = "cartprep transcript";
pub const VERSION: u64 = 1;
/// The usbmuxd socket's channel name; lockdownd's is [`LOCKDOWND`], a service's is its name.
pub const USBMUXD: &str = "usbmuxd";
pub const LOCKDOWND: &str = "lockdownd";
/// A transcript file larger than this is refused by the reader.
pub const MAX_FILE_LEN: usize = 256 * 1024 * 1024;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Host to device (or to usbmuxd).
    Request,
    /// Device (or usbmuxd) to host.
    Reply,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "request" => Some(Direction::Request),
            "reply" => Some(Direction::Reply),
            _ => None,
        }
    }
}

/// One recorded message, already redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Seconds since the transcript began.
    pub at: f64,
    pub channel: String,
    /// Which connection of the transcript carried it (numbered from 1, per transcript).
    pub connection: u64,
    pub direction: Direction,
    pub message: Dictionary,
}

/// Where recorded messages go. Implementations receive redacted messages only.
pub trait TranscriptSink: Send + Sync {
    fn record(&self, entry: Entry);
}

struct Shared {
    sink: Box<dyn TranscriptSink>,
    started: Instant,
    connections: AtomicU64,
}

/// A handle the protocol crates record through; cloning shares the transcript.
#[derive(Clone, Default)]
pub struct Transcript(Option<Arc<Shared>>);

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_on() {
            "Transcript(on)"
        } else {
            "Transcript(off)"
        })
    }
}

impl Transcript {
    pub fn off() -> Self {
        Transcript(None)
    }

    pub fn new(sink: impl TranscriptSink + 'static) -> Self {
        Transcript(Some(Arc::new(Shared {
            sink: Box::new(sink),
            started: Instant::now(),
            connections: AtomicU64::new(0),
        })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A tap for a new connection on `channel`; `None` when the transcript is off.
    pub fn tap(&self, channel: &str) -> Option<Tap> {
        let shared = self.0.as_ref()?;
        Some(Tap {
            shared: shared.clone(),
            channel: channel.into(),
            connection: shared.connections.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

/// One connection's place in a transcript.
#[derive(Clone)]
pub struct Tap {
    shared: Arc<Shared>,
    channel: Arc<str>,
    connection: u64,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tap({} #{})", self.channel, self.connection)
    }
}

impl Tap {
    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn record(&self, direction: Direction, message: &Dictionary) {
        let at = self.shared.started.elapsed().as_secs_f64();
        self.shared.sink.record(Entry {
            at: (at * 1000.0).round() / 1000.0,
            channel: self.channel.to_string(),
            connection: self.connection,
            direction,
            message: crate::redact::redact(&self.channel, message),
        });
    }

    /// A message that could not be read as a plist: its size is recorded, not its bytes.
    fn unreadable(&self, direction: Direction, len: usize, why: &str) {
        let mut note = Dictionary::new();
        note.insert("Unreadable".into(), format!("{len} bytes: {why}").into());
        self.record(direction, &note);
    }
}

/// Splits one direction of a stream into 4-byte-framed plists.
#[derive(Debug, Default)]
struct Splitter {
    pending: Vec<u8>,
    /// Set when the stream stops carrying framed plists (a length beyond any message).
    lost: bool,
}

impl Splitter {
    /// Adds `bytes`; returns the complete messages (or why one could not be read).
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<Dictionary, (usize, String)>> {
        let mut out = Vec::new();
        if self.lost {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        while let Some(head) = self.pending.get(..4) {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if len > MAX_MESSAGE_LEN {
                out.push(Err((len as usize, "not a framed plist".into())));
                self.lost = true;
                self.pending = Vec::new();
                break;
            }
            let end = 4 + len as usize;
            if self.pending.len() < end {
                break;
            }
            let body: Vec<u8> = self.pending.drain(..end).skip(4).collect();
            out.push(
                bounded_plist::dictionary_from_bytes(&body, LIMITS)
                    .map_err(|e| (body.len(), e.to_string())),
            );
        }
        out
    }
}

/// A stream that records the framed plists going through it, each way, on its [`Tap`].
#[derive(Debug)]
pub struct Recorded<S> {
    inner: S,
    tap: Tap,
    requests: Splitter,
    replies: Splitter,
    stop_after: Option<SwitchTest>,
    stopped: bool,
}

impl<S> Recorded<S> {
    pub fn new(inner: S, tap: Tap) -> Self {
        Recorded {
            inner,
            tap,
            requests: Splitter::default(),
            replies: Splitter::default(),
            stop_after: None,
            stopped: false,
        }
    }

    /// Stops recording after a reply for which `test` is true (lockdownd's StartSession: the
    /// TLS stream above is recorded by a wrapper of its own).
    pub fn stop_after(mut self, test: SwitchTest) -> Self {
        self.stop_after = Some(test);
        self
    }

    fn take(&mut self, direction: Direction, bytes: &[u8]) {
        if self.stopped || bytes.is_empty() {
            return;
        }
        let splitter = match direction {
            Direction::Request => &mut self.requests,
            Direction::Reply => &mut self.replies,
        };
        for message in splitter.push(bytes) {
            match message {
                Ok(dict) => {
                    self.tap.record(direction, &dict);
                    if direction == Direction::Reply && self.stop_after.is_some_and(|t| t(&dict)) {
                        self.stopped = true;
                        return;
                    }
                }
                Err((len, why)) => self.tap.unreadable(direction, len, &why),
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let got = buf.filled()[before..].to_vec();
        this.take(Direction::Reply, &got);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.take(Direction::Request, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The first entry of a transcript file: what it is and which iPad it is of.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub udid: String,
    /// When the transcript began (RFC 3339, UTC).
    pub started: String,
    /// The iPad's properties as usbmuxd attached it (`DeviceProperties::properties_dict`).
    pub device: Dictionary,
}

impl Header {
    fn to_dict(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Format".into(), FORMAT.into());
        d.insert("Version".into(), VERSION.into());
        d.insert("UDID".into(), self.udid.clone().into());
        d.insert("Started".into(), self.started.clone().into());
        d.insert("Device".into(), Value::Dictionary(self.device.clone()));
        d
    }
}

fn entry_dict(entry: &Entry) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("At".into(), entry.at.into());
    d.insert("Channel".into(), entry.channel.clone().into());
    d.insert("Connection".into(), entry.connection.into());
    d.insert("Direction".into(), entry.direction.as_str().into());
    d.insert("Message".into(), Value::Dictionary(entry.message.clone()));
    d
}

/// A transcript written to a file: one XML plist document per entry, the header first.
pub struct FileSink {
    file: Mutex<std::fs::File>,
}

impl FileSink {
    /// Creates `path` (never overwriting; readable by its owner only) and writes the header.
    pub fn create(path: &Path, header: &Header) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(&document(&header.to_dict()))?;
        Ok(FileSink {
            file: Mutex::new(file),
        })
    }
}

fn document(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a dictionary of plain values to memory cannot fail.
    let _ = plist::to_writer_xml(&mut out, dict);
    out.push(b'\n');
    out
}

impl TranscriptSink for FileSink {
    fn record(&self, entry: Entry) {
        let bytes = document(&entry_dict(&entry));
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A transcript is a debugging aid: a full disk must not stop the iPad's work.
        if let Err(e) = file.write_all(&bytes) {
            tracing::warn!("transcript: cannot write: {e}");
        }
    }
}

/// Why a transcript file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("cannot read the transcript: {0}")]
    Io(#[from] std::io::Error),
    #[error("the transcript's entry {index} is not a plist: {source}")]
    Plist {
        index: usize,
        source: BoundedPlistError,
    },
    #[error("the transcript's entry {index} is not valid: {reason}")]
    Entry { index: usize, reason: String },
    #[error("not a cartprep transcript (no header)")]
    NoHeader,
}

/// Reads a transcript file: its header and entries, in order.
pub fn read(path: &Path) -> Result<(Header, Vec<Entry>), TranscriptError> {
    let bytes = bounded_plist::read_file(path, MAX_FILE_LEN).map_err(|e| match e {
        BoundedPlistError::Io(io) => TranscriptError::Io(io),
        other => TranscriptError::Io(std::io::Error::other(other.to_string())),
    })?;
    parse(&bytes)
}

/// Parses a transcript's text. Documents are split at `</plist>`, which cannot occur inside
/// an XML plist's values (`<` is always escaped there).
pub fn parse(bytes: &[u8]) -> Result<(Header, Vec<Entry>), TranscriptError> {
    const END: &[u8] = b"</plist>";
    let limits = Limits::new(MAX_MESSAGE_LEN as usize * 2);
    let mut documents = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.windows(END.len()).position(|w| w == END) {
        documents.push(&rest[..i + END.len()]);
        rest = &rest[i + END.len()..];
    }
    let mut dicts = documents.into_iter().enumerate().map(|(index, doc)| {
        bounded_plist::dictionary_from_bytes(doc, limits)
            .map_err(|source| TranscriptError::Plist { index, source })
    });
    let header = dicts.next().ok_or(TranscriptError::NoHeader)??;
    if header.get("Format").and_then(Value::as_string) != Some(FORMAT) {
        return Err(TranscriptError::NoHeader);
    }
    let text = |d: &Dictionary, k: &str| d.get(k).and_then(Value::as_string).map(str::to_owned);
    let header = Header {
        udid: text(&header, "UDID").ok_or(TranscriptError::NoHeader)?,
        started: text(&header, "Started").unwrap_or_default(),
        device: header
            .get("Device")
            .and_then(Value::as_dictionary)
            .cloned()
            .unwrap_or_default(),
    };
    let mut entries = Vec::new();
    for (i, dict) in dicts.enumerate() {
        let index = i + 1;
        let dict = dict?;
        let bad = |reason: &str| TranscriptError::Entry {
            index,
            reason: reason.into(),
        };
        entries.push(Entry {
            at: dict.get("At").and_then(Value::as_real).unwrap_or(0.0),
            channel: text(&dict, "Channel").ok_or_else(|| bad("no Channel"))?,
            connection: dict
                .get("Connection")
                .and_then(Value::as_unsigned_integer)
                .ok_or_else(|| bad("no Connection"))?,
            direction: text(&dict, "Direction")
                .as_deref()
                .and_then(Direction::parse)
                .ok_or_else(|| bad("no Direction"))?,
            message: dict
                .get("Message")
                .and_then(Value::as_dictionary)
                .cloned()
                .ok_or_else(|| bad("no Message"))?,
        });
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plist_service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<Entry>>>);

    impl TranscriptSink for Memory {
        fn record(&self, entry: Entry) {
            self.0.lock().unwrap().push(entry);
        }
    }

    fn message(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn an_off_transcript_makes_no_taps() {
        assert!(Transcript::off().tap(LOCKDOWND).is_none());
        assert!(!Transcript::default().is_on());
    }

    #[tokio::test]
    async fn both_directions_are_recorded_in_order_whatever_the_chunk_sizes() {
        let memory = Memory::default();
        let transcript = Transcript::new(memory.clone());
        let tap = transcript.tap(LOCKDOWND).unwrap();
        let request = plist_service::encode(&message(&[("Request", "QueryType".into())])).unwrap();
        let reply = plist_service::encode(&message(&[
            ("Request", "QueryType".into()),
            ("Type", "com.apple.mobile.lockdown".into()),
        ]))
        .unwrap();
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut recorded = Recorded::new(ours, tap);
        for chunk in request.chunks(5) {
            recorded.write_all(chunk).await.unwrap();
        }
        let mut got = vec![0u8; request.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request, "bytes pass unchanged");
        theirs.write_all(&reply).await.unwrap();
        let mut back = vec![0u8; reply.len()];
        for piece in back.chunks_mut(3) {
            recorded.read_exact(piece).await.unwrap();
        }
        assert_eq!(back, reply);

        let entries = memory.0.lock().unwrap().clone();
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (e.channel.as_str(), e.connection, e.direction))
            .collect();
        assert_eq!(
            seen,
            [
                (LOCKDOWND, 1, Direction::Request),
                (LOCKDOWND, 1, Direction::Reply)
            ]
        );
        assert_eq!(
            entries[1].message.get("Type").and_then(Value::as_string),
            Some("com.apple.mobile.lockdown")
        );
    }

    #[tokio::test]
    async fn recording_stops_after_the_reply_that_turns_tls_on() {
        let memory = Memory::default();
        let tap = Transcript::new(memory.clone()).tap(LOCKDOWND).unwrap();
        let start = plist_service::encode(&message(&[
            ("Request", "StartSession".into()),
            ("EnableSessionSSL", true.into()),
        ]))
        .unwrap();
        let tls = [0x16, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5];
        let wire = [start, tls.to_vec()].concat();
        let mut recorded = Recorded::new(wire.as_slice(), tap)
            .stop_after(crate::plist_guard::lockdown_session_starts);
        let mut all = Vec::new();
        recorded.read_to_end(&mut all).await.unwrap();
        let entries = memory.0.lock().unwrap().clone();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }

    #[test]
    fn a_stream_that_is_not_framed_plists_is_noted_once() {
        let mut s = Splitter::default();
        let out = s.push(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        assert!(s.push(&[0, 0, 0, 1, b'x']).is_empty());
    }

    #[test]
    fn a_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.transcript");
        let header = Header {
            udid: "00008101-000A".into(),
            started: "2026-12-01T08:00:00Z".into(),
            device: message(&[("DeviceID", 3u64.into())]),
        };
        let sink = FileSink::create(&path, &header).unwrap();
        let transcript = Transcript::new(sink);
        let tap = transcript.tap("com.apple.mobile.MCInstall").unwrap();
        // A value holding "</plist>" must not split the document.
        tap.record(
            Direction::Request,
            &message(&[("RequestType", "Flush".into()), ("Note", "</plist>".into())]),
        );
        tap.record(
            Direction::Reply,
            &message(&[("Status", "Acknowledged".into())]),
        );
        let (h, entries) = read(&path).unwrap();
        assert_eq!(h, header);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].channel, "com.apple.mobile.MCInstall");
        assert_eq!(
            entries[0].message.get("Note").and_then(Value::as_string),
            Some("</plist>")
        );
        assert_eq!(entries[1].direction, Direction::Reply);
        assert!(
            FileSink::create(&path, &header).is_err(),
            "never overwrites"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
