//! A simulated cart on a loopback usbmuxd, and handles to its iPads.

use std::time::Duration;

use lockdown::activation::ActivationServer;
use lockdown::{DeviceRef, PairRecordStore, PairingFile, UsbmuxProvider};
use simulator::{SimConfig, Simulator};
use usbmux::UsbmuxClient;

/// How long an iPad may take to show up in usbmuxd's list (after a plug or an erase).
const LISTED_WITHIN: Duration = Duration::from_secs(10);
const LIST_EVERY: Duration = Duration::from_millis(100);

/// How long pairing may wait for the trust prompt: fresh iPads pair silently.
const PAIRING_DEADLINE: Duration = Duration::from_secs(10);

/// A simulator serving a scenario, with the station's pair-record folder next to it. Both live
/// in a temporary folder removed when the cart is dropped.
pub struct Cart {
    pub sim: Simulator,
    /// The station's own pair records (`<tmp>/station`).
    pub store: PairRecordStore,
    _dir: tempfile::TempDir,
}

impl Cart {
    /// Starts a simulator for `scenario` (the TOML of `simulator::Scenario`) on 127.0.0.1.
    pub async fn start(scenario: &str) -> Cart {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let sim = Simulator::start(SimConfig {
            scenario: toml::from_str(scenario).expect("the scenario parses"),
            listen: vec!["127.0.0.1:0".parse().expect("a loopback address")],
            state_dir: dir.path().join("sim"),
            activated: false,
        })
        .await
        .expect("the simulator starts");
        let store = PairRecordStore::new(dir.path().join("station"));
        Cart {
            sim,
            store,
            _dir: dir,
        }
    }

    /// The iPad of `slot` as usbmuxd lists it now (waiting up to 10 s for it to be listed).
    pub async fn device(&self, slot: u32) -> DeviceRef {
        self.listed(slot, None).await
    }

    /// The iPad of `slot` once usbmuxd lists it under another DeviceID than `before`: after it
    /// came back from an erase or a replug.
    pub async fn device_after_reattach(&self, slot: u32, before: u32) -> DeviceRef {
        self.listed(slot, Some(before)).await
    }

    async fn listed(&self, slot: u32, except: Option<u32>) -> DeviceRef {
        let udid = self
            .sim
            .cart
            .device(slot)
            .unwrap_or_else(|| panic!("the cart has no slot {slot}"))
            .udid()
            .to_owned();
        let tries = LISTED_WITHIN.as_millis() / LIST_EVERY.as_millis();
        for _ in 0..tries {
            let devices = UsbmuxClient::connect(self.sim.address())
                .await
                .expect("usbmuxd accepts a connection")
                .list_devices()
                .await
                .expect("usbmuxd lists its devices");
            if let Some(props) = devices
                .iter()
                .find(|d| d.udid == udid && Some(d.device_id) != except)
            {
                return DeviceRef::new(self.sim.address().clone(), props);
            }
            tokio::time::sleep(LIST_EVERY).await;
        }
        panic!("the iPad of slot {slot} is not listed within {LISTED_WITHIN:?}");
    }

    /// Pairs with the iPad of `slot` (a fresh one pairs silently; nothing is stored in
    /// [`Cart::store`]) and returns a provider for its services, with the record it used.
    pub async fn provider(&self, slot: u32) -> (UsbmuxProvider, PairingFile) {
        let device = self.device(slot).await;
        let (session, record) = lockdown::trusted_session(device, None, PAIRING_DEADLINE)
            .await
            .expect("a trusted session");
        (session.provider(record.clone()), record)
    }

    /// The simulator's activation server, trusted through its own CA.
    pub fn activation_server(&self) -> ActivationServer {
        ActivationServer {
            base_url: self
                .sim
                .activation_server_url()
                .parse()
                .expect("the activation server's URL"),
            extra_root_certificates: vec![self.sim.activation_ca_pem()],
            timeout: Duration::from_secs(10),
        }
    }
}
