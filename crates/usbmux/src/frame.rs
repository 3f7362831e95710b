//! The 16-byte usbmuxd header and whole frames.
//!
//! Four little-endian u32 fields: total length (header included), protocol version (0 binary,
//! 1 plist), message type and tag. Lengths come from the peer, so they are checked before any
//! allocation: a header shorter than itself or longer than the caller's limit is an error.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::bounded_plist::{self, Limits};
use crate::error::UsbmuxError;

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 16;
/// Linux usbmuxd closes a client whose message exceeds this (`CMD_BUF_SIZE`).
pub const MAX_REQUEST_LEN: u32 = 0x10000;
/// Largest reply a client accepts (device lists of a big cart, pair records): generous but bounded.
pub const MAX_REPLY_LEN: u32 = 4 * 1024 * 1024;

/// Bounds of a frame's plist: no frame read is longer than [`MAX_REPLY_LEN`].
pub const PLIST_LIMITS: Limits = Limits::new(MAX_REPLY_LEN as usize);

/// Protocol version carried in the header.
pub const VERSION_BINARY: u32 = 0;
pub const VERSION_PLIST: u32 = 1;

/// Message types (usbmuxd-proto.h).
pub mod message_type {
    pub const RESULT: u32 = 1;
    pub const CONNECT: u32 = 2;
    pub const LISTEN: u32 = 3;
    pub const DEVICE_ADD: u32 = 4;
    pub const DEVICE_REMOVE: u32 = 5;
    pub const DEVICE_PAIRED: u32 = 6;
    pub const PLIST: u32 = 8;
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub version: u32,
    pub message: u32,
    pub tag: u32,
}

impl Header {
    /// Decodes and checks a header: `length` must cover at least the header and at most `max_len`.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_len: u32) -> Result<Self, UsbmuxError> {
        let field =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header = Header {
            length: field(0),
            version: field(4),
            message: field(8),
            tag: field(12),
        };
        if (header.length as usize) < HEADER_LEN {
            return Err(UsbmuxError::FrameTooShort(header.length));
        }
        if header.length > max_len {
            return Err(UsbmuxError::FrameTooLarge {
                length: header.length,
                max: max_len,
            });
        }
        Ok(header)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.message.to_le_bytes());
        out[12..16].copy_from_slice(&self.tag.to_le_bytes());
        out
    }

    pub fn payload_len(&self) -> usize {
        self.length as usize - HEADER_LEN
    }
}

/// A header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame whose length field is computed from the payload.
    pub fn new(
        version: u32,
        message: u32,
        tag: u32,
        payload: Vec<u8>,
    ) -> Result<Self, UsbmuxError> {
        let length =
            u32::try_from(payload.len() + HEADER_LEN).map_err(|_| UsbmuxError::FrameTooLarge {
                length: u32::MAX,
                max: u32::MAX,
            })?;
        Ok(Frame {
            header: Header {
                length,
                version,
                message,
                tag,
            },
            payload,
        })
    }

    /// A version-1 plist frame carrying `dict` as XML, as every usbmuxd and client sends.
    pub fn plist(tag: u32, dict: &plist::Dictionary) -> Result<Self, UsbmuxError> {
        let mut payload = Vec::new();
        plist::to_writer_xml(&mut payload, dict).map_err(|e| UsbmuxError::Plist(e.to_string()))?;
        Frame::new(VERSION_PLIST, message_type::PLIST, tag, payload)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses one frame from the front of `bytes`, returning it and the bytes that follow.
    pub fn parse(bytes: &[u8], max_len: u32) -> Result<(Frame, &[u8]), UsbmuxError> {
        let head: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(UsbmuxError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            })?;
        let header = Header::decode(head, max_len)?;
        let end = header.length as usize;
        let payload = bytes.get(HEADER_LEN..end).ok_or(UsbmuxError::Truncated {
            needed: end,
            got: bytes.len(),
        })?;
        Ok((
            Frame {
                header,
                payload: payload.to_vec(),
            },
            &bytes[end..],
        ))
    }

    /// The payload as a plist dictionary (XML or binary), within [`PLIST_LIMITS`].
    pub fn plist_dict(&self) -> Result<plist::Dictionary, UsbmuxError> {
        Ok(bounded_plist::dictionary_from_bytes(
            &self.payload,
            PLIST_LIMITS,
        )?)
    }
}

/// Reads one frame. `Ok(None)` means the peer closed cleanly before a new header.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: u32,
) -> Result<Option<Frame>, UsbmuxError> {
    let mut head = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut head[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(UsbmuxError::Truncated {
                needed: HEADER_LEN,
                got: filled,
            });
        }
        filled += n;
    }
    let header = Header::decode(&head, max_len)?;
    let mut payload = vec![0u8; header.payload_len()];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => UsbmuxError::Truncated {
                needed: header.length as usize,
                got: HEADER_LEN,
            },
            _ => UsbmuxError::Io(e),
        })?;
    Ok(Some(Frame { header, payload }))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> Result<(), UsbmuxError> {
    writer.write_all(&frame.to_bytes()).await?;
    writer.flush().await?;
    Ok(())
}
