//! The simulator speaking macOS's usbmuxd (`flavour = "macos"`), compared with the real macOS
//! capture in `docs/fidelity.md` §13, and the Linux flavour's answer to the same cart. Every read
//! is bounded by [`IO_TIMEOUT`].

use std::collections::BTreeSet;
use std::time::Duration;

use plist::{Dictionary, Value};
use simulator::flavour::Flavour;
use simulator::scenario::{Connection, DeviceEntry};
use simulator::trust_prompt::Tap;
use simulator::{CartError, Scenario, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbmux::frame::{self, Frame, MAX_REPLY_LEN, VERSION_PLIST, message_type};
use usbmux::message::port_to_wire;
use usbmux::{UsbmuxAddress, UsbmuxClient, plist_service};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys of a USB entry in the macOS capture (ST-readme): `DeviceList[0]` and its
/// `Properties`.
const MACOS_ENTRY_KEYS: [&str; 3] = ["DeviceID", "MessageType", "Properties"];
const MACOS_USB_KEYS: [&str; 7] = [
    "ConnectionSpeed",
    "ConnectionType",
    "DeviceID",
    "LocationID",
    "ProductID",
    "SerialNumber",
    "USBSerialNumber",
];
/// The keys of a Network entry's `Properties` (libusbmuxd and go clients read these).
const MACOS_NETWORK_KEYS: [&str; 6] = [
    "ConnectionType",
    "DeviceID",
    "EscapedFullServiceName",
    "InterfaceIndex",
    "NetworkAddress",
    "SerialNumber",
];

/// Slot 1 on USB and also on Wi-Fi; slot 2 on Wi-Fi only (a teacher's iPad).
fn cart(flavour: Flavour) -> Scenario {
    Scenario {
        seed: 14,
        flavour,
        devices: vec![
            DeviceEntry {
                also_network: true,
                ..DeviceEntry::default()
            },
            DeviceEntry {
                connection: Connection::Network,
                setup_done: true,
                activated: Some(true),
                ..DeviceEntry::default()
            },
        ],
        ..Scenario::default()
    }
}

async fn start(scenario: Scenario) -> (tempfile::TempDir, Simulator) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig {
        scenario,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: dir.path().to_path_buf(),
        activated: false,
    })
    .await
    .unwrap();
    (dir, sim)
}

async fn connect(sim: &Simulator) -> TcpStream {
    let UsbmuxAddress::Tcp(addr) = sim.address().clone() else {
        panic!("the simulator listens on TCP");
    };
    tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connecting timed out")
        .expect("connecting failed")
}

fn message(kind: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), kind.into());
    d
}

/// Sends a plist request and reads the reply, which must be an XML plist in a version-1 header
/// with the request's tag.
async fn request(stream: &mut TcpStream, tag: u32, req: &Dictionary) -> Dictionary {
    let bytes = Frame::plist(tag, req).unwrap().to_bytes();
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(&bytes))
        .await
        .unwrap()
        .unwrap();
    let f = tokio::time::timeout(IO_TIMEOUT, frame::read_frame(stream, MAX_REPLY_LEN))
        .await
        .expect("no reply within the timeout")
        .expect("reading the reply")
        .expect("the connection closed instead of answering");
    assert_eq!(
        (f.header.version, f.header.message, f.header.tag),
        (VERSION_PLIST, message_type::PLIST, tag)
    );
    assert!(f.payload.starts_with(b"<?xml"), "replies are XML");
    f.plist_dict().unwrap()
}

fn entries(reply: &Dictionary) -> Vec<Dictionary> {
    reply
        .get("DeviceList")
        .and_then(Value::as_array)
        .expect("a DeviceList")
        .iter()
        .map(|e| e.as_dictionary().expect("a dict entry").clone())
        .collect()
}

fn props(entry: &Dictionary) -> &Dictionary {
    entry
        .get("Properties")
        .and_then(Value::as_dictionary)
        .unwrap()
}

fn keys(d: &Dictionary) -> BTreeSet<&str> {
    d.keys().map(String::as_str).collect()
}

fn text<'a>(d: &'a Dictionary, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_string).unwrap_or_default()
}

fn number(d: &Dictionary, k: &str) -> u64 {
    d.get(k).and_then(Value::as_unsigned_integer).unwrap()
}

async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buf)).await {
        Err(_) => panic!("the connection stayed open"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(k)) => panic!("expected a close, got {:?}", &buf[..k]),
    }
}

#[tokio::test]
async fn macos_lists_a_usb_ipad_as_the_capture_does_and_wifi_ipads_as_network_entries() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    let ipad = sim.cart.device(1).unwrap().clone();
    let teacher = sim.cart.device(2).unwrap().clone();
    let mut stream = connect(&sim).await;
    let list = entries(&request(&mut stream, 0xdead_beef, &message("ListDevices")).await);
    assert_eq!(list.len(), 3, "{list:?}");

    let usb: Vec<_> = list
        .iter()
        .filter(|e| text(props(e), "ConnectionType") == "USB")
        .collect();
    assert_eq!(usb.len(), 1);
    let usb = usb[0];
    assert_eq!(keys(usb), BTreeSet::from(MACOS_ENTRY_KEYS));
    assert_eq!(keys(props(usb)), BTreeSet::from(MACOS_USB_KEYS));
    assert_eq!(text(usb, "MessageType"), "Attached");
    let p = props(usb);
    assert_eq!(text(p, "SerialNumber"), ipad.udid());
    assert_eq!(
        text(p, "USBSerialNumber"),
        ipad.udid().replace('-', ""),
        "USBSerialNumber is the UDID without its hyphen, as in the capture"
    );
    assert_eq!(number(p, "ConnectionSpeed"), 480_000_000);
    assert_eq!(
        number(p, "ProductID"),
        u64::from(ipad.spec.model.usb_product_id)
    );
    // IOKit's location: bus 1 in the top byte, then hub port 1, then the slot's port 1.
    assert_eq!(number(p, "LocationID"), 0x0111_0000);
    assert_eq!(number(p, "DeviceID"), number(usb, "DeviceID"));

    let network: Vec<_> = list
        .iter()
        .filter(|e| text(props(e), "ConnectionType") == "Network")
        .collect();
    assert_eq!(network.len(), 2);
    for (entry, owner) in network.iter().zip([&ipad, &teacher]) {
        let p = props(entry);
        assert_eq!(keys(entry), BTreeSet::from(MACOS_ENTRY_KEYS));
        assert_eq!(keys(p), BTreeSet::from(MACOS_NETWORK_KEYS));
        assert_eq!(text(p, "SerialNumber"), owner.udid());
        let service = text(p, "EscapedFullServiceName");
        assert!(
            service.starts_with(&format!("{}@fe80::", owner.spec.identity.wifi_address))
                && service.ends_with("._apple-mobdev2._tcp.local."),
            "{service}"
        );
        let address = p.get("NetworkAddress").and_then(Value::as_data).unwrap();
        assert_eq!(&address[..2], &[16, 2], "a BSD sockaddr_in");
        assert_eq!(address[4], 192, "the IPv4 address at bytes 4..8");
    }
    assert_ne!(
        number(network[0], "DeviceID"),
        number(usb, "DeviceID"),
        "the same iPad on Wi-Fi is listed under a second DeviceID"
    );

    // cartprep's own usbmux client reads all three, and keeps the Network keys.
    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    let parsed = client.list_devices().await.unwrap();
    let summary: Vec<_> = parsed
        .iter()
        .map(|d| {
            (
                d.udid.clone(),
                d.connection_type.clone().unwrap_or_default(),
                d.usb_serial_number.is_some(),
                d.extra.contains_key("NetworkAddress"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (ipad.udid().to_owned(), "USB".into(), true, false),
            (ipad.udid().to_owned(), "Network".into(), false, true),
            (teacher.udid().to_owned(), "Network".into(), false, true),
        ]
    );
}

#[tokio::test]
async fn linux_lists_only_the_usb_ipad_as_libimobiledevice_usbmuxd_does() {
    let (_dir, sim) = start(cart(Flavour::Linux)).await;
    let mut stream = connect(&sim).await;
    let list = entries(&request(&mut stream, 1, &message("ListDevices")).await);
    assert_eq!(list.len(), 1, "no Network entries on Linux: {list:?}");
    let p = props(&list[0]);
    assert_eq!(text(p, "ConnectionType"), "USB");
    assert!(!p.contains_key("USBSerialNumber"));
    assert_eq!(number(p, "LocationID"), 0x1_0003, "(bus << 16) | address");
    assert_eq!(sim.cart.plug(2), Err(CartError::NotListed(2)));
}

#[tokio::test]
async fn macos_closes_a_binary_protocol_client_and_keeps_serving_others() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    let mut stream = connect(&sim).await;
    // A binary LISTEN: 16-byte header, version 0, message 3.
    let listen = [16u8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0];
    stream.write_all(&listen).await.unwrap();
    assert_closed(&mut stream).await;
    let mut other = connect(&sim).await;
    assert_eq!(
        entries(&request(&mut other, 2, &message("ListDevices")).await).len(),
        3
    );
}

#[tokio::test]
async fn macos_serves_a_saved_pair_record_back_as_a_binary_plist() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    let udid = sim.cart.device(1).unwrap().udid().to_owned();
    let mut record = Dictionary::new();
    record.insert(
        "HostID".into(),
        "3B32AC55-3638-838A-2BBD-77B5E60E3913".into(),
    );
    record.insert(
        "SystemBUID".into(),
        "97A08585-B8BC-4001-8D34-D692E9B8EBE0".into(),
    );
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &record).unwrap();
    let mut stream = connect(&sim).await;
    let mut save = message("SavePairRecord");
    save.insert("PairRecordID".into(), udid.clone().into());
    save.insert("PairRecordData".into(), Value::Data(xml));
    assert_eq!(
        request(&mut stream, 1, &save).await.get("Number"),
        Some(&Value::from(0u64))
    );
    let mut read = message("ReadPairRecord");
    read.insert("PairRecordID".into(), udid.into());
    let reply = request(&mut stream, 2, &read).await;
    let data = reply
        .get("PairRecordData")
        .and_then(Value::as_data)
        .unwrap();
    assert!(data.starts_with(b"bplist00"), "served as a binary plist");
    let served: Dictionary = plist::from_bytes(data).unwrap();
    assert_eq!(served, record, "the same dictionary");
}

#[tokio::test]
async fn over_wifi_lockdownd_answers_but_refuses_to_pair() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    let device_id = sim.cart.network_id(2).expect("slot 2 listed on Wi-Fi");
    let mut stream = connect(&sim).await;
    let mut connect_req = message("Connect");
    connect_req.insert("DeviceID".into(), u64::from(device_id).into());
    connect_req.insert(
        "PortNumber".into(),
        u64::from(port_to_wire(usbmux::LOCKDOWN_PORT)).into(),
    );
    assert_eq!(
        request(&mut stream, 3, &connect_req).await.get("Number"),
        Some(&Value::from(0u64))
    );
    let mut pair = Dictionary::new();
    pair.insert("Request".into(), "Pair".into());
    pair.insert("PairRecord".into(), Value::Dictionary(Dictionary::new()));
    let reply = tokio::time::timeout(IO_TIMEOUT, async {
        plist_service::write(&mut stream, &pair).await?;
        plist_service::read(&mut stream).await
    })
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(text(&reply, "Error"), "PairingProhibitedOverThisConnection");
}

/// The next Listen event: a plist frame with tag 0.
async fn next_event(listen: &mut TcpStream) -> Dictionary {
    let f = tokio::time::timeout(IO_TIMEOUT, frame::read_frame(listen, MAX_REPLY_LEN))
        .await
        .expect("an event within the timeout")
        .expect("reading an event")
        .expect("the Listen connection closed");
    assert_eq!((f.header.version, f.header.tag), (VERSION_PLIST, 0));
    f.plist_dict().unwrap()
}

#[tokio::test]
async fn listen_hears_an_ipad_join_and_leave_the_network_under_its_own_device_id() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    let mut listen = connect(&sim).await;
    assert_eq!(
        request(&mut listen, 5, &message("Listen"))
            .await
            .get("Number"),
        Some(&Value::from(0u64))
    );
    for _ in 0..3 {
        assert_eq!(
            text(&next_event(&mut listen).await, "MessageType"),
            "Attached"
        );
    }
    let old = sim.cart.network_id(2).unwrap();
    sim.cart.unplug(2).unwrap();
    let gone = next_event(&mut listen).await;
    assert_eq!(
        (text(&gone, "MessageType"), number(&gone, "DeviceID")),
        ("Detached", u64::from(old))
    );
    let new = sim.cart.plug(2).unwrap();
    let back = next_event(&mut listen).await;
    assert_eq!(text(props(&back), "ConnectionType"), "Network");
    assert_eq!(number(&back, "DeviceID"), u64::from(new));
    assert_ne!(new, old, "a new DeviceID, as for a replug");
}

#[tokio::test]
async fn the_control_channel_taps_trust_only_on_a_showing_alert() {
    let (_dir, sim) = start(cart(Flavour::Macos)).await;
    assert_eq!(
        simulator::control::execute(&sim.cart, "trust 1").await,
        "error: no \u{201c}Trust This Computer?\u{201d} alert is showing on slot 1"
    );
    assert_eq!(
        sim.cart.tap_trust_prompt(9, Tap::Trust),
        Err(CartError::NoSuchSlot(9))
    );
    let list = simulator::control::execute(&sim.cart, "list").await;
    assert!(list.contains("on-wifi device_id="), "{list}");
}
