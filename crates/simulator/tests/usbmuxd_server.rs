//! The simulator's usbmuxd server at the byte and plist level: what a raw client sees on the
//! socket (headers, tags, Result numbers, Listen events, tunnels), the pair-record store behind
//! it, its reaction to malformed input, and the fault rules a scenario can inject.
//!
//! Every read is bounded by [`IO_TIMEOUT`], so a server that never answers fails the test instead
//! of hanging it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use plist::{Dictionary, Value};
use simulator::faults::{FaultAction, FaultRule};
use simulator::{Scenario, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbmux::frame::{
    self, Frame, HEADER_LEN, Header, MAX_REPLY_LEN, VERSION_BINARY, VERSION_PLIST, message_type,
};
use usbmux::message::port_to_wire;
use usbmux::{UsbmuxAddress, UsbmuxClient, plist_service};

/// How long any single network operation may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// USB LocationID the simulator reports for a slot, from its published bus layout (the rule
/// itself is pinned in `simulator::bus`, and slot 1 by value below).
fn location_id(slot: u32) -> u64 {
    simulator::bus::port(slot)
        .expect("a slot on the bus")
        .location_id()
}

// ---------------------------------------------------------------------------------------------
// Starting simulators
// ---------------------------------------------------------------------------------------------

async fn start_in(scenario: Scenario, state_dir: &Path) -> Simulator {
    Simulator::start(SimConfig {
        scenario,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: state_dir.to_path_buf(),
        activated: false,
    })
    .await
    .unwrap()
}

/// A simulator with its own state folder (keep the folder alive as long as the simulator).
async fn start(scenario: Scenario) -> (tempfile::TempDir, Simulator) {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_in(scenario, dir.path()).await;
    (dir, sim)
}

fn tcp_addr(sim: &Simulator) -> SocketAddr {
    match sim.address().clone() {
        UsbmuxAddress::Tcp(a) => a,
        other => panic!("simulator listens on {other}, not TCP"),
    }
}

fn udid(sim: &Simulator, slot: u32) -> String {
    sim.cart.device(slot).unwrap().udid().to_owned()
}

fn product_id(sim: &Simulator, slot: u32) -> u64 {
    u64::from(sim.cart.device(slot).unwrap().spec.model.usb_product_id)
}

/// One device on the cart, plugged at start, with these fault rules.
fn one_device_with_faults(faults: Vec<FaultRule>) -> Scenario {
    let mut scenario = Scenario::uniform(1);
    scenario.faults = faults;
    scenario
}

// ---------------------------------------------------------------------------------------------
// Raw socket helpers
// ---------------------------------------------------------------------------------------------

async fn connect(sim: &Simulator) -> TcpStream {
    tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(tcp_addr(sim)))
        .await
        .expect("connecting to the simulator timed out")
        .expect("connecting to the simulator failed")
}

fn dict(pairs: &[(&str, Value)]) -> Dictionary {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn n(v: u64) -> Value {
    Value::Integer(v.into())
}

fn message(kind: &str) -> Dictionary {
    dict(&[("MessageType", s(kind))])
}

async fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .expect("writing to the simulator timed out")
    .expect("writing to the simulator failed");
}

async fn send_plist(stream: &mut TcpStream, tag: u32, request: &Dictionary) {
    send_raw(stream, &Frame::plist(tag, request).unwrap().to_bytes()).await;
}

/// The next whole frame; fails on timeout, error or end of stream.
async fn read_frame(stream: &mut TcpStream) -> Frame {
    tokio::time::timeout(IO_TIMEOUT, frame::read_frame(stream, MAX_REPLY_LEN))
        .await
        .expect("no frame from the simulator within the timeout")
        .expect("reading a frame failed")
        .expect("the simulator closed the connection instead of answering")
}

/// The next frame, which must be a version-1 plist frame with this tag; returns its dict.
async fn read_plist(stream: &mut TcpStream, tag: u32) -> Dictionary {
    let f = read_frame(stream).await;
    assert_eq!(f.header.version, VERSION_PLIST, "header version of {f:?}");
    assert_eq!(
        f.header.message,
        message_type::PLIST,
        "message type of {f:?}"
    );
    assert_eq!(f.header.tag, tag, "tag of {f:?}");
    assert_eq!(f.header.length as usize, HEADER_LEN + f.payload.len());
    assert!(
        f.payload.starts_with(b"<?xml"),
        "usbmuxd replies are XML plists, got {:?}",
        String::from_utf8_lossy(&f.payload)
    );
    f.plist_dict().unwrap()
}

/// Sends a plist request and returns the reply dict (tag and header checked).
async fn request(stream: &mut TcpStream, tag: u32, request: &Dictionary) -> Dictionary {
    send_plist(stream, tag, request).await;
    read_plist(stream, tag).await
}

fn result(number: u64) -> Dictionary {
    dict(&[("MessageType", s("Result")), ("Number", n(number))])
}

/// The server must close this connection: a read gives end of stream (or a reset).
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buf)).await {
        Err(_) => panic!("the simulator kept the connection open"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(k)) => panic!(
            "expected the connection to close, got {k} more bytes: {:?}",
            &buf[..k]
        ),
    }
}

/// `{"DeviceID":id,"MessageType":"Attached","Properties":{…}}` exactly as Linux usbmuxd sends it.
fn attached(sim: &Simulator, slot: u32, device_id: u64) -> Dictionary {
    let properties = dict(&[
        ("ConnectionSpeed", n(480_000_000)),
        ("ConnectionType", s("USB")),
        ("DeviceID", n(device_id)),
        ("LocationID", n(location_id(slot))),
        ("ProductID", n(product_id(sim, slot))),
        ("SerialNumber", s(&udid(sim, slot))),
    ]);
    dict(&[
        ("DeviceID", n(device_id)),
        ("MessageType", s("Attached")),
        ("Properties", Value::Dictionary(properties)),
    ])
}

fn device_list_of(entries: Vec<Dictionary>) -> Dictionary {
    dict(&[(
        "DeviceList",
        Value::Array(entries.into_iter().map(Value::Dictionary).collect()),
    )])
}

/// A fresh connection still gets a complete, correct ListDevices reply.
async fn assert_server_still_lists_devices(sim: &Simulator) {
    let mut fresh = connect(sim).await;
    let reply = request(&mut fresh, 1, &message("ListDevices")).await;
    assert_eq!(
        reply,
        device_list_of(vec![attached(sim, 1, 1), attached(sim, 2, 2)])
    );
}

async fn read_pair_record(stream: &mut TcpStream, tag: u32, id: &str) -> Dictionary {
    request(
        stream,
        tag,
        &dict(&[
            ("MessageType", s("ReadPairRecord")),
            ("PairRecordID", s(id)),
        ]),
    )
    .await
}

async fn save_pair_record(
    stream: &mut TcpStream,
    tag: u32,
    id: &str,
    data: &[u8],
    device_id: Option<u64>,
) -> Dictionary {
    let mut req = dict(&[
        ("MessageType", s("SavePairRecord")),
        ("PairRecordID", s(id)),
        ("PairRecordData", Value::Data(data.to_vec())),
    ]);
    if let Some(id) = device_id {
        req.insert("DeviceID".into(), n(id));
    }
    request(stream, tag, &req).await
}

async fn delete_pair_record(stream: &mut TcpStream, tag: u32, id: &str) -> Dictionary {
    request(
        stream,
        tag,
        &dict(&[
            ("MessageType", s("DeletePairRecord")),
            ("PairRecordID", s(id)),
        ]),
    )
    .await
}

/// A small pair record as a binary plist, so a re-encoding server would be caught.
fn sample_pair_record(host_id: &str) -> Vec<u8> {
    let record = dict(&[
        ("HostID", s(host_id)),
        ("SystemBUID", s("5E7E3C5A-0D5F-4E4B-9B8C-2A1D3F4E5B6C")),
        ("EscrowBag", Value::Data(vec![0xAB; 32])),
    ]);
    let mut bytes = Vec::new();
    plist::to_writer_binary(&mut bytes, &record).unwrap();
    assert!(bytes.starts_with(b"bplist00"));
    bytes
}

/// Connects a usbmuxd socket to lockdownd (62078) on `device_id`; the socket is then the tunnel.
async fn lockdown_tunnel(sim: &Simulator, device_id: u64) -> TcpStream {
    let mut stream = connect(sim).await;
    let reply = request(
        &mut stream,
        7,
        &dict(&[
            ("MessageType", s("Connect")),
            ("DeviceID", n(device_id)),
            ("PortNumber", n(u64::from(port_to_wire(62078)))),
        ]),
    )
    .await;
    assert_eq!(reply, result(0), "Connect to lockdownd on {device_id}");
    stream
}

/// One lockdown request through a tunnel; the reply must arrive and parse.
async fn lockdown(stream: &mut TcpStream, request: &Dictionary) -> Dictionary {
    tokio::time::timeout(IO_TIMEOUT, async {
        plist_service::write(stream, request).await?;
        plist_service::read(stream).await
    })
    .await
    .expect("lockdownd did not answer within the timeout")
    .expect("lockdownd reply could not be read")
    .expect("lockdownd closed the tunnel instead of answering")
}

fn lockdown_request(name: &str) -> Dictionary {
    dict(&[("Request", s(name)), ("Label", s("usbmuxd_server test"))])
}

fn get_product_version() -> Dictionary {
    let mut d = lockdown_request("GetValue");
    d.insert("Key".into(), s("ProductVersion"));
    d
}

fn product_version_reply(sim: &Simulator, slot: u32) -> Dictionary {
    let version = sim.cart.device(slot).unwrap().spec.release.version;
    dict(&[
        ("Key", s("ProductVersion")),
        ("Request", s("GetValue")),
        ("Value", s(version)),
    ])
}

fn query_type_reply() -> Dictionary {
    dict(&[
        ("Request", s("QueryType")),
        ("Type", s("com.apple.mobile.lockdown")),
    ])
}

// ---------------------------------------------------------------------------------------------
// ListDevices
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_devices_echoes_the_tag_and_lists_every_device_as_linux_usbmuxd_does() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;
    let expected = device_list_of(vec![attached(&sim, 1, 1), attached(&sim, 2, 2)]);

    for tag in [1, 0xdead_beef] {
        let reply = request(&mut stream, tag, &message("ListDevices")).await;
        assert!(
            !reply.contains_key("MessageType"),
            "libusbmuxd rejects a ListDevices reply with a top-level MessageType: {reply:?}"
        );
        assert_eq!(reply, expected, "ListDevices reply with tag {tag:#x}");
    }

    // Spelled out once, so a wrong helper cannot hide a wrong reply.
    let reply = request(&mut stream, 3, &message("ListDevices")).await;
    let list = reply["DeviceList"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let first = list[0].as_dictionary().unwrap();
    assert_eq!(first["MessageType"].as_string(), Some("Attached"));
    assert_eq!(first["DeviceID"].as_unsigned_integer(), Some(1));
    let props = first["Properties"].as_dictionary().unwrap();
    assert_eq!(props["ConnectionType"].as_string(), Some("USB"));
    assert_eq!(
        props["SerialNumber"].as_string(),
        Some(sim.cart.device(1).unwrap().udid())
    );
    assert_eq!(props["DeviceID"].as_unsigned_integer(), Some(1));
    assert_eq!(props["LocationID"].as_unsigned_integer(), Some(0x1_0003));
    assert_eq!(props["ProductID"].as_unsigned_integer(), Some(0x12AB));
    assert_eq!(
        props["ConnectionSpeed"].as_unsigned_integer(),
        Some(480_000_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usbmux_client_parses_the_device_list() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    let devices = client.list_devices().await.unwrap();
    let summary: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                d.device_id,
                d.udid.clone(),
                d.connection_type.clone(),
                d.location_id,
                d.connection_speed,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                udid(&sim, 1),
                Some("USB".to_owned()),
                Some(0x1_0003),
                Some(480_000_000)
            ),
            (
                2,
                udid(&sim, 2),
                Some("USB".to_owned()),
                Some(0x1_0004),
                Some(480_000_000)
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// ReadBUID
// ---------------------------------------------------------------------------------------------

fn is_uppercase_uuid(v: &str) -> bool {
    v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('A'..='F').contains(&c),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_buid_is_stable_stored_in_system_configuration_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_in(Scenario::uniform(1), dir.path()).await;
    let mut stream = connect(&sim).await;

    let first = request(&mut stream, 1, &message("ReadBUID")).await;
    let buid = first["BUID"].as_string().unwrap().to_owned();
    assert_eq!(
        first,
        dict(&[("BUID", s(&buid))]),
        "only BUID, no MessageType"
    );
    assert!(is_uppercase_uuid(&buid), "SystemBUID {buid:?}");
    let second = request(&mut stream, 2, &message("ReadBUID")).await;
    assert_eq!(second, first);

    let config: Dictionary =
        plist::from_file(dir.path().join("SystemConfiguration.plist")).unwrap();
    assert_eq!(config["SystemBUID"].as_string(), Some(buid.as_str()));

    drop(stream);
    drop(sim);
    let restarted = start_in(Scenario::uniform(1), dir.path()).await;
    let mut client = UsbmuxClient::connect(restarted.address()).await.unwrap();
    assert_eq!(client.read_buid().await.unwrap(), buid);
}

// ---------------------------------------------------------------------------------------------
// Pair records
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_pair_record_of_an_unknown_udid_is_enoent_and_without_an_id_is_einval() {
    let (_dir, sim) = start(Scenario::uniform(1)).await;
    let mut stream = connect(&sim).await;

    let reply = read_pair_record(&mut stream, 1, "00008030-000D543C1A30C02E").await;
    assert_eq!(reply, result(2));
    let reply = read_pair_record(&mut stream, 2, &udid(&sim, 1)).await;
    assert_eq!(
        reply,
        result(2),
        "no record saved yet for the plugged device"
    );
    let reply = request(&mut stream, 3, &message("ReadPairRecord")).await;
    assert_eq!(reply, result(22), "missing PairRecordID");

    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    assert_eq!(client.read_pair_record(&udid(&sim, 1)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_pair_record_rejects_short_non_plist_and_non_dictionary_data_with_einval() {
    let (dir, sim) = start(Scenario::uniform(1)).await;
    let id = udid(&sim, 1);
    let mut stream = connect(&sim).await;

    let seven_bytes = b"<dict/>";
    assert_eq!(seven_bytes.len(), 7);
    assert_eq!(
        save_pair_record(&mut stream, 1, &id, seven_bytes, None).await,
        result(22),
        "fewer than 8 bytes"
    );
    assert_eq!(
        save_pair_record(&mut stream, 2, &id, b"this is certainly not a plist", None).await,
        result(22),
        "not a plist"
    );
    let mut array = Vec::new();
    plist::to_writer_xml(&mut array, &Value::Array(vec![s("HostID")])).unwrap();
    assert_eq!(
        save_pair_record(&mut stream, 3, &id, &array, None).await,
        result(22),
        "a plist, but not a dictionary"
    );
    let no_data = dict(&[
        ("MessageType", s("SavePairRecord")),
        ("PairRecordID", s(&id)),
    ]);
    assert_eq!(
        request(&mut stream, 4, &no_data).await,
        result(22),
        "missing PairRecordData"
    );
    let no_id = dict(&[
        ("MessageType", s("SavePairRecord")),
        ("PairRecordData", Value::Data(sample_pair_record("H"))),
    ]);
    assert_eq!(
        request(&mut stream, 5, &no_id).await,
        result(22),
        "missing PairRecordID"
    );

    assert!(!dir.path().join(format!("{id}.plist")).exists());
    assert_eq!(read_pair_record(&mut stream, 6, &id).await, result(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_pair_record_reads_back_byte_for_byte_from_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;

    let (dir, sim) = start(Scenario::uniform(1)).await;
    let id = udid(&sim, 1);
    let record = sample_pair_record("0B5C6C9E-1111-2222-3333-444455556666");
    let mut stream = connect(&sim).await;

    assert_eq!(
        save_pair_record(&mut stream, 1, &id, &record, None).await,
        result(0)
    );
    let reply = read_pair_record(&mut stream, 2, &id).await;
    assert_eq!(
        reply,
        dict(&[("PairRecordData", Value::Data(record.clone()))]),
        "the exact bytes saved, and no MessageType"
    );

    let path = dir.path().join(format!("{id}.plist"));
    assert_eq!(std::fs::read(&path).unwrap(), record);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "pair record file mode {mode:o}");

    // Saving again replaces the record, still private.
    let newer = sample_pair_record("7D1E0F00-AAAA-BBBB-CCCC-DDDDEEEEFFFF");
    assert_ne!(newer, record);
    assert_eq!(
        save_pair_record(&mut stream, 3, &id, &newer, None).await,
        result(0)
    );
    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    assert_eq!(client.read_pair_record(&id).await.unwrap(), Some(newer));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pair_record_removes_it_and_deleting_an_absent_record_is_enoent() {
    let (dir, sim) = start(Scenario::uniform(1)).await;
    let id = udid(&sim, 1);
    let mut stream = connect(&sim).await;

    assert_eq!(
        save_pair_record(&mut stream, 1, &id, &sample_pair_record("H1"), None).await,
        result(0)
    );
    assert_eq!(delete_pair_record(&mut stream, 2, &id).await, result(0));
    assert!(!dir.path().join(format!("{id}.plist")).exists());
    assert_eq!(read_pair_record(&mut stream, 3, &id).await, result(2));
    assert_eq!(delete_pair_record(&mut stream, 4, &id).await, result(2));
    assert_eq!(
        request(&mut stream, 5, &message("DeletePairRecord")).await,
        result(22),
        "missing PairRecordID"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_of_the_same_pair_record_all_succeed_and_leave_one_whole_record() {
    const SAVES: u32 = 100;
    let (dir, sim) = start(Scenario::uniform(1)).await;
    let id = udid(&sim, 1);
    let record = |client: u32, i: u32| sample_pair_record(&format!("HOST-{client}-{i:04}"));

    let mut clients = Vec::new();
    for client in 0..2 {
        let mut stream = connect(&sim).await;
        let id = id.clone();
        clients.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for i in 0..SAVES {
                let reply =
                    save_pair_record(&mut stream, i + 1, &id, &record(client, i), None).await;
                if reply != result(0) {
                    refused.push((i, reply));
                }
            }
            refused
        }));
    }
    for (client, task) in clients.into_iter().enumerate() {
        let refused = task.await.unwrap();
        assert!(
            refused.is_empty(),
            "client {client}: refused saves {refused:?}"
        );
    }

    // Whichever client finished last, its last record is on disk, whole.
    let on_disk = std::fs::read(dir.path().join(format!("{id}.plist"))).unwrap();
    assert!(
        on_disk == record(0, SAVES - 1) || on_disk == record(1, SAVES - 1),
        "pair record on disk is neither client's last save"
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{id}.plist"),
            "SystemConfiguration.plist".to_owned(),
            "activation-authority.key".to_owned(),
            "devices".to_owned(),
            "mdm-server.key".to_owned()
        ],
        "no temporary files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_record_ids_that_are_paths_are_einval_and_touch_nothing_outside_the_store() {
    let outer = tempfile::tempdir().unwrap();
    let state_dir = outer.path().join("state");
    let sim = start_in(Scenario::uniform(1), &state_dir).await;
    let mut stream = connect(&sim).await;
    let record = sample_pair_record("H");

    let escaped = outer.path().join("evil.plist");
    assert_eq!(
        save_pair_record(&mut stream, 1, "../evil", &record, None).await,
        result(22)
    );
    assert!(!escaped.exists(), "{} was created", escaped.display());

    // A file that a path-following delete or read would reach.
    std::fs::write(&escaped, &record).unwrap();
    assert_eq!(
        read_pair_record(&mut stream, 2, "../evil").await,
        result(22)
    );
    assert_eq!(
        delete_pair_record(&mut stream, 3, "../evil").await,
        result(22)
    );
    assert_eq!(
        std::fs::read(&escaped).unwrap(),
        record,
        "outside file intact"
    );

    for (tag, id) in [(4, ""), (5, ".."), (6, "a/b"), (7, "/tmp/x")] {
        assert_eq!(
            save_pair_record(&mut stream, tag, id, &record, None).await,
            result(22),
            "PairRecordID {id:?}"
        );
    }
    let mut in_outer: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    in_outer.sort();
    assert_eq!(in_outer, vec!["evil.plist".to_owned(), "state".to_owned()]);
    assert!(!state_dir.join("a").exists());
}

// ---------------------------------------------------------------------------------------------
// Bad commands and malformed frames
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_get_result_1_and_unparsable_ones_no_answer_at_all() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    assert_eq!(
        request(&mut stream, 9, &message("Frobnicate")).await,
        result(1)
    );

    // Linux usbmuxd's client_command returns before replying when the payload is not a plist
    // dict with a MessageType string: the client gets nothing, and the socket stays open.
    let no_type = Frame::plist(10, &dict(&[("ProgName", s("no MessageType"))])).unwrap();
    send_raw(&mut stream, &no_type.to_bytes()).await;
    let not_a_plist = Frame::new(
        VERSION_PLIST,
        message_type::PLIST,
        11,
        b"this is not a property list".to_vec(),
    )
    .unwrap();
    send_raw(&mut stream, &not_a_plist.to_bytes()).await;
    let mut array = Vec::new();
    plist::to_writer_xml(&mut array, &Value::Array(vec![s("ListDevices")])).unwrap();
    let not_a_dict = Frame::new(VERSION_PLIST, message_type::PLIST, 12, array).unwrap();
    send_raw(&mut stream, &not_a_dict.to_bytes()).await;

    // The next frame on the wire is the answer to tag 13: nothing was sent for 10, 11 and 12.
    let reply = request(&mut stream, 13, &message("ListDevices")).await;
    assert_eq!(
        reply,
        device_list_of(vec![attached(&sim, 1, 1), attached(&sim, 2, 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_on_a_fresh_connection_gets_a_binary_result_6() {
    let (_dir, sim) = start(Scenario::uniform(1)).await;
    let mut stream = connect(&sim).await;
    let mut bad = Frame::plist(5, &message("ListDevices")).unwrap();
    bad.header.version = 7;
    send_raw(&mut stream, &bad.to_bytes()).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        usbmux::frame::read_frame(&mut stream, usbmux::frame::MAX_REPLY_LEN),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(reply.header.version, 0, "no plist spoken yet: binary reply");
    assert_eq!(reply.header.message, message_type::RESULT);
    assert_eq!(reply.header.tag, 5);
    assert_eq!(reply.payload, 6u32.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_header_version_is_answered_with_result_6_and_the_connection_stays_usable() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;
    // Speak plist first: Linux usbmuxd answers in the protocol the client last used.
    request(&mut stream, 1, &message("ListDevices")).await;

    let mut bad = Frame::plist(77, &message("ListDevices")).unwrap();
    bad.header.version = 7;
    send_raw(&mut stream, &bad.to_bytes()).await;
    assert_eq!(read_plist(&mut stream, 77).await, result(6));

    let reply = request(&mut stream, 78, &message("ListDevices")).await;
    assert_eq!(
        reply,
        device_list_of(vec![attached(&sim, 1, 1), attached(&sim, 2, 2)])
    );
}

fn raw_header(length: u32, version: u32, message: u32, tag: u32) -> [u8; HEADER_LEN] {
    Header {
        length,
        version,
        message,
        tag,
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_length_below_16_closes_that_connection_only() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut bystander = connect(&sim).await;
    let mut stream = connect(&sim).await;

    send_raw(
        &mut stream,
        &raw_header(8, VERSION_PLIST, message_type::PLIST, 1),
    )
    .await;
    assert_closed(&mut stream).await;

    assert_server_still_lists_devices(&sim).await;
    let reply = request(&mut bystander, 2, &message("ListDevices")).await;
    assert_eq!(reply["DeviceList"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_length_0xffffffff_closes_the_connection_and_the_server_keeps_serving() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    send_raw(
        &mut stream,
        &raw_header(u32::MAX, VERSION_PLIST, message_type::PLIST, 1),
    )
    .await;
    assert_closed(&mut stream).await;

    assert_server_still_lists_devices(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_longer_than_64_kib_closes_the_connection() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    send_raw(
        &mut stream,
        &raw_header(0x1_0001, VERSION_PLIST, message_type::PLIST, 1),
    )
    .await;
    assert_closed(&mut stream).await;

    assert_server_still_lists_devices(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_followed_by_close_is_dropped_and_the_server_keeps_serving() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    let whole = Frame::plist(1, &message("ListDevices")).unwrap().to_bytes();
    send_raw(&mut stream, &whole[..HEADER_LEN + 10]).await;
    stream.shutdown().await.unwrap();
    assert_closed(&mut stream).await;

    // A header cut short is no better.
    let mut stream = connect(&sim).await;
    send_raw(&mut stream, &whole[..7]).await;
    stream.shutdown().await.unwrap();
    assert_closed(&mut stream).await;

    assert_server_still_lists_devices(&sim).await;
}

// ---------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------

fn connect_request(device_id: u64, wire_port: u16) -> Dictionary {
    dict(&[
        ("MessageType", s("Connect")),
        ("DeviceID", n(device_id)),
        ("PortNumber", n(u64::from(wire_port))),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unknown_device_id_is_result_2_and_the_socket_stays_in_command_state() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    let reply = request(&mut stream, 5, &connect_request(99, port_to_wire(62078))).await;
    assert_eq!(reply, result(2));
    let no_id = dict(&[
        ("MessageType", s("Connect")),
        ("PortNumber", n(u64::from(port_to_wire(62078)))),
    ]);
    assert_eq!(request(&mut stream, 6, &no_id).await, result(2));

    let reply = request(&mut stream, 7, &message("ListDevices")).await;
    assert_eq!(reply["DeviceList"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_port_nobody_offered_is_result_3() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    let reply = request(&mut stream, 1, &connect_request(1, port_to_wire(1234))).await;
    assert_eq!(reply, result(3), "port 1234");
    // 62078 not byte-swapped is port 32498 on the device, which nobody listens on.
    let reply = request(&mut stream, 2, &connect_request(1, 62078)).await;
    assert_eq!(reply, result(3), "PortNumber 62078 means device port 32498");
    let no_port = dict(&[("MessageType", s("Connect")), ("DeviceID", n(1))]);
    assert_eq!(
        request(&mut stream, 3, &no_port).await,
        result(1),
        "missing PortNumber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_62078_turns_the_socket_into_a_lockdown_tunnel_to_that_device() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    assert_eq!(port_to_wire(62078), 32498);
    let mut stream = connect(&sim).await;

    let reply = request(&mut stream, 0x1234, &connect_request(2, 32498)).await;
    assert_eq!(reply, result(0));

    let reply = lockdown(&mut stream, &lockdown_request("QueryType")).await;
    assert_eq!(reply, query_type_reply());

    let mut get_udid = lockdown_request("GetValue");
    get_udid.insert("Key".into(), s("UniqueDeviceID"));
    let reply = lockdown(&mut stream, &get_udid).await;
    assert_eq!(
        reply,
        dict(&[
            ("Key", s("UniqueDeviceID")),
            ("Request", s("GetValue")),
            ("Value", s(&udid(&sim, 2))),
        ]),
        "the tunnel reaches device 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_a_device_closes_its_open_lockdown_tunnel() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    let mut other = lockdown_tunnel(&sim, 2).await;
    assert_eq!(
        lockdown(&mut tunnel, &lockdown_request("QueryType")).await,
        query_type_reply()
    );

    sim.cart.unplug(1).unwrap();
    assert_closed(&mut tunnel).await;

    // The other device's tunnel is unaffected, and the old DeviceID is gone.
    assert_eq!(
        lockdown(&mut other, &lockdown_request("QueryType")).await,
        query_type_reply()
    );
    let mut stream = connect(&sim).await;
    let reply = request(&mut stream, 1, &connect_request(1, port_to_wire(62078))).await;
    assert_eq!(reply, result(2));
}

// ---------------------------------------------------------------------------------------------
// Listen
// ---------------------------------------------------------------------------------------------

/// Opens a Listen connection and checks the Result 0 that answers it.
async fn listen(sim: &Simulator, tag: u32, request_dict: &Dictionary) -> TcpStream {
    let mut stream = connect(sim).await;
    let reply = request(&mut stream, tag, request_dict).await;
    assert_eq!(reply, result(0), "Listen");
    stream
}

/// The next Listen event: a plist frame with tag 0.
async fn next_event(stream: &mut TcpStream) -> Dictionary {
    read_plist(stream, 0).await
}

fn simple_event(kind: &str, device_id: u64) -> Dictionary {
    dict(&[("DeviceID", n(device_id)), ("MessageType", s(kind))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_replays_present_devices_then_reports_unplug_and_replug_with_a_new_device_id() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut events = listen(&sim, 0x51, &message("Listen")).await;

    assert_eq!(next_event(&mut events).await, attached(&sim, 1, 1));
    assert_eq!(next_event(&mut events).await, attached(&sim, 2, 2));

    sim.cart.unplug(1).unwrap();
    assert_eq!(next_event(&mut events).await, simple_event("Detached", 1));

    let new_id = sim.cart.plug(1).unwrap();
    assert!(
        new_id > 2,
        "re-plugged device got id {new_id}, already used"
    );
    assert_eq!(new_id, 3, "Linux usbmuxd counts up");
    assert_eq!(
        next_event(&mut events).await,
        attached(&sim, 1, u64::from(new_id))
    );

    let mut stream = connect(&sim).await;
    let reply = request(&mut stream, 1, &message("ListDevices")).await;
    assert_eq!(
        reply,
        device_list_of(vec![attached(&sim, 2, 2), attached(&sim, 1, 3)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_a_listen_socket_gets_result_1_and_the_socket_closes() {
    let (_dir, sim) = start(Scenario::uniform(1)).await;
    let mut events = listen(&sim, 1, &message("Listen")).await;
    assert_eq!(next_event(&mut events).await, attached(&sim, 1, 1));

    send_plist(&mut events, 2, &message("ListDevices")).await;
    assert_eq!(read_plist(&mut events, 2).await, result(1));
    assert_closed(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_pair_record_with_the_device_id_of_the_matching_device_tells_listeners_paired() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut events = listen(&sim, 1, &message("Listen")).await;
    assert_eq!(next_event(&mut events).await, attached(&sim, 1, 1));
    assert_eq!(next_event(&mut events).await, attached(&sim, 2, 2));

    let mut stream = connect(&sim).await;
    let record = sample_pair_record("H");
    let second = udid(&sim, 2);
    // No DeviceID, and a DeviceID whose device has another UDID: no event for either.
    assert_eq!(
        save_pair_record(&mut stream, 1, &second, &record, None).await,
        result(0)
    );
    assert_eq!(
        save_pair_record(&mut stream, 2, &second, &record, Some(1)).await,
        result(0)
    );
    assert_eq!(
        save_pair_record(&mut stream, 3, &second, &record, Some(2)).await,
        result(0)
    );

    assert_eq!(next_event(&mut events).await, simple_event("Paired", 2));
}

/// Test hooks, not device rules: a message this usbmuxd dialect never sends, and Attached
/// messages without the properties clients treat as optional (`docs/fidelity.md` §1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_channel_can_send_listeners_an_unknown_message_and_sparse_attached_events() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    sim.cart.unplug(2).unwrap();
    let mut events = listen(&sim, 1, &message("Listen")).await;
    assert_eq!(next_event(&mut events).await, attached(&sim, 1, 1));

    let said = simulator::control::execute(&sim.cart, "listen-message DeviceListChanged").await;
    assert!(said.starts_with("ok"), "{said}");
    assert_eq!(next_event(&mut events).await, message("DeviceListChanged"));

    let said = simulator::control::execute(&sim.cart, "sparse-attached on").await;
    assert!(said.starts_with("ok"), "{said}");
    sim.cart.plug(2).unwrap();
    let sparse = dict(&[
        ("DeviceID", n(3)),
        ("MessageType", s("Attached")),
        (
            "Properties",
            Value::Dictionary(dict(&[
                ("DeviceID", n(3)),
                ("LocationID", n(location_id(2))),
                ("SerialNumber", s(&udid(&sim, 2))),
            ])),
        ),
    ]);
    assert_eq!(next_event(&mut events).await, sparse);

    simulator::control::execute(&sim.cart, "sparse-attached off").await;
    sim.cart.unplug(2).unwrap();
    assert_eq!(next_event(&mut events).await, simple_event("Detached", 3));
    sim.cart.plug(2).unwrap();
    assert_eq!(next_event(&mut events).await, attached(&sim, 2, 4));
    for bad in ["listen-message", "sparse-attached maybe"] {
        let said = simulator::control::execute(&sim.cart, bad).await;
        assert!(said.starts_with("error"), "{bad}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_listeners_shows_an_active_listen_connection_with_its_prog_name() {
    let (_dir, sim) = start(Scenario::uniform(1)).await;
    let mut stream = connect(&sim).await;
    assert_eq!(
        request(&mut stream, 1, &message("ListListeners")).await,
        dict(&[("ListenerList", Value::Array(vec![]))])
    );

    let listen_request = dict(&[
        ("MessageType", s("Listen")),
        ("ProgName", s("usbmuxd-server-test")),
        ("ClientVersionString", s("usbmuxd-server-test 1.0")),
        ("kLibUSBMuxVersion", n(3)),
    ]);
    let events = listen(&sim, 1, &listen_request).await;

    let reply = request(&mut stream, 2, &message("ListListeners")).await;
    let list = reply["ListenerList"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{reply:?}");
    let mut entry = list[0].as_dictionary().unwrap().clone();
    let id_string = entry.remove("ID String").unwrap().into_string().unwrap();
    let (number, prog) = id_string.split_once('-').unwrap();
    assert!(number.parse::<u64>().is_ok(), "ID String {id_string:?}");
    assert_eq!(prog, "usbmuxd-server-test");
    assert_eq!(
        entry,
        dict(&[
            ("Blacklisted", Value::Boolean(false)),
            ("ConnType", n(0)),
            ("ProgName", s("usbmuxd-server-test")),
            ("kLibUSBMuxVersion", n(3)),
        ])
    );

    // Once the Listen connection goes away, so does its entry.
    drop(events);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut tag = 3;
    loop {
        let reply = request(&mut stream, tag, &message("ListListeners")).await;
        if reply["ListenerList"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed Listen connection still listed: {reply:?}"
        );
        tag += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_listen_gets_a_binary_result_then_device_add_records() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    send_raw(
        &mut stream,
        &raw_header(16, VERSION_BINARY, message_type::LISTEN, 0x42),
    )
    .await;
    let reply = read_frame(&mut stream).await;
    assert_eq!(
        reply.header,
        Header {
            length: 20,
            version: VERSION_BINARY,
            message: message_type::RESULT,
            tag: 0x42
        }
    );
    assert_eq!(reply.payload, 0u32.to_le_bytes());

    for (slot, device_id) in [(1u32, 1u32), (2, 2)] {
        let add = read_frame(&mut stream).await;
        assert_eq!(
            add.header,
            Header {
                length: 16 + 268,
                version: VERSION_BINARY,
                message: message_type::DEVICE_ADD,
                tag: 0
            }
        );
        let p = &add.payload;
        assert_eq!(p.len(), 268);
        assert_eq!(u32::from_le_bytes(p[0..4].try_into().unwrap()), device_id);
        assert_eq!(
            u64::from(u16::from_le_bytes(p[4..6].try_into().unwrap())),
            product_id(&sim, slot)
        );
        let mut serial = [0u8; 256];
        let id = udid(&sim, slot);
        serial[..id.len()].copy_from_slice(id.as_bytes());
        assert_eq!(&p[6..262], &serial[..], "NUL-padded serial of slot {slot}");
        assert_eq!(&p[262..264], &[0, 0], "padding");
        assert_eq!(
            u64::from(u32::from_le_bytes(p[264..268].try_into().unwrap())),
            location_id(slot)
        );
    }

    sim.cart.unplug(2).unwrap();
    let remove = read_frame(&mut stream).await;
    assert_eq!(
        remove.header,
        Header {
            length: 20,
            version: VERSION_BINARY,
            message: message_type::DEVICE_REMOVE,
            tag: 0
        }
    );
    assert_eq!(remove.payload, 2u32.to_le_bytes());
}

/// A binary CONNECT: `u32 device id (LE), u16 port (network order), u16 reserved`.
fn binary_connect(tag: u32, device_id: u32, port: u16) -> Vec<u8> {
    let mut payload = device_id.to_le_bytes().to_vec();
    payload.extend_from_slice(&port.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    Frame::new(VERSION_BINARY, message_type::CONNECT, tag, payload)
        .unwrap()
        .to_bytes()
}

fn binary_result(tag: u32, number: u32) -> Frame {
    Frame::new(
        VERSION_BINARY,
        message_type::RESULT,
        tag,
        number.to_le_bytes().to_vec(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_connect_gets_binary_results_and_reaches_lockdown() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;

    send_raw(&mut stream, &binary_connect(1, 99, 62078)).await;
    assert_eq!(
        read_frame(&mut stream).await,
        binary_result(1, 2),
        "no device 99"
    );
    send_raw(&mut stream, &binary_connect(2, 1, 1234)).await;
    assert_eq!(
        read_frame(&mut stream).await,
        binary_result(2, 3),
        "port 1234"
    );
    send_raw(&mut stream, &binary_connect(3, 1, 62078)).await;
    assert_eq!(read_frame(&mut stream).await, binary_result(3, 0));

    assert_eq!(
        lockdown(&mut stream, &lockdown_request("QueryType")).await,
        query_type_reply()
    );
}

// ---------------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_fault_on_the_second_get_value_of_slot_1_drops_only_that_request() {
    let mut scenario = Scenario::uniform(2);
    scenario.faults.push(FaultRule {
        slot: Some(1),
        request: "GetValue".into(),
        nth: 2,
        action: FaultAction::Drop,
    });
    let (_dir, sim) = start(scenario).await;

    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    assert_eq!(
        lockdown(&mut tunnel, &get_product_version()).await,
        product_version_reply(&sim, 1),
        "first GetValue"
    );
    tokio::time::timeout(
        IO_TIMEOUT,
        plist_service::write(&mut tunnel, &get_product_version()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_closed(&mut tunnel).await;

    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    assert_eq!(
        lockdown(&mut tunnel, &get_product_version()).await,
        product_version_reply(&sim, 1),
        "third GetValue, on a new connection"
    );

    // The rule names slot 1: slot 2 answers its second GetValue.
    let mut tunnel = lockdown_tunnel(&sim, 2).await;
    for _ in 0..2 {
        assert_eq!(
            lockdown(&mut tunnel, &get_product_version()).await,
            product_version_reply(&sim, 2)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fault_on_query_type_makes_the_reply_unparsable() {
    let scenario: Scenario = toml::from_str(
        r#"
        [[device]]

        [[fault]]
        slot = 1
        request = "QueryType"
        nth = 1
        action = "malformed"
        "#,
    )
    .unwrap();
    let (_dir, sim) = start(scenario).await;

    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    let outcome = tokio::time::timeout(IO_TIMEOUT, async {
        plist_service::write(&mut tunnel, &lockdown_request("QueryType")).await?;
        plist_service::read(&mut tunnel).await
    })
    .await
    .expect("a malformed reply must fail the read, not stall it");
    assert!(
        outcome.is_err(),
        "expected an unparsable reply, got {outcome:?}"
    );

    // Only the first QueryType was malformed.
    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    assert_eq!(
        lockdown(&mut tunnel, &lockdown_request("QueryType")).await,
        query_type_reply()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_fault_answers_with_the_configured_lockdown_error_name() {
    let (_dir, sim) = start(one_device_with_faults(vec![FaultRule {
        slot: None,
        request: "GetValue".into(),
        nth: 0,
        action: FaultAction::Error {
            name: "DeviceLocked".into(),
        },
    }]))
    .await;

    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    for _ in 0..2 {
        assert_eq!(
            lockdown(&mut tunnel, &get_product_version()).await,
            dict(&[("Error", s("DeviceLocked")), ("Request", s("GetValue"))])
        );
    }
    assert_eq!(
        lockdown(&mut tunnel, &lockdown_request("QueryType")).await,
        query_type_reply(),
        "other requests are unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_fault_delays_the_reply_by_at_least_the_configured_time() {
    const DELAY: Duration = Duration::from_millis(400);
    let (_dir, sim) = start(one_device_with_faults(vec![FaultRule {
        slot: Some(1),
        request: "QueryType".into(),
        nth: 1,
        action: FaultAction::Delay {
            ms: DELAY.as_millis() as u64,
        },
    }]))
    .await;

    let mut tunnel = lockdown_tunnel(&sim, 1).await;
    let started = Instant::now();
    let reply = lockdown(&mut tunnel, &lockdown_request("QueryType")).await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply,
        query_type_reply(),
        "a delayed reply is still the real one"
    );
    assert!(
        elapsed >= DELAY,
        "answered after {elapsed:?}, before {DELAY:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usbmuxd_level_drop_fault_closes_that_connection_and_the_next_request_is_answered() {
    let (_dir, sim) = start(one_device_with_faults(vec![FaultRule {
        slot: Some(0),
        request: "ListDevices".into(),
        nth: 1,
        action: FaultAction::Drop,
    }]))
    .await;

    let mut stream = connect(&sim).await;
    send_plist(&mut stream, 1, &message("ListDevices")).await;
    assert_closed(&mut stream).await;

    let mut stream = connect(&sim).await;
    assert_eq!(
        request(&mut stream, 2, &message("ListDevices")).await,
        device_list_of(vec![attached(&sim, 1, 1)])
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile plists: a client cannot crash the simulator
//
// Each message is well formed (a dictionary with every key the request needs) but carries a
// value nested thousands of levels deep: a reader without a depth bound would act on it (or
// overflow its stack); the simulator must refuse it as unreadable and go on serving.
// ---------------------------------------------------------------------------------------------

use usbmux::test_support::{Format, dict_with_deep_array};

/// A request that fits in one usbmuxd request (64 KiB): binary takes 5 bytes a level, XML 15.
fn deep_usbmuxd_request(format: Format, entries: &[(&str, &str)]) -> Vec<u8> {
    let depth = match format {
        Format::Binary => 10_000,
        Format::Xml => 4_000,
    };
    let bytes = dict_with_deep_array(format, entries, depth);
    assert!(
        bytes.len() + HEADER_LEN <= 0x10000,
        "{format:?} fits a request"
    );
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_usbmuxd_request_gets_no_answer_and_the_server_keeps_serving() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    let mut stream = connect(&sim).await;
    for (tag, format) in (20..).zip([Format::Binary, Format::Xml]) {
        let payload = deep_usbmuxd_request(format, &[("MessageType", "ListDevices")]);
        let frame = Frame::new(VERSION_PLIST, message_type::PLIST, tag, payload).unwrap();
        send_raw(&mut stream, &frame.to_bytes()).await;
        // Like any unparsable payload: no answer (the next frame answers the next tag), and
        // the same connection still works.
        let reply = request(&mut stream, tag + 10, &message("ListDevices")).await;
        assert_eq!(
            reply,
            device_list_of(vec![attached(&sim, 1, 1), attached(&sim, 2, 2)]),
            "{format:?}"
        );
    }
    assert_server_still_lists_devices(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_pair_record_is_refused_with_einval() {
    let (dir, sim) = start(Scenario::uniform(2)).await;
    let id = udid(&sim, 1);
    let mut stream = connect(&sim).await;
    // The record travels base64-encoded inside a 64 KiB request: 8 000 and 2 500 levels fit.
    let entries = [("HostID", "5E7E3C5A-0D5F-4E4B-9B8C-2A1D3F4E5B6C")];
    let records = [
        (
            Format::Binary,
            dict_with_deep_array(Format::Binary, &entries, 8_000),
        ),
        (
            Format::Xml,
            dict_with_deep_array(Format::Xml, &entries, 2_500),
        ),
    ];
    for (tag, (format, record)) in (1..).zip(records) {
        assert_eq!(
            save_pair_record(&mut stream, tag, &id, &record, None).await,
            result(22),
            "{format:?}"
        );
    }
    assert!(!dir.path().join(format!("{id}.plist")).exists());
    assert_server_still_lists_devices(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_system_configuration_file_is_treated_as_unreadable() {
    const STORED: &str = "0BADC0DE-0000-4000-8000-000000000000";
    for format in [Format::Binary, Format::Xml] {
        let dir = tempfile::tempdir().unwrap();
        let file = dict_with_deep_array(format, &[("SystemBUID", STORED)], 10_000);
        std::fs::write(dir.path().join("SystemConfiguration.plist"), file).unwrap();
        let sim = start_in(Scenario::uniform(1), dir.path()).await;
        let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
        // As if the file were missing: a new SystemBUID, not the one in the unreadable file.
        let buid = client.read_buid().await.unwrap();
        assert!(is_uppercase_uuid(&buid), "{format:?}: {buid:?}");
        assert_ne!(buid, STORED, "{format:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_lockdown_message_drops_that_tunnel_only() {
    let (_dir, sim) = start(Scenario::uniform(2)).await;
    for format in [Format::Binary, Format::Xml] {
        let mut tunnel = lockdown_tunnel(&sim, 1).await;
        let entries = [
            ("Request", "GetValue"),
            ("Key", "ProductVersion"),
            ("Label", "hostile"),
        ];
        let body = dict_with_deep_array(format, &entries, 10_000);
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        send_raw(&mut tunnel, &wire).await;
        assert_closed(&mut tunnel).await;

        // The same device, through a new tunnel, still answers.
        let mut fresh = lockdown_tunnel(&sim, 1).await;
        assert_eq!(
            lockdown(&mut fresh, &get_product_version()).await,
            product_version_reply(&sim, 1),
            "{format:?}"
        );
    }
    assert_server_still_lists_devices(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deep_fault_makes_a_reply_a_client_must_refuse() {
    let (_dir, sim) = start(one_device_with_faults(vec![FaultRule {
        slot: Some(0),
        request: "ListDevices".into(),
        nth: 1,
        action: FaultAction::Deep,
    }]))
    .await;
    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    assert!(
        matches!(
            client.list_devices().await,
            Err(usbmux::UsbmuxError::BadPlist(
                usbmux::BoundedPlistError::TooDeep { .. }
            ))
        ),
        "the reply nests 10 000 levels deep"
    );
    let mut client = UsbmuxClient::connect(sim.address()).await.unwrap();
    assert_eq!(client.list_devices().await.unwrap().len(), 1);
}
