//! A stream wrapper that checks every length-prefixed plist coming in before anyone reads it,
//! for clients whose parsing we do not control (the idevice crate reads lockdownd replies with
//! an unbounded length and a recursive parser).
//!
//! Each incoming message is read whole, checked with [`bounded_plist`] (size, depth,
//! expansion) and only then handed to the reader, byte for byte. A message that fails the check
//! is a read error (`InvalidData`), so the client fails cleanly instead of allocating gigabytes
//! or overflowing its stack. Writes pass through untouched.
//!
//! lockdownd switches the connection to TLS after a `StartSession` reply: from then on the bytes
//! are TLS records, not framed plists. `pass_through_after` names the message after which the
//! guard steps aside.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use plist::Dictionary;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bounded_plist;
use crate::plist_service::{LIMITS, MAX_MESSAGE_LEN};

/// Whether, after this message, the stream stops carrying framed plists.
pub type SwitchTest = fn(&Dictionary) -> bool;

#[derive(Debug)]
pub struct PlistGuard<S> {
    inner: S,
    head: [u8; 4],
    head_filled: usize,
    body: Vec<u8>,
    body_filled: usize,
    /// A checked message (head and body) being handed out, and how much of it was.
    out: Vec<u8>,
    out_pos: usize,
    switch_after: Option<SwitchTest>,
    /// Set once the message `switch_after` names was checked: the rest of the stream is raw.
    switching: bool,
    raw: bool,
}

impl<S> PlistGuard<S> {
    pub fn new(inner: S) -> Self {
        PlistGuard {
            inner,
            head: [0; 4],
            head_filled: 0,
            body: Vec::new(),
            body_filled: 0,
            out: Vec::new(),
            out_pos: 0,
            switch_after: None,
            switching: false,
            raw: false,
        }
    }

    /// Stops checking once a message for which `test` is true has been handed out.
    pub fn pass_through_after(mut self, test: SwitchTest) -> Self {
        self.switch_after = Some(test);
        self
    }
}

/// lockdownd's `StartSession` reply that turns TLS on: afterwards the stream carries TLS.
pub fn lockdown_session_starts(reply: &Dictionary) -> bool {
    reply.get("Request").and_then(plist::Value::as_string) == Some("StartSession")
        && reply
            .get("EnableSessionSSL")
            .and_then(plist::Value::as_boolean)
            .unwrap_or(false)
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

/// Fills `buf[*filled..]` from `inner`; `Ready(Ok(false))` at end of stream.
fn fill<S: AsyncRead + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &mut [u8],
    filled: &mut usize,
) -> Poll<std::io::Result<bool>> {
    while *filled < buf.len() {
        let mut rb = ReadBuf::new(&mut buf[*filled..]);
        ready!(Pin::new(&mut *inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(false));
        }
        *filled += n;
    }
    Poll::Ready(Ok(true))
}

impl<S: AsyncRead + Unpin> AsyncRead for PlistGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                    this.raw = this.switching;
                }
                return Poll::Ready(Ok(()));
            }
            if this.raw {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !ready!(fill(
                &mut this.inner,
                cx,
                &mut this.head,
                &mut this.head_filled
            ))? {
                return Poll::Ready(if this.head_filled == 0 {
                    Ok(()) // end of stream between messages
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                });
            }
            let len = u32::from_be_bytes(this.head);
            if len > MAX_MESSAGE_LEN {
                return Poll::Ready(Err(invalid(format!(
                    "message length {len} exceeds {MAX_MESSAGE_LEN} bytes"
                ))));
            }
            this.body.resize(len as usize, 0);
            if !ready!(fill(
                &mut this.inner,
                cx,
                &mut this.body,
                &mut this.body_filled
            ))? {
                return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let dict = bounded_plist::dictionary_from_bytes(&this.body, LIMITS)
                .map_err(|e| invalid(format!("refused message: {e}")))?;
            this.switching = this.switch_after.is_some_and(|test| test(&dict));
            this.out.extend_from_slice(&this.head);
            this.out.append(&mut this.body);
            this.head_filled = 0;
            this.body_filled = 0;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PlistGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plist_service;
    use crate::test_support::{Format, dict_with_deep_array};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn message(pairs: &[(&str, plist::Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn messages_pass_byte_for_byte_whatever_the_read_sizes() {
        let a = plist_service::encode(&message(&[("Request", "QueryType".into())])).unwrap();
        let b = plist_service::encode(&message(&[("Value", "18.5".into())])).unwrap();
        let wire = [a.clone(), b.clone()].concat();
        let mut guard = PlistGuard::new(wire.as_slice());
        let mut got = Vec::new();
        let mut chunk = [0u8; 7];
        loop {
            let n = guard.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, wire);
    }

    #[tokio::test]
    async fn a_deep_message_is_a_read_error_before_the_reader_sees_a_byte() {
        for format in [Format::Binary, Format::Xml] {
            let body = dict_with_deep_array(format, &[("Request", "GetValue")], 10_000);
            let wire = framed(&body);
            let mut guard = PlistGuard::new(wire.as_slice());
            let mut first = [0u8; 4];
            let err = guard.read_exact(&mut first).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{format:?}");
            assert!(
                err.to_string().contains("nests deeper"),
                "{format:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_huge_length_is_refused_before_allocating() {
        let wire = u32::MAX.to_be_bytes();
        let mut guard = PlistGuard::new(&wire[..]);
        let err = guard.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn after_a_session_starts_the_bytes_pass_raw() {
        let start = plist_service::encode(&message(&[
            ("Request", "StartSession".into()),
            ("EnableSessionSSL", true.into()),
        ]))
        .unwrap();
        // Not a framed plist: what a TLS record looks like to the guard.
        let tls = [0x16, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5];
        let wire = [start.clone(), tls.to_vec()].concat();
        let mut guard =
            PlistGuard::new(wire.as_slice()).pass_through_after(lockdown_session_starts);
        let mut got = Vec::new();
        guard.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, wire);

        // Without the switch, the same bytes are refused.
        let mut strict = PlistGuard::new(wire.as_slice());
        assert!(strict.read_to_end(&mut Vec::new()).await.is_err());
    }

    #[test]
    fn only_a_session_with_tls_switches() {
        let cases = [
            (
                vec![
                    ("Request", "StartSession".into()),
                    ("EnableSessionSSL", true.into()),
                ],
                true,
            ),
            (
                vec![
                    ("Request", "StartSession".into()),
                    ("EnableSessionSSL", false.into()),
                ],
                false,
            ),
            (
                vec![
                    ("Request", "StartSession".into()),
                    ("Error", "InvalidHostID".into()),
                ],
                false,
            ),
            (
                vec![
                    ("Request", "GetValue".into()),
                    ("EnableSessionSSL", true.into()),
                ],
                false,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                lockdown_session_starts(&message(&pairs)),
                expected,
                "{pairs:?}"
            );
        }
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut guard = PlistGuard::new(ours);
        guard.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
