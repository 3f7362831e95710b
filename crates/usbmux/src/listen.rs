//! The Listen loop: device events with every property, `Send`, so it runs in `tokio::spawn`
//! (idevice's own Listen stream is neither, and drops LocationID).

use tokio::sync::mpsc;

use crate::address::{UsbmuxAddress, UsbmuxStream};
use crate::client::UsbmuxClient;
use crate::device::DeviceEvent;
use crate::error::UsbmuxError;
use crate::frame::{self, MAX_REPLY_LEN, message_type};

/// A connection in Listen state.
#[derive(Debug)]
pub struct Listener {
    stream: UsbmuxStream,
}

impl Listener {
    pub(crate) fn new(stream: UsbmuxStream) -> Self {
        Listener { stream }
    }

    /// The next event; `Ok(None)` when usbmuxd closed the connection. Waits as long as it takes:
    /// a quiet cart sends nothing.
    pub async fn next_event(&mut self) -> Result<Option<DeviceEvent>, UsbmuxError> {
        let Some(frame) = frame::read_frame(&mut self.stream, MAX_REPLY_LEN).await? else {
            return Ok(None);
        };
        if frame.header.message != message_type::PLIST {
            return Err(UsbmuxError::UnexpectedReply(format!(
                "binary message type {} on a plist Listen connection",
                frame.header.message
            )));
        }
        DeviceEvent::from_dict(&frame.plist_dict()?).map(Some)
    }
}

/// Connects, sends Listen and forwards every event to `events` until usbmuxd goes away, the
/// receiver is dropped or an error occurs (which is returned; the caller decides on backoff).
pub async fn listen_loop(
    addr: &UsbmuxAddress,
    events: mpsc::Sender<DeviceEvent>,
) -> Result<(), UsbmuxError> {
    let mut listener = UsbmuxClient::connect(addr).await?.listen().await?;
    while let Some(event) = listener.next_event().await? {
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
    Err(UsbmuxError::Closed)
}
