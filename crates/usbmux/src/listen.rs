//! The Listen loop: device events with every property, `Send`, so it runs in `tokio::spawn`
//! (idevice's own Listen stream is neither, and drops LocationID).
//!
//! usbmuxd builds differ (Linux, macOS, Windows' Apple Mobile Device Service, future versions):
//! a message of a type we do not know, or an event lacking a key we cannot do without, is
//! skipped and logged once per kind; only a broken connection or an unreadable frame ends the
//! listener.

use std::collections::HashSet;

use plist::{Dictionary, Value};
use tokio::sync::mpsc;

use crate::address::{UsbmuxAddress, UsbmuxStream};
use crate::client::UsbmuxClient;
use crate::device::DeviceEvent;
use crate::error::UsbmuxError;
use crate::frame::{self, MAX_REPLY_LEN, message_type};

/// Distinct oddities remembered for logging once; more are logged at debug level only.
const MAX_REMEMBERED: usize = 64;
/// Unknown message type names are cut to this many characters in logs and memory.
const MAX_NAME: usize = 64;

/// What one message on a Listen connection turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenMessage {
    Event(DeviceEvent),
    /// Not an event we can use: skipped, the listener goes on.
    Skipped(Oddity),
}

/// A message the listener skips.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Oddity {
    /// A frame whose header message type is not a plist (8).
    NotPlist(u32),
    /// A plist that is not a dictionary.
    NotADictionary,
    NoMessageType,
    UnknownMessageType(String),
    /// A known event without a key it cannot do without (a DeviceID, a SerialNumber…).
    Incomplete {
        message: &'static str,
        missing: &'static str,
    },
}

impl std::fmt::Display for Oddity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Oddity::NotPlist(t) => write!(f, "a binary message of type {t}"),
            Oddity::NotADictionary => write!(f, "a plist that is not a dictionary"),
            Oddity::NoMessageType => write!(f, "a message without MessageType"),
            Oddity::UnknownMessageType(t) => write!(f, "an unknown MessageType {t:?}"),
            Oddity::Incomplete { message, missing } => write!(f, "{message} without {missing}"),
        }
    }
}

/// Classifies one Listen message.
pub fn classify(dict: &Dictionary) -> ListenMessage {
    let Some(kind) = dict.get("MessageType").and_then(Value::as_string) else {
        return ListenMessage::Skipped(Oddity::NoMessageType);
    };
    let message = match kind {
        "Attached" => "Attached",
        "Detached" => "Detached",
        "Paired" => "Paired",
        other => {
            let name = other.chars().take(MAX_NAME).collect();
            return ListenMessage::Skipped(Oddity::UnknownMessageType(name));
        }
    };
    match DeviceEvent::from_dict(dict) {
        Ok(event) => ListenMessage::Event(event),
        Err(UsbmuxError::MissingKey(missing)) => {
            ListenMessage::Skipped(Oddity::Incomplete { message, missing })
        }
        Err(_) => ListenMessage::Skipped(Oddity::Incomplete {
            message,
            missing: "a readable value",
        }),
    }
}

/// A connection in Listen state.
#[derive(Debug)]
pub struct Listener {
    stream: UsbmuxStream,
    logged: HashSet<Oddity>,
}

impl Listener {
    pub(crate) fn new(stream: UsbmuxStream) -> Self {
        Listener {
            stream,
            logged: HashSet::new(),
        }
    }

    /// The next event; `Ok(None)` when usbmuxd closed the connection. Waits as long as it takes:
    /// a quiet cart sends nothing. Messages that are not usable events are skipped.
    pub async fn next_event(&mut self) -> Result<Option<DeviceEvent>, UsbmuxError> {
        loop {
            let Some(frame) = frame::read_frame(&mut self.stream, MAX_REPLY_LEN).await? else {
                return Ok(None);
            };
            let message = if frame.header.message != message_type::PLIST {
                ListenMessage::Skipped(Oddity::NotPlist(frame.header.message))
            } else {
                match frame.plist_dict() {
                    Ok(dict) => classify(&dict),
                    Err(UsbmuxError::BadPlist(crate::BoundedPlistError::NotADictionary {
                        ..
                    })) => ListenMessage::Skipped(Oddity::NotADictionary),
                    Err(e) => return Err(e),
                }
            };
            match message {
                ListenMessage::Event(event) => return Ok(Some(event)),
                ListenMessage::Skipped(oddity) => self.skipped(oddity),
            }
        }
    }

    fn skipped(&mut self, oddity: Oddity) {
        if first_time(&mut self.logged, &oddity) {
            tracing::warn!("usbmuxd Listen: skipping {oddity} (logged once)");
        } else {
            tracing::debug!("usbmuxd Listen: skipping {oddity}");
        }
    }
}

/// Whether `oddity` is new to `seen` (remembering at most [`MAX_REMEMBERED`] of them, so a
/// daemon inventing a new name per message cannot grow the set without bound).
fn first_time(seen: &mut HashSet<Oddity>, oddity: &Oddity) -> bool {
    if seen.contains(oddity) || seen.len() >= MAX_REMEMBERED {
        return false;
    }
    seen.insert(oddity.clone());
    true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceProperties;

    fn dict(xml: &str) -> Dictionary {
        let doc = format!("<?xml version=\"1.0\"?><plist version=\"1.0\">{xml}</plist>");
        plist::from_bytes(doc.as_bytes()).expect("test plist")
    }

    fn attached_with_only_id_and_serial() -> DeviceProperties {
        DeviceProperties {
            device_id: 3,
            udid: "00008030-001A2B3C4D5E6F70".into(),
            location_id: None,
            product_id: None,
            connection_speed: None,
            connection_type: None,
            usb_serial_number: None,
            extra: Dictionary::new(),
        }
    }

    #[test]
    fn classifies_listen_messages() {
        let skipped = ListenMessage::Skipped;
        let cases = [
            (
                "Attached with only DeviceID and SerialNumber",
                "<dict><key>DeviceID</key><integer>3</integer><key>MessageType</key><string>Attached</string>\
                 <key>Properties</key><dict><key>SerialNumber</key><string>00008030-001A2B3C4D5E6F70</string></dict></dict>",
                ListenMessage::Event(DeviceEvent::Attached(attached_with_only_id_and_serial())),
            ),
            (
                "DeviceID only inside Properties",
                "<dict><key>MessageType</key><string>Attached</string><key>Properties</key><dict>\
                 <key>DeviceID</key><integer>3</integer><key>SerialNumber</key><string>00008030-001A2B3C4D5E6F70</string></dict></dict>",
                ListenMessage::Event(DeviceEvent::Attached(attached_with_only_id_and_serial())),
            ),
            (
                "Detached",
                "<dict><key>DeviceID</key><integer>3</integer><key>MessageType</key><string>Detached</string></dict>",
                ListenMessage::Event(DeviceEvent::Detached { device_id: 3 }),
            ),
            (
                "unknown type",
                "<dict><key>MessageType</key><string>DeviceListChanged</string></dict>",
                skipped(Oddity::UnknownMessageType("DeviceListChanged".into())),
            ),
            (
                "no type",
                "<dict><key>DeviceID</key><integer>3</integer></dict>",
                skipped(Oddity::NoMessageType),
            ),
            (
                "type not a string",
                "<dict><key>MessageType</key><integer>4</integer></dict>",
                skipped(Oddity::NoMessageType),
            ),
            (
                "Attached without SerialNumber",
                "<dict><key>DeviceID</key><integer>3</integer><key>MessageType</key><string>Attached</string>\
                 <key>Properties</key><dict><key>ConnectionType</key><string>USB</string></dict></dict>",
                skipped(Oddity::Incomplete {
                    message: "Attached",
                    missing: "Properties.SerialNumber",
                }),
            ),
            (
                "Attached without Properties",
                "<dict><key>DeviceID</key><integer>3</integer><key>MessageType</key><string>Attached</string></dict>",
                skipped(Oddity::Incomplete {
                    message: "Attached",
                    missing: "Properties",
                }),
            ),
            (
                "Paired without DeviceID",
                "<dict><key>MessageType</key><string>Paired</string></dict>",
                skipped(Oddity::Incomplete {
                    message: "Paired",
                    missing: "DeviceID",
                }),
            ),
        ];
        for (what, xml, expected) in cases {
            assert_eq!(classify(&dict(xml)), expected, "{what}");
        }
    }

    #[test]
    fn an_unknown_type_name_is_cut_short() {
        let long = "X".repeat(10_000);
        let message = dict(&format!(
            "<dict><key>MessageType</key><string>{long}</string></dict>"
        ));
        match classify(&message) {
            ListenMessage::Skipped(Oddity::UnknownMessageType(name)) => {
                assert_eq!(name.len(), MAX_NAME)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_kind_of_oddity_is_logged_once_and_memory_is_bounded() {
        let mut seen = HashSet::new();
        let unknown = |n: usize| Oddity::UnknownMessageType(format!("T{n}"));
        assert!(first_time(&mut seen, &unknown(0)));
        assert!(!first_time(&mut seen, &unknown(0)));
        assert!(first_time(&mut seen, &Oddity::NoMessageType));
        assert!(!first_time(&mut seen, &Oddity::NoMessageType));
        for n in 1..1000 {
            first_time(&mut seen, &unknown(n));
        }
        assert_eq!(seen.len(), MAX_REMEMBERED);
        assert!(!first_time(&mut seen, &unknown(5000)));
    }
}
