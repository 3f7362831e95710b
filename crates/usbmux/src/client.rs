//! Client helpers: one request per connection, as libusbmuxd does, each with a timeout.

use std::time::Duration;

use plist::{Dictionary, Value};

use crate::address::{UsbmuxAddress, UsbmuxStream};
use crate::device::DeviceProperties;
use crate::error::UsbmuxError;
use crate::frame::{self, Frame, MAX_REPLY_LEN, message_type};
use crate::listen::Listener;
use crate::message::{ClientInfo, Request, ResultCode, result_number};
use crate::transcript::{self, Direction, Tap, Transcript};

/// Default time to wait for a usbmuxd reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to usbmuxd in command state.
#[derive(Debug)]
pub struct UsbmuxClient {
    stream: UsbmuxStream,
    tag: u32,
    timeout: Duration,
    client: ClientInfo,
    /// Set when a transcript is on: requests and replies are recorded on the usbmuxd channel.
    tap: Option<Tap>,
}

impl UsbmuxClient {
    pub async fn connect(addr: &UsbmuxAddress) -> Result<Self, UsbmuxError> {
        Self::connect_with_timeout(addr, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        addr: &UsbmuxAddress,
        timeout: Duration,
    ) -> Result<Self, UsbmuxError> {
        let stream = tokio::time::timeout(timeout, addr.connect())
            .await
            .map_err(|_| UsbmuxError::Timeout(timeout))??;
        Ok(UsbmuxClient {
            stream,
            tag: 0,
            timeout,
            client: ClientInfo::cartprep(),
            tap: None,
        })
    }

    /// Records this connection's requests and replies in `transcript` (when it is on).
    pub fn recorded(mut self, transcript: &Transcript) -> Self {
        self.tap = transcript.tap(transcript::USBMUXD);
        self
    }

    /// Sends a request and returns the reply dict, checking the echoed tag.
    pub async fn request(&mut self, request: &Request) -> Result<Dictionary, UsbmuxError> {
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        let dict = request.to_dict(&self.client);
        if let Some(tap) = &self.tap {
            tap.record(Direction::Request, &dict);
        }
        let frame = Frame::plist(tag, &dict)?;
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, async {
            frame::write_frame(&mut self.stream, &frame).await?;
            frame::read_frame(&mut self.stream, MAX_REPLY_LEN).await
        })
        .await
        .map_err(|_| UsbmuxError::Timeout(timeout))??
        .ok_or(UsbmuxError::Closed)?;
        if reply.header.tag != tag {
            return Err(UsbmuxError::TagMismatch {
                expected: tag,
                got: reply.header.tag,
            });
        }
        if reply.header.message != message_type::PLIST {
            return Err(UsbmuxError::UnexpectedReply(format!(
                "message type {} to a plist request",
                reply.header.message
            )));
        }
        let reply = reply.plist_dict()?;
        if let Some(tap) = &self.tap {
            tap.record(Direction::Reply, &reply);
        }
        Ok(reply)
    }

    /// Sends a request whose only answer is a Result; anything but 0 is an error.
    async fn expect_ok(&mut self, request: &Request) -> Result<(), UsbmuxError> {
        let reply = self.request(request).await?;
        match result_number(&reply) {
            Some(ResultCode::OK) => Ok(()),
            Some(code) => Err(UsbmuxError::Refused(code)),
            None => Err(UsbmuxError::UnexpectedReply(format!(
                "{} answered without a Result",
                request.message_type()
            ))),
        }
    }

    pub async fn list_devices(&mut self) -> Result<Vec<DeviceProperties>, UsbmuxError> {
        let reply = self.request(&Request::ListDevices).await?;
        let list = reply
            .get("DeviceList")
            .and_then(Value::as_array)
            .ok_or(UsbmuxError::MissingKey("DeviceList"))?;
        list.iter()
            .map(|entry| {
                entry
                    .as_dictionary()
                    .ok_or_else(|| {
                        UsbmuxError::UnexpectedReply("DeviceList entry is not a dict".into())
                    })
                    .and_then(DeviceProperties::from_attached)
            })
            .collect()
    }

    pub async fn read_buid(&mut self) -> Result<String, UsbmuxError> {
        let reply = self.request(&Request::ReadBuid).await?;
        reply
            .get("BUID")
            .and_then(Value::as_string)
            .map(str::to_owned)
            .ok_or(UsbmuxError::MissingKey("BUID"))
    }

    /// The raw pair-record file, or `None` when usbmuxd has none for this UDID.
    pub async fn read_pair_record(&mut self, udid: &str) -> Result<Option<Vec<u8>>, UsbmuxError> {
        let reply = self
            .request(&Request::ReadPairRecord { udid: udid.into() })
            .await?;
        if let Some(data) = reply.get("PairRecordData").and_then(Value::as_data) {
            return Ok(Some(data.to_vec()));
        }
        match result_number(&reply) {
            Some(ResultCode::ENOENT) => Ok(None),
            Some(code) => Err(UsbmuxError::Refused(code)),
            None => Err(UsbmuxError::MissingKey("PairRecordData")),
        }
    }

    pub async fn save_pair_record(
        &mut self,
        udid: &str,
        data: Vec<u8>,
        device_id: Option<u32>,
    ) -> Result<(), UsbmuxError> {
        self.expect_ok(&Request::SavePairRecord {
            udid: udid.into(),
            data,
            device_id,
        })
        .await
    }

    pub async fn delete_pair_record(&mut self, udid: &str) -> Result<(), UsbmuxError> {
        self.expect_ok(&Request::DeletePairRecord { udid: udid.into() })
            .await
    }

    pub async fn list_listeners(&mut self) -> Result<Vec<Dictionary>, UsbmuxError> {
        let reply = self.request(&Request::ListListeners).await?;
        let list = reply
            .get("ListenerList")
            .and_then(Value::as_array)
            .ok_or(UsbmuxError::MissingKey("ListenerList"))?;
        Ok(list
            .iter()
            .filter_map(|v| v.as_dictionary().cloned())
            .collect())
    }

    /// Connects to a TCP port on the device; the returned stream is the raw tunnel.
    pub async fn connect_device(
        mut self,
        device_id: u32,
        port: u16,
    ) -> Result<UsbmuxStream, UsbmuxError> {
        self.expect_ok(&Request::Connect { device_id, port })
            .await?;
        Ok(self.stream)
    }

    /// Turns this connection into a Listen connection.
    pub async fn listen(mut self) -> Result<Listener, UsbmuxError> {
        self.expect_ok(&Request::Listen).await?;
        Ok(Listener::new(self.stream))
    }
}
