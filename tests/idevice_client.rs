//! The idevice crate — an independent client used with real iPads — against `cartprep`'s
//! simulator, with no cartprep client code in the path.

use std::time::Duration;

use futures::StreamExt;
use idevice::IdeviceService;
use idevice::provider::IdeviceProvider;
use idevice::services::lockdown::LockdownClient;
use idevice::usbmuxd::{UsbmuxdAddr, UsbmuxdListenEvent};
use simulator::{SimConfig, Simulator};

async fn start(devices: usize) -> (Simulator, tempfile::TempDir, UsbmuxdAddr) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig {
        scenario: simulator::Scenario::uniform(devices),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: dir.path().to_path_buf(),
        activated: false,
    })
    .await
    .unwrap();
    let usbmux::UsbmuxAddress::Tcp(tcp) = sim.address().clone() else {
        unreachable!("listening on TCP")
    };
    (sim, dir, UsbmuxdAddr::TcpSocket(tcp))
}

#[tokio::test]
async fn idevice_lists_the_cart_and_reads_the_buid() {
    let (sim, _dir, addr) = start(3).await;
    let mut mux = addr.connect(1).await.unwrap();
    let mut listed: Vec<String> = mux
        .get_devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.udid)
        .collect();
    let mut expected: Vec<String> = sim
        .cart
        .devices()
        .iter()
        .map(|d| d.udid().to_owned())
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(mux.get_buid().await.unwrap(), sim.cart.store.system_buid());
}

#[tokio::test]
async fn idevice_pairs_saves_through_usbmuxd_and_opens_a_tls_session() {
    let (sim, _dir, addr) = start(2).await;
    let ipad = sim.cart.device(2).unwrap().clone();
    let mut mux = addr.connect(1).await.unwrap();
    let device = mux.get_device(ipad.udid()).await.unwrap();
    let buid = mux.get_buid().await.unwrap();
    let provider = device.to_provider(addr.clone(), "idevice-test");

    let mut lockdown = LockdownClient::connect(&provider).await.unwrap();
    let product = lockdown.get_value(Some("ProductType"), None).await.unwrap();
    assert_eq!(product.as_string(), Some(ipad.spec.model.product_type));
    let record = lockdown
        .pair(
            "0A1B2C3D-0000-4000-8000-000000000001",
            buid,
            Some("idevice-test"),
        )
        .await
        .unwrap();
    addr.connect(2)
        .await
        .unwrap()
        .save_pair_record(ipad.udid(), record.serialize().unwrap())
        .await
        .unwrap();

    // The provider reads the record back from usbmuxd, as idevice does with a real device.
    let record = provider.get_pairing_file().await.unwrap();
    let mut lockdown = LockdownClient::connect(&provider).await.unwrap();
    lockdown.start_session(&record).await.unwrap();
    let serial = lockdown
        .get_value(Some("SerialNumber"), None)
        .await
        .unwrap();
    assert_eq!(
        serial.as_string(),
        Some(ipad.spec.identity.serial_number.as_str())
    );
    lockdown
        .set_value("DeviceName", "Library 3".into(), None)
        .await
        .unwrap();
    assert_eq!(ipad.state().device_name, "Library 3");
    // A new iPad is not activated yet: mobileactivationd is a service lockdownd starts for it
    // (MCInstall is refused until activation, docs/fidelity.md).
    let (port, ssl) = lockdown
        .start_service("com.apple.mobileactivationd")
        .await
        .unwrap();
    assert!(port > 1024 && ssl);
}

#[tokio::test]
async fn idevice_listen_stream_sees_plug_and_unplug() {
    let (sim, _dir, addr) = start(1).await;
    let mut mux = addr.connect(7).await.unwrap();
    let mut events = mux.listen().await.unwrap();
    let next = Duration::from_secs(10);
    let first = tokio::time::timeout(next, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let UsbmuxdListenEvent::Connected(device) = first else {
        panic!("expected the present device first")
    };
    assert_eq!(device.udid, sim.cart.device(1).unwrap().udid());
    sim.cart.unplug(1).unwrap();
    match tokio::time::timeout(next, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        UsbmuxdListenEvent::Disconnected(id) => assert_eq!(id, device.device_id),
        UsbmuxdListenEvent::Connected(d) => panic!("expected Disconnected, got {d:?}"),
    }
}
