//! A usbmuxd-compatible server hosting virtual iPads that speak lockdownd, so that cartprep and
//! independent tools (pymobiledevice3, libimobiledevice, the idevice crate) can be tested
//! without an iPad.

pub mod activation;
pub mod activation_server;
pub mod asm_server;
pub mod bus;
pub mod cart;
pub mod catalogue;
pub mod cms_sign;
pub mod cms_verify;
pub mod control;
pub mod device_rules;
pub mod enrollment;
pub mod error;
pub mod faults;
pub mod files;
pub mod flavour;
pub mod ipad;
pub mod lockdownd;
pub mod mcinstall;
pub mod mdm_server;
pub mod pair_store;
pub mod replay;
pub mod rng;
pub mod scenario;
pub mod services;
pub mod sysfs;
pub mod tls;
pub mod trust_prompt;
pub mod untrusted;
pub mod usbmuxd;
pub mod value_rules;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use usbmux::UsbmuxAddress;

pub use cart::{Cart, CartError, Notice};
pub use error::SimError;
pub use scenario::Scenario;

use crate::catalogue::{Identity, MODELS};
use crate::faults::FaultBook;
use crate::ipad::{DeviceSpec, DeviceState, VirtualIpad};
use crate::pair_store::PairStore;

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub scenario: Scenario,
    /// Where to listen; a TCP port 0 picks a free port (see [`Simulator::addresses`]).
    pub listen: Vec<UsbmuxAddress>,
    /// Pair records, SystemBUID and device keys.
    pub state_dir: PathBuf,
    /// Devices without an explicit `activated` start activated (still in Setup Assistant).
    pub activated: bool,
}

/// The name of the fake MDM (its enrollment profile's organisation).
pub const MDM_NAME: &str = "Simulated MDM";

pub struct Simulator {
    pub cart: Arc<Cart>,
    activation_server: activation_server::ActivationServer,
    mdm_server: mdm_server::MdmServer,
    addresses: Vec<UsbmuxAddress>,
    tasks: Vec<JoinHandle<()>>,
    scenario: Scenario,
}

impl Simulator {
    /// Builds the cart, binds every address and starts serving. Devices the scenario plugs at
    /// start are plugged before this returns.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let scenario = config.scenario;
        scenario.validate().map_err(|reason| SimError::Scenario {
            path: "(scenario)".into(),
            reason,
        })?;
        // validate() has checked the levels.
        let levels = scenario.levels().unwrap_or_default();
        let store = PairStore::open(&config.state_dir)?;
        let keys_dir = config.state_dir.join("devices");
        // Made now, though the keys come later: the state folder looks the same from the start.
        std::fs::create_dir_all(&keys_dir)?;
        let mut specs = Vec::new();
        for (i, entry) in scenario.devices.iter().enumerate() {
            let slot = i as u32 + 1;
            let model = match &entry.model {
                Some(m) => catalogue::model(m).ok_or_else(|| SimError::Scenario {
                    path: "(scenario)".into(),
                    reason: format!("unknown model {m}"),
                })?,
                None => &MODELS[i % MODELS.len()],
            };
            let release = entry
                .ios
                .as_deref()
                .and_then(|v| model.release(v))
                .unwrap_or(model.releases[model.releases.len() - 1]);
            let mut identity = Identity::generate(
                model,
                scenario.seed.wrapping_mul(1000).wrapping_add(slot as u64),
            );
            if let Some(s) = &entry.serial {
                identity.serial_number = s.clone();
            }
            if let Some(u) = &entry.udid {
                identity.udid = u.clone();
            }
            specs.push((
                DeviceSpec {
                    slot,
                    model,
                    release,
                    identity,
                    pairing: entry.pairing_behavior(),
                    latency: Duration::from_millis(entry.latency_ms),
                    usb: bus::port_in(levels, slot).ok_or_else(|| SimError::Scenario {
                        path: "(scenario)".into(),
                        reason: format!("slot {slot} has no port on the bus"),
                    })?,
                    ade: entry.ade.then(|| ipad::AdeAssignment {
                        organization: entry
                            .ade_organization
                            .clone()
                            .unwrap_or_else(|| "Example School District".into()),
                        configuration_url: entry
                            .ade_configuration_url
                            .clone()
                            .unwrap_or_else(|| "https://mdm.example.org/enroll".into()),
                    }),
                    other_organization: entry.other_organization.clone(),
                    activation_lock: entry.activation_lock,
                    erase_reattach: Duration::from_millis(entry.erase_reattach_ms.unwrap_or(2000)),
                    rules: device_rules::DeviceRules::from_entry(entry),
                    connection: entry.connection,
                    also_network: entry.also_network,
                },
                {
                    let mut state = DeviceState::new(
                        entry.name.clone().unwrap_or_else(|| "iPad".into()),
                        entry.activated.unwrap_or(config.activated),
                        false,
                        entry.passcode,
                    );
                    state.migration_waits_left = entry.migration_wait_replies;
                    state.screen_locked = entry.pairing == scenario::PairingKind::Locked;
                    if entry.setup_done {
                        state.with_setup_done()
                    } else {
                        state
                    }
                },
            ));
        }
        // Keys are made on each iPad's first connection (`VirtualIpad::keys_ready`), so a
        // cart of any size is listed at once.
        let devices: Vec<_> = specs
            .into_iter()
            .map(|(spec, state)| {
                Arc::new(VirtualIpad::with_lazy_key(
                    spec,
                    state,
                    Some(keys_dir.clone()),
                ))
            })
            .collect();
        let mut faults = FaultBook::default();
        for f in &scenario.faults {
            faults.add(f.clone());
        }
        let authority_dir = config.state_dir.clone();
        let authority = tokio::task::spawn_blocking(move || {
            activation::ActivationAuthority::load_or_create(&authority_dir)
        })
        .await
        .map_err(|e| SimError::Key(e.to_string()))??;
        let mut cart = Cart::new(devices, store, faults, authority);
        cart.keys_dir = Some(keys_dir);
        cart.flavour = scenario.flavour;
        let cart = Arc::new(cart);
        let activation_server = activation_server::start(cart.clone()).await?;
        let mdm_server = mdm_server::start(&config.state_dir, MDM_NAME).await?;

        let mut addresses = Vec::new();
        let mut tasks: Vec<JoinHandle<()>> = cart.spawn_eraser().into_iter().collect();
        for addr in &config.listen {
            let (bound, task) = bind(cart.clone(), addr).await?;
            addresses.push(bound);
            tasks.push(task);
        }
        for slot in 1..=scenario.devices.len() as u32 {
            if scenario.plugged_at_start(slot) {
                let _ = cart.plug(slot);
            }
            // Paired for Wi-Fi sync and on the network: listed a second time (macOS flavour).
            if scenario.devices[slot as usize - 1].also_network {
                let _ = cart.join_network(slot);
            }
        }
        Ok(Simulator {
            cart,
            activation_server,
            mdm_server,
            addresses,
            tasks,
            scenario,
        })
    }

    /// The addresses actually listened on, in the order given.
    pub fn addresses(&self) -> &[UsbmuxAddress] {
        &self.addresses
    }

    /// The first address (tests use one).
    pub fn address(&self) -> &UsbmuxAddress {
        &self.addresses[0]
    }

    /// Base URL of the fake activation server (`https://127.0.0.1:PORT/deviceservices/`).
    pub fn activation_server_url(&self) -> String {
        self.activation_server.base_url.clone()
    }

    /// The CA certificate (PEM) a client must trust to reach the fake activation server.
    pub fn activation_ca_pem(&self) -> Vec<u8> {
        self.activation_server.ca_pem.clone()
    }

    /// The fake MDM enrollment server (its URL, CA and the requests it saw).
    pub fn mdm_server(&self) -> &mdm_server::MdmServer {
        &self.mdm_server
    }

    /// The URL a cloud configuration's `ConfigurationURL` names to enroll in the fake MDM.
    pub fn mdm_enrollment_url(&self) -> String {
        self.mdm_server.enrollment_url()
    }

    /// The fake MDM's CA certificate (PEM): the anchor a device needs to reach it.
    pub fn mdm_ca_pem(&self) -> Vec<u8> {
        self.mdm_server.ca_pem.clone()
    }

    /// Plays the scenario's timeline (plugs and unplugs at their times, from now).
    pub fn spawn_timeline(&self) -> JoinHandle<()> {
        let cart = self.cart.clone();
        let mut timeline = self.scenario.timeline.clone();
        timeline.sort_by_key(|t| t.at_ms);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for t in timeline {
                tokio::time::sleep_until(start + Duration::from_millis(t.at_ms)).await;
                let r = match t.action {
                    scenario::Action::Plug => cart.plug(t.slot).map(|_| ()),
                    scenario::Action::Unplug => cart.unplug(t.slot),
                    scenario::Action::Unlock => cart.unlock(t.slot),
                    scenario::Action::Setup => {
                        if let Some(ipad) = cart.device(t.slot).cloned() {
                            // Setup Assistant runs on the device, beside the timeline.
                            tokio::spawn(async move {
                                let outcome = enrollment::finish_setup_assistant(&ipad).await;
                                tracing::info!(slot = ipad.spec.slot, "setup: {outcome}");
                            });
                        }
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    tracing::warn!("timeline at {} ms: {e}", t.at_ms);
                }
            }
        })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.activation_server.task.abort();
        self.mdm_server.task.abort();
        for a in &self.addresses {
            if let UsbmuxAddress::Unix(p) = a {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

async fn bind(
    cart: Arc<Cart>,
    addr: &UsbmuxAddress,
) -> Result<(UsbmuxAddress, JoinHandle<()>), SimError> {
    match addr {
        UsbmuxAddress::Tcp(a) => {
            let listener = tokio::net::TcpListener::bind(a).await?;
            let bound = UsbmuxAddress::Tcp(listener.local_addr()?);
            let task = tokio::spawn(async move {
                // The connections belong to this task: aborting it (dropping the simulator)
                // closes every client, Listen and device tunnels included, as a usbmuxd that
                // stops does.
                let mut clients = tokio::task::JoinSet::new();
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            while clients.try_join_next().is_some() {}
                            clients.spawn(usbmuxd::serve_client(cart.clone(), Box::new(s)));
                        }
                        Err(e) => {
                            tracing::warn!("usbmuxd accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            Ok((bound, task))
        }
        UsbmuxAddress::Unix(path) => {
            // A stale socket from a killed run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path)?;
            let task = tokio::spawn(async move {
                let mut clients = tokio::task::JoinSet::new();
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            while clients.try_join_next().is_some() {}
                            clients.spawn(usbmuxd::serve_client(cart.clone(), Box::new(s)));
                        }
                        Err(e) => {
                            tracing::warn!("usbmuxd accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            Ok((addr.clone(), task))
        }
    }
}
