//! Malformed input gives errors, never panics or huge allocations.

use usbmux::frame::{HEADER_LEN, Header, MAX_REQUEST_LEN, read_frame};
use usbmux::test_support::nested_plists;
use usbmux::{BoundedPlistError, Frame, Request, ResultCode, UsbmuxError, plist_service};

fn header(length: u32) -> [u8; HEADER_LEN] {
    Header {
        length,
        version: 1,
        message: 8,
        tag: 1,
    }
    .encode()
}

#[test]
fn a_length_shorter_than_the_header_is_an_error() {
    for len in [0, 1, 15] {
        assert!(
            matches!(Header::decode(&header(len), MAX_REQUEST_LEN), Err(UsbmuxError::FrameTooShort(l)) if l == len)
        );
    }
}

#[test]
fn a_huge_length_is_refused_before_allocating() {
    let err = Header::decode(&header(u32::MAX), MAX_REQUEST_LEN).unwrap_err();
    assert!(matches!(
        err,
        UsbmuxError::FrameTooLarge {
            length: u32::MAX,
            ..
        }
    ));
}

#[tokio::test]
async fn a_truncated_payload_is_an_error() {
    let mut bytes = header(100).to_vec();
    bytes.extend_from_slice(b"<?xml");
    let err = read_frame(&mut bytes.as_slice(), MAX_REQUEST_LEN)
        .await
        .unwrap_err();
    assert!(matches!(err, UsbmuxError::Truncated { .. }), "{err}");
}

#[tokio::test]
async fn a_clean_close_before_a_header_is_not_an_error() {
    assert!(
        read_frame(&mut [0u8; 0].as_slice(), MAX_REQUEST_LEN)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn garbage_payload_is_a_plist_error() {
    let frame = Frame::new(1, 8, 1, b"not a plist at all".to_vec()).unwrap();
    assert!(matches!(
        frame.plist_dict(),
        Err(UsbmuxError::BadPlist(BoundedPlistError::Malformed(_)))
    ));
}

#[test]
fn bad_requests_map_to_linux_usbmuxd_result_numbers() {
    let dict = |pairs: &[(&str, plist::Value)]| -> plist::Dictionary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let s = |v: &str| plist::Value::String(v.into());
    assert_eq!(Request::from_dict(&dict(&[])), Err(ResultCode::BAD_COMMAND));
    assert_eq!(
        Request::from_dict(&dict(&[("MessageType", s("Fly"))])),
        Err(ResultCode::BAD_COMMAND)
    );
    assert_eq!(
        Request::from_dict(&dict(&[
            ("MessageType", s("Connect")),
            ("PortNumber", 32498u64.into())
        ])),
        Err(ResultCode::BAD_DEVICE)
    );
    assert_eq!(
        Request::from_dict(&dict(&[
            ("MessageType", s("Connect")),
            ("DeviceID", 1u64.into())
        ])),
        Err(ResultCode::BAD_COMMAND)
    );
    assert_eq!(
        Request::from_dict(&dict(&[("MessageType", s("ReadPairRecord"))])),
        Err(ResultCode::EINVAL)
    );
    assert_eq!(
        Request::from_dict(&dict(&[
            ("MessageType", s("SavePairRecord")),
            ("PairRecordID", s("X"))
        ])),
        Err(ResultCode::EINVAL)
    );
}

#[test]
fn connect_port_is_byte_swapped_on_the_wire() {
    let req = Request::Connect {
        device_id: 3,
        port: 62078,
    };
    let dict = req.to_dict(&Default::default());
    assert_eq!(dict["PortNumber"].as_unsigned_integer(), Some(32498));
    assert_eq!(Request::from_dict(&dict), Ok(req));
}

#[test]
fn plist_service_rejects_huge_and_truncated_messages() {
    assert!(matches!(
        plist_service::parse(&u32::MAX.to_be_bytes()),
        Err(UsbmuxError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        plist_service::parse(&[0, 0]),
        Err(UsbmuxError::Truncated { .. })
    ));
    let mut short = 50u32.to_be_bytes().to_vec();
    short.extend_from_slice(b"<plist>");
    assert!(matches!(
        plist_service::parse(&short),
        Err(UsbmuxError::Truncated { .. })
    ));
    let mut not_dict = Vec::new();
    let body = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><string>x</string></plist>";
    not_dict.extend_from_slice(&(body.len() as u32).to_be_bytes());
    not_dict.extend_from_slice(body);
    assert!(matches!(
        plist_service::parse(&not_dict),
        Err(UsbmuxError::BadPlist(
            BoundedPlistError::NotADictionary { .. }
        ))
    ));
}

#[test]
fn addresses_parse_in_every_client_form() {
    use usbmux::UsbmuxAddress;
    assert_eq!(
        "127.0.0.1:27015".parse::<UsbmuxAddress>().unwrap(),
        UsbmuxAddress::Tcp("127.0.0.1:27015".parse().unwrap())
    );
    assert_eq!(
        "/tmp/sim.sock".parse::<UsbmuxAddress>().unwrap(),
        UsbmuxAddress::Unix("/tmp/sim.sock".into())
    );
    assert_eq!(
        "UNIX:/tmp/sim.sock".parse::<UsbmuxAddress>().unwrap(),
        UsbmuxAddress::Unix("/tmp/sim.sock".into())
    );
    assert!("localhost:27015".parse::<UsbmuxAddress>().is_err());
    assert!("UNIX:".parse::<UsbmuxAddress>().is_err());
    assert_eq!(
        UsbmuxAddress::Unix("/tmp/s".into()).for_libusbmuxd(),
        "UNIX:/tmp/s"
    );
}

fn is_too_deep(result: Result<impl std::fmt::Debug, UsbmuxError>) -> bool {
    matches!(
        result,
        Err(UsbmuxError::BadPlist(BoundedPlistError::TooDeep { .. }))
    )
}

#[tokio::test]
async fn a_frame_nested_ten_thousand_levels_is_a_typed_error() {
    for (format, payload) in nested_plists(10_000) {
        let frame = Frame::new(1, 8, 1, payload).unwrap();
        let wire = frame.to_bytes();
        let read = read_frame(&mut wire.as_slice(), usbmux::frame::MAX_REPLY_LEN)
            .await
            .unwrap()
            .unwrap();
        assert!(is_too_deep(read.plist_dict()), "{format}");
    }
}

#[tokio::test]
async fn a_lockdown_message_nested_ten_thousand_levels_is_a_typed_error() {
    for (format, body) in nested_plists(10_000) {
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        assert!(is_too_deep(plist_service::parse(&wire)), "{format}: parse");
        assert!(
            is_too_deep(plist_service::read(&mut wire.as_slice()).await),
            "{format}: read"
        );
    }
}
