//! Decodes the byte-exact traffic recorded from a real iPhone (see fixtures/README.md).

use plist::Value;
use usbmux::frame::{MAX_REPLY_LEN, message_type};
use usbmux::message::{ResultCode, result_number};
use usbmux::{DeviceProperties, Frame, plist_service};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn single_frame(name: &str) -> Frame {
    let bytes = fixture(name);
    let (frame, rest) = Frame::parse(&bytes, MAX_REPLY_LEN).expect("fixture frame parses");
    assert!(rest.is_empty(), "{name}: {} trailing bytes", rest.len());
    frame
}

fn device_list(frame: &Frame) -> Vec<DeviceProperties> {
    let dict = frame.plist_dict().unwrap();
    assert!(
        dict.get("MessageType").is_none(),
        "a DeviceList reply has no MessageType"
    );
    dict["DeviceList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| DeviceProperties::from_attached(e.as_dictionary().unwrap()).unwrap())
        .collect()
}

#[test]
fn list_devices_reply_keeps_every_property() {
    let frame = single_frame("usbmuxlistdevicemessage.bin");
    assert_eq!(frame.header.length, 783);
    assert_eq!(frame.header.version, 1);
    assert_eq!(frame.header.message, message_type::PLIST);
    assert_eq!(frame.header.tag, 0);
    let devices = device_list(&frame);
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d.device_id, 1);
    assert_eq!(d.udid, "63c3d055c4f83e960e5980fa68be0fbf7d4ba74c");
    assert_eq!(d.location_id, Some(339_881_984));
    assert_eq!(d.product_id, Some(4776));
    assert_eq!(d.connection_speed, Some(480_000_000));
    assert_eq!(d.connection_type.as_deref(), Some("USB"));
    assert_eq!(d.usb_serial_number, None);
    assert!(d.extra.is_empty());
}

#[test]
fn second_list_devices_reply_prefers_the_top_level_device_id() {
    let frame = single_frame("usbmuxlistdevicemessage2.bin");
    assert_eq!(frame.header.tag, 1);
    let devices = device_list(&frame);
    // The top-level DeviceID (2) and Properties.DeviceID (1) differ in this capture;
    // clients use the top-level one.
    assert_eq!(devices[0].device_id, 2);
    assert_eq!(devices[0].product_id, Some(4777));
    assert_eq!(devices[0].location_id, Some(339_881_984));
}

#[test]
fn attached_dict_round_trips() {
    let frame = single_frame("usbmuxlistdevicemessage.bin");
    let device = &device_list(&frame)[0];
    let again = DeviceProperties::from_attached(&device.attached_dict()).unwrap();
    assert_eq!(&again, device);
}

#[test]
fn connect_reply_is_result_zero_with_tag_one() {
    let frame = single_frame("usbmuxconnectmessage.bin");
    assert_eq!(frame.header.length, 294);
    assert_eq!(frame.header.tag, 1);
    assert_eq!(
        result_number(&frame.plist_dict().unwrap()),
        Some(ResultCode::OK)
    );
}

#[test]
fn connect_reply_followed_by_lockdown_frame_in_one_buffer() {
    let bytes = fixture("usbmuxconnectandlockdown.bin");
    let (frame, rest) = Frame::parse(&bytes, MAX_REPLY_LEN).unwrap();
    assert_eq!(
        result_number(&frame.plist_dict().unwrap()),
        Some(ResultCode::OK)
    );
    assert_eq!(rest.len(), 345);
    let (msg, rest) = plist_service::parse(rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(msg["Request"].as_string(), Some("GetValue"));
    assert_eq!(msg["Key"].as_string(), Some("TimeIntervalSince1970"));
    assert_eq!(msg["Value"].as_real(), Some(1_561_317_733.062_099));
}

#[test]
fn read_pair_record_reply_holds_a_binary_pair_record() {
    let frame = single_frame("usbmuxreadpairmessage.bin");
    assert_eq!(frame.header.length, 9452);
    let dict = frame.plist_dict().unwrap();
    let data = dict["PairRecordData"].as_data().unwrap();
    assert!(data.starts_with(b"bplist00"));
    let record: plist::Dictionary = plist::from_bytes(data).unwrap();
    assert_eq!(
        record["HostID"].as_string(),
        Some("3B32AC55-3638-838A-2BBD-77B5E60E3913")
    );
    assert_eq!(
        record["SystemBUID"].as_string(),
        Some("97A08585-B8BC-4001-8D34-D692E9B8EBE0")
    );
    assert_eq!(
        record["WiFiMACAddress"].as_string(),
        Some("dc:08:0f:49:f6:4c")
    );
    assert_eq!(record["EscrowBag"].as_data().map(<[u8]>::len), Some(32));
    for key in ["DeviceCertificate", "HostCertificate", "RootCertificate"] {
        assert!(
            record[key]
                .as_data()
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE-----"),
            "{key}"
        );
    }
    for key in ["HostPrivateKey", "RootPrivateKey"] {
        assert!(
            record[key]
                .as_data()
                .unwrap()
                .starts_with(b"-----BEGIN PRIVATE KEY-----"),
            "{key}"
        );
    }
}

#[test]
fn lockdown_replies_decode() {
    let bytes = fixture("lockdownquerytypemessage.bin");
    let (qt, rest) = plist_service::parse(&bytes).unwrap();
    assert!(rest.is_empty());
    assert_eq!(qt["Request"].as_string(), Some("QueryType"));
    assert_eq!(qt["Type"].as_string(), Some("com.apple.mobile.lockdown"));

    let (gv, _) = plist_service::parse(&fixture("lockdowngetvaluemessage.bin")).unwrap();
    assert_eq!(gv["Key"].as_string(), Some("ProductVersion"));
    assert_eq!(gv["Value"], Value::String("12.3.1".into()));

    let (time, _) = plist_service::parse(&fixture("lockdowngettimemessage.bin")).unwrap();
    assert!(matches!(time["Value"], Value::Real(_)));
}
