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
use crate::ipad::VirtualIpad;
use crate::lockdownd::Link;
use crate::pair_store::PairStore;

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
    plugged: BTreeMap<u32, Plugged>,
    last_device_id: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CartError {
    #[error("there is no slot {0} on this cart")]
    NoSuchSlot(u32),
    #[error("slot {0} is already plugged in")]
    AlreadyPlugged(u32),
    #[error("slot {0} is not plugged in")]
    NotPlugged(u32),
}

pub struct Cart {
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
        let mut p = DeviceProperties::usb(device_id, ipad.udid());
        p.location_id = Some(ipad.spec.usb.location_id());
        p.product_id = Some(u64::from(ipad.spec.model.usb_product_id));
        if self.sparse_attached.load(Ordering::Relaxed) {
            p.connection_speed = None;
            p.connection_type = None;
            p.product_id = None;
        }
        p
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
    /// and never reuses an id still in use) and every Listen client hears `Attached`.
    pub fn plug(&self, slot: u32) -> Result<u32, CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        let mut ports = self.ports();
        if ports.plugged.contains_key(&slot) {
            return Err(CartError::AlreadyPlugged(slot));
        }
        let mut id = ports.last_device_id;
        loop {
            id = id.wrapping_add(1).max(1);
            if !ports.plugged.values().any(|p| p.device_id == id) {
                break;
            }
        }
        ports.last_device_id = id;
        ports.plugged.insert(
            slot,
            Plugged {
                device_id: id,
                unplug: watch::channel(false).0,
            },
        );
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

    /// Pulls the cable: open tunnels drop, Listen clients hear `Detached`.
    pub fn unplug(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self
            .device(slot)
            .ok_or(CartError::NoSuchSlot(slot))?
            .clone();
        let mut ports = self.ports();
        let plugged = ports
            .plugged
            .remove(&slot)
            .ok_or(CartError::NotPlugged(slot))?;
        let _ = plugged.unplug.send(true);
        ipad.pending_services().clear();
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

    /// Properties of every plugged device, by DeviceID.
    pub fn attached(&self) -> Vec<DeviceProperties> {
        let ports = self.ports();
        let mut list: Vec<_> = ports
            .plugged
            .iter()
            .filter_map(|(slot, p)| self.device(*slot).map(|d| self.properties(d, p.device_id)))
            .collect();
        list.sort_by_key(|p| p.device_id);
        list
    }

    /// For a new Listen client: the devices present now and the events after, with no gap and
    /// no duplicate between them.
    pub fn subscribe(&self) -> (Vec<DeviceProperties>, broadcast::Receiver<Broadcast>) {
        let ports = self.ports();
        let rx = self.events.subscribe();
        let list = ports
            .plugged
            .iter()
            .filter_map(|(slot, p)| self.device(*slot).map(|d| self.properties(d, p.device_id)))
            .collect();
        drop(ports);
        (list, rx)
    }

    /// The link to the plugged device with this DeviceID.
    pub fn link(&self, device_id: u32) -> Option<Link> {
        let ports = self.ports();
        let (slot, p) = ports
            .plugged
            .iter()
            .find(|(_, p)| p.device_id == device_id)?;
        Some(Link {
            ipad: self.device(*slot)?.clone(),
            unplugged: p.unplug.subscribe(),
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
        let _ = self.unplug(slot);
        ipad.state().in_recovery = true;
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

    /// Someone enters the passcode of the iPad in `slot`: a `locked` iPad stops refusing to
    /// pair (it asks "Trust This Computer?" next).
    pub fn unlock(&self, slot: u32) -> Result<(), CartError> {
        let ipad = self.device(slot).ok_or(CartError::NoSuchSlot(slot))?;
        ipad.state().screen_locked = false;
        Ok(())
    }

    /// `(slot, device_id or None)` for every slot, for `list`.
    pub fn slots(&self) -> Vec<(Arc<VirtualIpad>, Option<u32>)> {
        let ports = self.ports();
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
