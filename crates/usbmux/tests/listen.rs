//! The Listen loop against a fake usbmuxd that sends what real daemons send, and odder things:
//! the listener skips what it cannot use and ends only on a broken connection or an unreadable
//! frame.

use std::time::Duration;

use plist::{Dictionary, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use usbmux::frame::{self, Frame, MAX_REQUEST_LEN, VERSION_BINARY, VERSION_PLIST, message_type};
use usbmux::message::result_reply;
use usbmux::test_support::{binary_nested, xml_nested};
use usbmux::{
    BoundedPlistError, DeviceEvent, DeviceProperties, ResultCode, UsbmuxAddress, UsbmuxError,
    listen_loop,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const UDID: &str = "00008030-001A2B3C4D5E6F70";

fn xml_frame(xml: &str) -> Frame {
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n{xml}\n</plist>\n"
    );
    Frame::new(VERSION_PLIST, message_type::PLIST, 0, doc.into_bytes()).unwrap()
}

/// Linux usbmuxd's Attached for a USB iPad, as recorded.
fn attached_full() -> Frame {
    xml_frame(&format!(
        "<dict>\n\t<key>DeviceID</key>\n\t<integer>7</integer>\n\t<key>MessageType</key>\n\t<string>Attached</string>\n\
         \t<key>Properties</key>\n\t<dict>\n\t\t<key>ConnectionSpeed</key>\n\t\t<integer>480000000</integer>\n\
         \t\t<key>ConnectionType</key>\n\t\t<string>USB</string>\n\t\t<key>DeviceID</key>\n\t\t<integer>7</integer>\n\
         \t\t<key>LocationID</key>\n\t\t<integer>65539</integer>\n\t\t<key>ProductID</key>\n\t\t<integer>4776</integer>\n\
         \t\t<key>SerialNumber</key>\n\t\t<string>{UDID}</string>\n\t</dict>\n</dict>"
    ))
}

/// An Attached with nothing but what identifies the device.
fn attached_minimal() -> Frame {
    xml_frame(&format!(
        "<dict><key>DeviceID</key><integer>8</integer><key>MessageType</key><string>Attached</string>\
         <key>Properties</key><dict><key>SerialNumber</key><string>{UDID}</string></dict></dict>"
    ))
}

fn simple(kind: &str, id: u64) -> Frame {
    xml_frame(&format!(
        "<dict><key>DeviceID</key><integer>{id}</integer><key>MessageType</key><string>{kind}</string></dict>"
    ))
}

/// A fake usbmuxd on a TCP port: accepts one client, answers its Listen with Result 0, sends
/// `frames`, then closes the connection.
async fn fake_usbmuxd(frames: Vec<Frame>) -> UsbmuxAddress {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = server.accept().await.unwrap();
        let listen = frame::read_frame(&mut stream, MAX_REQUEST_LEN)
            .await
            .unwrap()
            .unwrap();
        let request = listen.plist_dict().unwrap();
        assert_eq!(request["MessageType"].as_string(), Some("Listen"));
        let ok = Frame::plist(listen.header.tag, &result_reply(ResultCode::OK)).unwrap();
        frame::write_frame(&mut stream, &ok).await.unwrap();
        for f in frames {
            if frame::write_frame(&mut stream, &f).await.is_err() {
                return;
            }
        }
        drop::<TcpStream>(stream);
    });
    UsbmuxAddress::Tcp(addr)
}

/// Runs `listen_loop` to its end; returns the events it forwarded and how it ended.
async fn run(frames: Vec<Frame>) -> (Vec<DeviceEvent>, Result<(), UsbmuxError>) {
    let addr = fake_usbmuxd(frames).await;
    let (tx, mut rx) = mpsc::channel(16);
    let ended = tokio::time::timeout(IO_TIMEOUT, listen_loop(&addr, tx))
        .await
        .expect("the listener ended within the timeout");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (events, ended)
}

#[tokio::test]
async fn odd_messages_are_skipped_and_the_events_around_them_arrive() {
    let binary_device_add =
        Frame::new(VERSION_BINARY, message_type::DEVICE_ADD, 0, vec![0; 8]).unwrap();
    let (events, ended) = run(vec![
        attached_full(),
        xml_frame("<dict><key>MessageType</key><string>DeviceListChanged</string></dict>"),
        xml_frame("<dict><key>MessageType</key><string>DeviceListChanged</string></dict>"),
        xml_frame("<dict><key>DeviceID</key><integer>7</integer></dict>"),
        xml_frame("<array><string>Attached</string></array>"),
        binary_device_add,
        // Attached without a SerialNumber cannot be used: skipped, not fatal.
        xml_frame(
            "<dict><key>DeviceID</key><integer>9</integer><key>MessageType</key><string>Attached</string>\
             <key>Properties</key><dict><key>ConnectionType</key><string>USB</string></dict></dict>",
        ),
        attached_minimal(),
        simple("Paired", 7),
        simple("Detached", 7),
    ])
    .await;

    let mut full = DeviceProperties::usb(7, UDID);
    full.location_id = Some(65539);
    full.product_id = Some(4776);
    let minimal = DeviceProperties {
        connection_speed: None,
        connection_type: None,
        ..DeviceProperties::usb(8, UDID)
    };
    assert_eq!(
        events,
        vec![
            DeviceEvent::Attached(full),
            DeviceEvent::Attached(minimal),
            DeviceEvent::Paired { device_id: 7 },
            DeviceEvent::Detached { device_id: 7 },
        ]
    );
    // Then usbmuxd closed the connection: that, and only that, ends the loop.
    assert!(matches!(ended, Err(UsbmuxError::Closed)), "{ended:?}");
}

#[tokio::test]
async fn an_unreadable_frame_ends_the_listener_with_a_typed_error() {
    let deep = |bytes: Vec<u8>| Frame::new(VERSION_PLIST, message_type::PLIST, 0, bytes).unwrap();
    for (format, frame) in [
        ("binary", deep(binary_nested(10_000))),
        ("xml", deep(xml_nested(10_000))),
        ("garbage", deep(b"not a plist".to_vec())),
    ] {
        let (events, ended) = run(vec![attached_minimal(), frame, simple("Detached", 8)]).await;
        assert_eq!(events.len(), 1, "{format}: the event before it arrived");
        match (format, ended) {
            ("garbage", Err(UsbmuxError::BadPlist(BoundedPlistError::Malformed(_)))) => {}
            (_, Err(UsbmuxError::BadPlist(BoundedPlistError::TooDeep { .. }))) => {}
            (_, other) => panic!("{format}: {other:?}"),
        }
    }
}

#[test]
fn properties_dict_omits_what_is_unknown() {
    let minimal = DeviceProperties {
        connection_speed: None,
        connection_type: None,
        ..DeviceProperties::usb(8, UDID)
    };
    let dict: Dictionary = minimal.properties_dict();
    assert_eq!(dict.get("ConnectionType"), None);
    assert_eq!(dict.get("SerialNumber"), Some(&Value::String(UDID.into())));
    assert_eq!(
        DeviceProperties::from_attached(&minimal.attached_dict()).unwrap(),
        minimal
    );
}
