//! The framing of lockdownd and of every plist service reached through a usbmux tunnel
//! (MCInstall, mobileactivationd…): a 4-byte big-endian payload length, then a plist.
//! Peers send XML; binary plists are accepted on receive. The length is checked before
//! allocating.

use plist::Dictionary;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::bounded_plist::{self, Limits};
use crate::error::UsbmuxError;

/// Refuse anything larger: real messages (pair requests, profiles) are far below this.
pub const MAX_MESSAGE_LEN: u32 = 16 * 1024 * 1024;
/// Bounds of one message's plist.
pub const LIMITS: Limits = Limits::new(MAX_MESSAGE_LEN as usize);

/// Encodes `dict` as XML with its length prefix.
pub fn encode(dict: &Dictionary) -> Result<Vec<u8>, UsbmuxError> {
    let mut body = Vec::new();
    plist::to_writer_xml(&mut body, dict).map_err(|e| UsbmuxError::Plist(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| UsbmuxError::FrameTooLarge {
        length: u32::MAX,
        max: MAX_MESSAGE_LEN,
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a plist body (XML or binary) into a dictionary, within [`LIMITS`].
pub fn decode_body(body: &[u8]) -> Result<Dictionary, UsbmuxError> {
    Ok(bounded_plist::dictionary_from_bytes(body, LIMITS)?)
}

/// Parses one message from the front of `bytes`; returns it and the rest.
pub fn parse(bytes: &[u8]) -> Result<(Dictionary, &[u8]), UsbmuxError> {
    let len_bytes: [u8; 4] =
        bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(UsbmuxError::Truncated {
                needed: 4,
                got: bytes.len(),
            })?;
    let len = check_len(u32::from_be_bytes(len_bytes))?;
    let body = bytes.get(4..4 + len).ok_or(UsbmuxError::Truncated {
        needed: 4 + len,
        got: bytes.len(),
    })?;
    Ok((decode_body(body)?, &bytes[4 + len..]))
}

fn check_len(len: u32) -> Result<usize, UsbmuxError> {
    if len > MAX_MESSAGE_LEN {
        return Err(UsbmuxError::FrameTooLarge {
            length: len,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(len as usize)
}

/// Reads one message. `Ok(None)` when the peer closed before a new message.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Dictionary>, UsbmuxError> {
    let mut len_bytes = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader.read(&mut len_bytes[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(UsbmuxError::Truncated {
                    needed: 4,
                    got: filled,
                })
            };
        }
        filled += n;
    }
    let len = check_len(u32::from_be_bytes(len_bytes))?;
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => UsbmuxError::Truncated {
                needed: 4 + len,
                got: 4,
            },
            _ => UsbmuxError::Io(e),
        })?;
    decode_body(&body).map(Some)
}

pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    dict: &Dictionary,
) -> Result<(), UsbmuxError> {
    writer.write_all(&encode(dict)?).await?;
    writer.flush().await?;
    Ok(())
}
