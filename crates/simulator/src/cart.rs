//! The cart: every virtual iPad, which are plugged in, their usbmuxd DeviceIDs, and the events
//! Listen clients receive.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use plist::Dictionary;
use tokio::sync::{broadcast, watch};
use usbmux::{ClientInfo, DeviceEvent, DeviceProperties};

use crate::faults::FaultBook;
use crate::flavour::Flavour;
use crate::ipad::VirtualIpad;
use crate::lockdownd::Link;
use crate::pair_store::PairStore;
use crate::scenario::Connection;
use crate::trust_prompt::Tap;

/// A line for the person watching the simulator.
#[derive(Debug, Clone)]
pub enum Notice {
    Plugged {
        slot: u32,
        device_id: u32,
        ipad: Arc<VirtualIpad>,
    },
    Unplugged {
        slot: u32,
        device_id: u32,
        udid: String,
    },
    Erased {
        slot: u32,
        udid: String,
    },
    /// Listed over Wi-Fi (macOS flavour), under its own DeviceID.
    OnNetwork {
        slot: u32,
        device_id: u32,
        udid: String,
    },
    OffNetwork {
        slot: u32,
        device_id: u32,
        udid: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Plugged {
                slot,
                device_id,
                ipad,
            } => {
                let s = &ipad.spec;
                write!(
                    f,
                    "plugged slot={slot} device_id={device_id} udid={} serial={} model={} ios={} name={:?}",
                    s.identity.udid,
                    s.identity.serial_number,
                    s.model.product_type,
                    s.release.version,
                    ipad.state().device_name
                )
            }
            Notice::Unplugged {
                slot,
                device_id,
                udid,
            } => {
                write!(f, "unplugged slot={slot} device_id={device_id} udid={udid}")
            }
            Notice::Erased { slot, udid } => write!(f, "erased slot={slot} udid={udid}"),
            Notice::OnNetwork {
                slot,
                device_id,
                udid,
            } => write!(
                f,
                "on Wi-Fi slot={slot} device_id={device_id} udid={udid} (ConnectionType Network)"
            ),
            Notice::OffNetwork {
                slot,
                device_id,
                udid,
            } => write!(f, "off Wi-Fi slot={slot} device_id={device_id} udid={udid}"),
        }
    }
}

/// What every Listen client is sent.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Event(DeviceEvent),
    /// A plist message as it is, whatever it holds: what another usbmuxd build (a newer one,
    /// macOS, Windows' Apple Mobile Device Service) might send that this dialect does not.
    /// Binary-protocol listeners do not get it (the binary protocol has no plist messages).
    Message(Dictionary),
}

#[derive(Debug)]
struct Plugged {
    device_id: u32,
    unplug: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Ports {
    /// On the USB cable, by slot.
    plugged: BTreeMap<u32, Plugged>,
    /// Listed over Wi-Fi (macOS flavour), by slot.
    network: BTreeMap<u32, Plugged>,
    last_device_id: u32,
}

impl Ports {
    /// The next DeviceID: counting up, never one still in use (USB or Wi-Fi).
    fn next_device_id(&mut self) -> u32 {
        let mut id = self.last_device_id;
        loop {
            id = id.wrapping_add(1).max(1);
            let in_use = |m: &BTreeMap<u32, Plugged>| m.values().any(|p| p.device_id == id);
            if !in_use(&self.plugged) && !in_use(&self.network) {
                break;
            }
        }
        self.last_device_id = id;
        id
    }
}

/// The `InterfaceIndex` of the Mac's Wi-Fi interface in Network listings (any small integer;
/// the value is not shown in the sources read).
const WIFI_INTERFACE_INDEX: u64 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CartError {
    #[error("there is no slot {0} on this cart")]
    NoSuchSlot(u32),
    #[error("slot {0} is already plugged in")]
    AlreadyPlugged(u32),
    #[error("slot {0} is not plugged in")]
    NotPlugged(u32),
    #[error(
        "slot {0} is reached over Wi-Fi only, and this usbmuxd (linux flavour) lists no network devices"
    )]
    NotListed(u32),
    #[error("no \u{201c}Trust This Computer?\u{201d} alert is showing on slot {0}")]
    NoTrustPrompt(u32),
}

pub struct Cart {
    /// Whose usbmuxd is imitated (properties, network listings).
    pub flavour: Flavour,
    devices: Vec<Arc<VirtualIpad>>,
    ports: Mutex<Ports>,
    events: broadcast::Sender<Broadcast>,
    /// Attached messages carry only what identifies and locates the device (see
    /// [`Cart::set_sparse_attached`]).
    sparse_attached: AtomicBool,
    notices: broadcast::Sender<Notice>,
    pub faults: Arc<Mutex<FaultBook>>,
    pub store: PairStore,
    pub listeners: Mutex<BTreeMap<u64, ClientInfo>>,
    pub authority: Arc<crate::activation::ActivationAuthority>,
    /// Where device keys are kept (a new one after an erase).
    pub keys_dir: Option<std::path::PathBuf>,
    erase_tx: tokio::sync::mpsc::UnboundedSender<(u32, Reset)>,
    erase_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(u32, Reset)>>>,
    /// Where the bus is written as a sysfs tree, if anywhere (`crate::sysfs`).
    sysfs: Mutex<Option<std::path::PathBuf>>,
}

/// What a device asks the cart to do to it after its reply went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// MCInstall EraseDevice: wiped, back on USB new.
    Erase,
    /// lockdownd EnterRecovery: reboots into recovery mode.
    Recovery,
}

impl Cart {
    pub fn new(
        devices: Vec<Arc<VirtualIpad>>,
        store: PairStore,
        faults: FaultBook,
        authority: crate::activation::ActivationAuthority,
    ) -> Self {
        let (erase_tx, erase_rx) = tokio::sync::mpsc::unbounded_channel();
        Cart {
            flavour: Flavour::default(),
            keys_dir: None,
            authority: Arc::new(authority),
            erase_tx,
            erase_rx: Mutex::new(Some(erase_rx)),
            devices,
            ports: Mutex::new(Ports::default()),
            events: broadcast::channel(1024).0,
            sparse_attached: AtomicBool::new(false),
            notices: broadcast::channel(1024).0,
            faults: Arc::new(Mutex::new(faults)),
            store,
            listeners: Mutex::new(BTreeMap::new()),
            sysfs: Mutex::new(None),
        }
    }

    /// Writes the bus as a sysfs tree under `root` now and after every change, before usbmuxd
    /// announces it: on a host the kernel has enumerated a device before usbmuxd hears of it.
    pub fn write_sysfs_to(&self, root: &std::path::Path) -> std::io::Result<()> {
        let ports = self.ports();
        crate::sysfs::write(root, &crate::bus::from_slots(self.slots_in(&ports)))?;
        *self.sysfs.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.to_owned());
        Ok(())
    }

    /// Rewrites the sysfs tree, if there is one; called with the ports locked so the tree and
    /// usbmuxd's events come in the same order as the changes.
    fn bus_changed(&self, ports: &Ports) {
        let root = self.sysfs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(root) = root
            && let Err(e) =
                crate::sysfs::write(&root, &crate::bus::from_slots(self.slots_in(ports)))
        {
            tracing::warn!("writing the USB bus under {}: {e}", root.display());
        }
    }

    fn ports(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn devices(&self) -> &[Arc<VirtualIpad>] {
        &self.devices
    }

    pub fn device(&self, slot: u32) -> Option<&Arc<VirtualIpad>> {
        self.devices.get((slot as usize).checked_sub(1)?)
    }

    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn properties(&self, ipad: &VirtualIpad, device_id: u32) -> DeviceProperties {
        let mut p = self.flavour.usb_properties(
            device_id,
            &ipad.spec.identity,
            &ipad.spec.usb,
            ipad.spec.model.usb_product_id,
        );
        if self.sparse_attached.load(Ordering::Relaxed) {
            p.connection_speed = None;
            p.connection_type = None;
            p.product_id = None;
        }
        p
    }

    fn network_properties(&self, ipad: &VirtualIpad, device_id: u32) -> Option<DeviceProperties> {
        self.flavour
            .network_properties(device_id, &ipad.spec.identity, WIFI_INTERFACE_INDEX)
    }

    /// Every listing now: USB and Wi-Fi, by DeviceID.
    fn listed(&self, ports: &Ports) -> Vec<DeviceProperties> {
        let usb = ports
            .plugged
            .iter()
            .filter_map(|(slot, p)| self.device(*slot).map(|d| self.properties(d, p.device_id)));
        let network = ports.network.iter().filter_map(|(slot, p)| {
            self.device(*slot)
                .and_then(|d| self.network_properties(d, p.device_id))
        });
        let mut list: Vec<_> = usb.chain(network).collect();
        list.sort_by_key(|p| p.device_id);
        list
    }

    /// From now on, `Attached` messages (Listen events and ListDevices entries) leave out
    /// ConnectionSpeed, ConnectionType and ProductID, which clients proven on devices treat as
    /// optional (`docs/fidelity.md` §1): a test of clients against usbmuxd builds that omit them.
    pub fn set_sparse_attached(&self, sparse: bool) {
        self.sparse_attached.store(sparse, Ordering::Relaxed);
    }

    /// Sends `message` as it is to every plist Listen client (see [`Broadcast::Message`]).
    pub fn send_to_listeners(&self, message: Dictionary) {
        let _ = self.events.send(Broadcast::Message(message));
    }

    /// Plugs the iPad in `slot` in: it gets the next free DeviceID (Linux usbmuxd counts up from 1
    /// and never reuses an id still in use) and every Listen client hears `Attached`. An iPad
    /// reached over Wi-Fi only comes into range instead ([`Cart::join_network`]).
    pub fn plug(&self, slot: u32) -> Result<u32, CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        if ipad.spec.connection == Connection::Network {
            return self.join_network(slot);
        }
        let mut ports = self.ports();
        if ports.plugged.contains_key(&slot) {
            return Err(CartError::AlreadyPlugged(slot));
        }
        let id = ports.next_device_id();
        ports.plugged.insert(
            slot,
            Plugged {
                device_id: id,
                unplug: watch::channel(false).0,
            },
        );
        self.bus_changed(&ports);
        let _ = self.events.send(Broadcast::Event(DeviceEvent::Attached(
            self.properties(&ipad, id),
        )));
        drop(ports);
        let _ = self.notices.send(Notice::Plugged {
            slot,
            device_id: id,
            ipad,
        });
        Ok(id)
    }

    /// Pulls the cable: open tunnels drop, Listen clients hear `Detached`, and a refused or
    /// unanswered trust prompt is forgotten (it shows again at the next Pair). An iPad reached
    /// over Wi-Fi only goes out of range instead ([`Cart::leave_network`]).
    pub fn unplug(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        if ipad.spec.connection == Connection::Network {
            return self.leave_network(slot);
        }
        ipad.state().trust_prompt.reconnected();
        let mut ports = self.ports();
        let plugged = ports
            .plugged
            .remove(&slot)
            .ok_or(CartError::NotPlugged(slot))?;
        let _ = plugged.unplug.send(true);
        ipad.pending_services().clear();
        self.bus_changed(&ports);
        let _ = self.events.send(Broadcast::Event(DeviceEvent::Detached {
            device_id: plugged.device_id,
        }));
        drop(ports);
        let _ = self.notices.send(Notice::Unplugged {
            slot,
            device_id: plugged.device_id,
            udid: ipad.udid().into(),
        });
        Ok(())
    }

    /// The iPad in `slot` is listed over Wi-Fi (it is paired for Wi-Fi sync and on the
    /// network), under a DeviceID of its own; only the macOS flavour lists network devices.
    pub fn join_network(&self, slot: u32) -> Result<u32, CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        if !self.flavour.lists_network_devices() {
            return Err(CartError::NotListed(slot));
        }
        let mut ports = self.ports();
        if ports.network.contains_key(&slot) {
            return Err(CartError::AlreadyPlugged(slot));
        }
        let id = ports.next_device_id();
        let Some(props) = self.network_properties(&ipad, id) else {
            return Err(CartError::NotListed(slot));
        };
        ports.network.insert(
            slot,
            Plugged {
                device_id: id,
                unplug: watch::channel(false).0,
            },
        );
        let _ = self
            .events
            .send(Broadcast::Event(DeviceEvent::Attached(props)));
        drop(ports);
        let _ = self.notices.send(Notice::OnNetwork {
            slot,
            device_id: id,
            udid: ipad.udid().into(),
        });
        Ok(id)
    }

    /// The iPad in `slot` is no longer listed over Wi-Fi: its Wi-Fi tunnels drop.
    pub fn leave_network(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        let mut ports = self.ports();
        let listed = ports
            .network
            .remove(&slot)
            .ok_or(CartError::NotPlugged(slot))?;
        let _ = listed.unplug.send(true);
        let _ = self.events.send(Broadcast::Event(DeviceEvent::Detached {
            device_id: listed.device_id,
        }));
        drop(ports);
        let _ = self.notices.send(Notice::OffNetwork {
            slot,
            device_id: listed.device_id,
            udid: ipad.udid().into(),
        });
        Ok(())
    }

    /// The person holding the iPad in `slot` taps Trust or Don't Trust on the alert showing.
    pub fn tap_trust_prompt(&self, slot: u32, tap: Tap) -> Result<(), CartError> {
        let ipad = self.device(slot).ok_or(CartError::NoSuchSlot(slot))?;
        ipad.state()
            .trust_prompt
            .tap(tap)
            .map_err(|_| CartError::NoTrustPrompt(slot))
    }

    /// Properties of every listed device (USB, and Wi-Fi on macOS), by DeviceID.
    pub fn attached(&self) -> Vec<DeviceProperties> {
        self.listed(&self.ports())
    }

    /// For a new Listen client: the devices present now and the events after, with no gap and
    /// no duplicate between them.
    pub fn subscribe(&self) -> (Vec<DeviceProperties>, broadcast::Receiver<Broadcast>) {
        let ports = self.ports();
        let rx = self.events.subscribe();
        let list = self.listed(&ports);
        drop(ports);
        (list, rx)
    }

    /// The link to the listed device with this DeviceID (over its cable, or over Wi-Fi).
    pub fn link(&self, device_id: u32) -> Option<Link> {
        let ports = self.ports();
        let on = |m: &'_ BTreeMap<u32, Plugged>| {
            m.iter()
                .find(|(_, p)| p.device_id == device_id)
                .map(|(s, p)| (*s, p.unplug.subscribe()))
        };
        let (over_network, (slot, unplugged)) = match on(&ports.plugged) {
            Some(found) => (false, found),
            None => (true, on(&ports.network)?),
        };
        Some(Link {
            over_network,
            ipad: self.device(slot)?.clone(),
            unplugged,
            faults: self.faults.clone(),
            erase: self.erase_tx.clone(),
            authority: self.authority.clone(),
        })
    }

    /// Erases the iPad in `slot` as EraseDevice does: it leaves USB, loses everything (activation,
    /// cloud configuration, profiles, trusted hosts, name), and re-attaches after its
    /// `erase_reattach` delay with a new DeviceID.
    pub async fn erase(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        let _ = self.unplug(slot);
        // The erased iPad trusts no host, so no Mac lists it for Wi-Fi sync any more.
        let _ = self.leave_network(slot);
        {
            let mut state = ipad.state();
            *state = state.erased();
        }
        // lockdownd's key pair is in the wiped data partition: the device comes back with a
        // new DevicePublicKey (so old DeviceCertificates no longer fit it).
        let (dir, udid) = (self.keys_dir.clone(), ipad.udid().to_owned());
        let key =
            tokio::task::spawn_blocking(move || crate::ipad::create_key(dir.as_deref(), &udid))
                .await;
        match key {
            Ok(Ok(key)) => {
                if let Err(e) = ipad.rekey(&key) {
                    tracing::warn!("erase of slot {slot}: keeping the old key: {e}");
                }
            }
            Ok(Err(e)) => tracing::warn!("erase of slot {slot}: keeping the old key: {e}"),
            Err(e) => tracing::warn!("erase of slot {slot}: keeping the old key: {e}"),
        }
        let _ = self.notices.send(Notice::Erased {
            slot,
            udid: ipad.udid().into(),
        });
        if ipad.spec.connection == Connection::Network {
            // Reached over Wi-Fi sync only, which the erase ended: nothing lists it again.
            return Ok(());
        }
        tokio::time::sleep(ipad.spec.erase_reattach).await;
        self.plug(slot).map(|_| ())
    }

    /// The iPad reboots into recovery mode: it leaves usbmuxd (Listen clients hear `Detached`)
    /// and shows on the USB bus with the recovery product ID ([`crate::bus::devices`]) until
    /// [`Cart::leave_recovery`].
    pub fn enter_recovery(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        // In recovery before it leaves usbmuxd, so whoever looks at the bus on `Detached` sees
        // it there (a real iPad is on the bus again in recovery within seconds).
        ipad.state().in_recovery = true;
        let _ = self.unplug(slot);
        Ok(())
    }

    /// Out of recovery (a restore, or `irecovery -n`): the iPad boots and comes back on usbmuxd.
    pub fn leave_recovery(&self, slot: u32) -> Result<u32, CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        ipad.state().in_recovery = false;
        self.plug(slot)
    }

    /// Serves erase and recovery requests from devices until the cart is dropped; call once.
    pub fn spawn_eraser(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = self
            .erase_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let cart = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            while let Some((slot, reset)) = rx.recv().await {
                let Some(cart) = cart.upgrade() else { return };
                match reset {
                    Reset::Erase => {
                        tokio::spawn(async move {
                            if let Err(e) = cart.erase(slot).await {
                                tracing::warn!("erase of slot {slot}: {e}");
                            }
                        });
                    }
                    Reset::Recovery => {
                        if let Err(e) = cart.enter_recovery(slot) {
                            tracing::warn!("recovery of slot {slot}: {e}");
                        }
                    }
                }
            }
        }))
    }

    pub fn slot_of(&self, device_id: u32) -> Option<u32> {
        self.ports()
            .plugged
            .iter()
            .find(|(_, p)| p.device_id == device_id)
            .map(|(s, _)| *s)
    }

    /// Tells Listen clients that a host saved a pair record for this device.
    pub fn announce_paired(&self, device_id: u32, udid: &str) {
        let matches = self
            .slot_of(device_id)
            .and_then(|s| self.device(s))
            .is_some_and(|d| {
                d.udid().eq_ignore_ascii_case(udid) || d.spec.identity.usb_serial() == udid
            });
        if matches {
            let _ = self
                .events
                .send(Broadcast::Event(DeviceEvent::Paired { device_id }));
        }
    }

    /// The DeviceID of the Wi-Fi listing of the iPad in `slot`, if it is listed so.
    pub fn network_id(&self, slot: u32) -> Option<u32> {
        self.ports().network.get(&slot).map(|p| p.device_id)
    }

    /// Someone enters the passcode of the iPad in `slot`: a `locked` iPad stops refusing to
    /// pair, and the next Pair shows "Trust This Computer?" afresh (as after a replug).
    pub fn unlock(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self.device(slot).ok_or(CartError::NoSuchSlot(slot))?;
        let mut state = ipad.state();
        state.screen_locked = false;
        state.trust_prompt.reconnected();
        Ok(())
    }

    /// `(slot, USB device_id or None)` for every slot, for `list`.
    pub fn slots(&self) -> Vec<(Arc<VirtualIpad>, Option<u32>)> {
        self.slots_in(&self.ports())
    }

    fn slots_in(&self, ports: &Ports) -> Vec<(Arc<VirtualIpad>, Option<u32>)> {
        self.devices
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    ports.plugged.get(&d.spec.slot).map(|p| p.device_id),
                )
            })
            .collect()
    }
}
