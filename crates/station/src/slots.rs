//! USB slots: which physical port of the cart an iPad is in, and Apple devices in recovery or
//! DFU mode that usbmuxd does not show.
//!
//! The slot key is the port chain (`1-2.4.3`: bus, then each hub port), which stays the same for
//! a socket on the cart. Linux usbmuxd's LocationID is `(bus << 16) | address` (the address
//! changes on every replug), so on Linux the device is found by bus and address and its chain
//! read from libusb; macOS usbmuxd's LocationID is the IOKit location, already a port chain.
//! When libusb cannot start (no /dev/bus/usb in a container, no permission), the station runs
//! without slots and says so once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusb::UsbContext;
use serde::{Deserialize, Serialize};

/// Apple's USB vendor ID.
pub const APPLE_VID: u16 = 0x05AC;

/// What an Apple device on the bus is doing, from its product ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsbMode {
    /// Normal iOS/iPadOS: usbmuxd talks to it.
    Normal,
    Recovery,
    Dfu,
    Wtf,
    PortDfu,
    Kis,
}

impl UsbMode {
    /// libirecovery's product IDs (and the normal-mode range usbmuxd matches).
    pub fn from_product_id(pid: u16) -> Option<Self> {
        Some(match pid {
            0x1290..=0x12AF => UsbMode::Normal,
            0x1280..=0x1283 => UsbMode::Recovery,
            0x1227 => UsbMode::Dfu,
            0x1222 => UsbMode::Wtf,
            0xF014 => UsbMode::PortDfu,
            0x1881 => UsbMode::Kis,
            _ => return None,
        })
    }

    /// What the operator should read.
    pub fn describe(&self) -> &'static str {
        match self {
            UsbMode::Normal => "normal mode",
            UsbMode::Recovery => {
                "recovery mode — restore it (Finder/Apple Configurator or idevicerestore)"
            }
            UsbMode::Dfu | UsbMode::PortDfu => "DFU mode — restore it",
            UsbMode::Wtf => "WTF (early DFU) mode — restore it",
            UsbMode::Kis => "debug (KIS) mode — restart it",
        }
    }
}

/// `bus-port.port.port`, as Linux names USB devices in sysfs.
pub fn port_chain(bus: u8, ports: &[u8]) -> String {
    if ports.is_empty() {
        return format!("{bus}-0");
    }
    let chain: Vec<String> = ports.iter().map(u8::to_string).collect();
    format!("{bus}-{}", chain.join("."))
}

/// macOS location IDs: the top byte is the bus, then one nibble per hub port.
pub fn chain_from_macos_location(location: u32) -> String {
    let bus = (location >> 24) as u8;
    let mut ports = Vec::new();
    for i in 0..6 {
        let nibble = ((location >> (20 - 4 * i)) & 0xF) as u8;
        if nibble == 0 {
            break;
        }
        ports.push(nibble);
    }
    port_chain(bus, &ports)
}

/// An Apple device seen on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppleUsbDevice {
    pub chain: String,
    pub bus: u8,
    pub address: u8,
    pub product_id: u16,
    pub mode: UsbMode,
    /// The iSerialNumber string when it could be read (normal mode: the UDID without hyphen;
    /// recovery/DFU: `CPID:… ECID:… SRNM:[…]`).
    pub serial: Option<String>,
}

impl AppleUsbDevice {
    /// The ECID from a recovery/DFU serial string (`ECID:0012345678ABCDEF`).
    pub fn ecid(&self) -> Option<u64> {
        let s = self.serial.as_deref()?;
        let start = s.find("ECID:")? + 5;
        let hex: String = s[start..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        u64::from_str_radix(&hex, 16).ok()
    }
}

/// The view of the USB bus the station needs; the real one uses libusb, tests use a fixed one.
pub trait Topology: Send + Sync {
    /// Why there is no USB view, if there is none.
    fn unavailable(&self) -> Option<&str>;
    /// Every Apple device on the bus now.
    fn apple_devices(&self) -> Vec<AppleUsbDevice>;
    /// A folder whose entries come and go as devices do (watched instead of polling).
    fn changes_path(&self) -> Option<PathBuf> {
        None
    }
    /// How this machine's usbmuxd writes LocationID.
    fn location_encoding(&self) -> LocationEncoding {
        LocationEncoding::host()
    }
}

/// The bus of the machine the station runs on: Linux's sysfs when it can be read (under
/// `sysfs_root`, default `/sys`), else libusb (macOS, or a Linux without sysfs).
pub fn open_host_bus(sysfs_root: Option<&Path>) -> Box<dyn Topology> {
    if let Some(root) = sysfs_root {
        return Box::new(crate::sysfs_topology::SysfsTopology::open(root));
    }
    if cfg!(target_os = "linux") {
        let sysfs = crate::sysfs_topology::SysfsTopology::open(Path::new("/sys"));
        if sysfs.unavailable().is_none() {
            return Box::new(sysfs);
        }
    }
    Box::new(RusbTopology::open())
}

/// How usbmuxd's LocationID names a port: Linux usbmuxd gives `(bus << 16) | address`, Apple's
/// usbmuxd on macOS the IOKit location (bus in the top byte, then a nibble per port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationEncoding {
    BusAddress,
    IoKit,
}

impl LocationEncoding {
    /// The encoding of the usbmuxd this machine runs.
    pub fn host() -> Self {
        if cfg!(target_os = "macos") {
            LocationEncoding::IoKit
        } else {
            LocationEncoding::BusAddress
        }
    }
}

/// libusb through rusb, with its own context (never the global one: it panics when libusb
/// cannot start).
pub struct RusbTopology {
    /// `None` when libusb could not start.
    context: Option<rusb::Context>,
    /// Why there is no context, shown once as a note.
    unavailable: Option<String>,
}

impl RusbTopology {
    pub fn open() -> Self {
        match rusb::Context::new() {
            Ok(context) => RusbTopology {
                context: Some(context),
                unavailable: None,
            },
            Err(e) => RusbTopology {
                context: None,
                unavailable: Some(format!(
                    "libusb cannot start ({e}); running without slot mapping"
                )),
            },
        }
    }
}

impl Topology for RusbTopology {
    fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    fn changes_path(&self) -> Option<PathBuf> {
        // Linux's kernel adds a node here per device (how libusb's hotplug learns of them).
        cfg!(target_os = "linux").then(|| PathBuf::from("/dev/bus/usb"))
    }

    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        let Some(ctx) = &self.context else {
            return Vec::new();
        };
        let Ok(list) = ctx.devices() else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|d| {
                let desc = d.device_descriptor().ok()?;
                if desc.vendor_id() != APPLE_VID {
                    return None;
                }
                let mode = UsbMode::from_product_id(desc.product_id())?;
                let ports = d.port_numbers().unwrap_or_default();
                // Reading the serial needs the device opened (I/O with timeouts, racing
                // usbmuxd's claim), so it is done only for iPads usbmuxd cannot see: their
                // serial string carries the ECID. Normal-mode iPads are found by bus and
                // address (Linux) or location (macOS), which cost nothing to read.
                let serial = (mode != UsbMode::Normal)
                    .then(|| d.open().ok())
                    .flatten()
                    .and_then(|h| {
                        let lang = h
                            .read_languages(Duration::from_millis(300))
                            .ok()?
                            .into_iter()
                            .next()?;
                        h.read_serial_number_string(lang, &desc, Duration::from_millis(300))
                            .ok()
                    });
                Some(AppleUsbDevice {
                    chain: port_chain(d.bus_number(), &ports),
                    bus: d.bus_number(),
                    address: d.address(),
                    product_id: desc.product_id(),
                    mode,
                    serial,
                })
            })
            .collect()
    }
}

/// No USB view at all (tests, the simulator, or where libusb is unavailable by choice).
pub struct NoTopology(pub String);

impl Topology for NoTopology {
    fn unavailable(&self) -> Option<&str> {
        Some(&self.0)
    }
    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        Vec::new()
    }
}

/// A fixed bus, for tests.
pub struct FixedTopology(pub Vec<AppleUsbDevice>);

impl Topology for FixedTopology {
    fn unavailable(&self) -> Option<&str> {
        None
    }
    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        self.0.clone()
    }
}

/// A fixed bus as a Mac numbers it (libusb's bus and ports, and usbmuxd's LocationID, both from
/// the IOKit location), for tests of the macOS mapping on any host.
pub struct FixedMacTopology(pub Vec<AppleUsbDevice>);

impl Topology for FixedMacTopology {
    fn unavailable(&self) -> Option<&str> {
        None
    }
    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        self.0.clone()
    }
    fn location_encoding(&self) -> LocationEncoding {
        LocationEncoding::IoKit
    }
}

/// Finds the port chain of a device usbmuxd reported: by USB serial (the UDID without hyphen)
/// when readable, else from its LocationID as `encoding` says usbmuxd wrote it.
pub fn chain_for(
    topology: &dyn Topology,
    udid: &str,
    location_id: Option<u64>,
    encoding: LocationEncoding,
) -> Option<String> {
    let devices = topology.apple_devices();
    let usb_serial = udid.replace('-', "");
    if let Some(d) = devices.iter().find(|d| {
        d.mode == UsbMode::Normal
            && d.serial
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&usb_serial))
    }) {
        return Some(d.chain.clone());
    }
    let location = location_id?;
    if encoding == LocationEncoding::IoKit {
        return u32::try_from(location).ok().map(chain_from_macos_location);
    }
    let (bus, address) = ((location >> 16) as u8, (location & 0xFFFF) as u8);
    devices
        .iter()
        .find(|d| d.mode == UsbMode::Normal && d.bus == bus && d.address == address)
        .map(|d| d.chain.clone())
}

/// The slot-label file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Port chains named by the operator (`cartprep slots learn`), kept in `<state>/slots.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotLabels {
    #[serde(default)]
    pub slots: BTreeMap<String, String>,
}

impl SlotLabels {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("slots.toml")
    }

    /// Missing file: no labels. A broken file is an error (someone edited it by hand).
    pub fn load(state_dir: &Path) -> Result<Self, SlotsError> {
        let path = Self::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| SlotsError::Parse {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SlotLabels::default()),
            Err(source) => Err(SlotsError::Io { path, source }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), SlotsError> {
        let path = Self::path(state_dir);
        let text = toml::to_string(self).map_err(|e| SlotsError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        crate::private::create_private_dir(state_dir)
            .and_then(|_| crate::private::write_private(&tmp, text.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| SlotsError::Io { path, source })
    }

    /// The label for a chain, or the chain itself when it has none.
    pub fn label(&self, chain: &str) -> String {
        self.slots
            .get(chain)
            .cloned()
            .unwrap_or_else(|| chain.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(chain: &str, bus: u8, address: u8, pid: u16, serial: Option<&str>) -> AppleUsbDevice {
        AppleUsbDevice {
            chain: chain.into(),
            bus,
            address,
            product_id: pid,
            mode: UsbMode::from_product_id(pid).unwrap(),
            serial: serial.map(str::to_owned),
        }
    }

    #[test]
    fn product_ids_tell_the_mode() {
        assert_eq!(UsbMode::from_product_id(0x12AB), Some(UsbMode::Normal));
        assert_eq!(UsbMode::from_product_id(0x1281), Some(UsbMode::Recovery));
        assert_eq!(UsbMode::from_product_id(0x1227), Some(UsbMode::Dfu));
        assert_eq!(UsbMode::from_product_id(0x1234), None);
    }

    #[test]
    fn port_chains_read_like_sysfs_names() {
        assert_eq!(port_chain(1, &[2, 4, 3]), "1-2.4.3");
        assert_eq!(chain_from_macos_location(0x1432_0000), "20-3.2");
    }

    #[test]
    fn a_device_is_found_by_usb_serial_then_by_bus_and_address() {
        let bus = FixedTopology(vec![
            device("1-1.1", 1, 7, 0x12AB, Some("00008030000D543C1A30C02E")),
            device("1-1.2", 1, 9, 0x12AB, None),
        ]);
        let linux = LocationEncoding::BusAddress;
        assert_eq!(
            chain_for(&bus, "00008030-000D543C1A30C02E", None, linux).as_deref(),
            Some("1-1.1")
        );
        assert_eq!(
            chain_for(&bus, "unknown", Some((1 << 16) | 9), linux).as_deref(),
            Some("1-1.2")
        );
        assert_eq!(chain_for(&bus, "unknown", Some((2 << 16) | 9), linux), None);
    }

    #[test]
    fn a_macos_location_id_is_already_the_port_chain() {
        // libusb on macOS numbers the bus and ports from the same IOKit location, so a chain
        // read from the bus and one decoded from usbmuxd's LocationID agree.
        let bus = FixedTopology(vec![device("20-1.3", 20, 5, 0x12AB, None)]);
        let cases = [
            (0x1413_0000, Some("20-1.3")),
            (0x1400_0000, Some("20-0")),
            (0x0112_3000, Some("1-1.2.3")),
            (0x1_0000_0000, None),
        ];
        for (location, want) in cases {
            assert_eq!(
                chain_for(&bus, "unknown", Some(location), LocationEncoding::IoKit).as_deref(),
                want,
                "location {location:#x}"
            );
        }
    }

    #[test]
    fn recovery_serial_strings_give_the_ecid() {
        let d = device(
            "1-3",
            1,
            4,
            0x1281,
            Some("CPID:8030 CPRV:11 BDID:18 ECID:000D543C1A30C02E IBFL:3C SRNM:[DMPX]"),
        );
        assert_eq!(d.ecid(), Some(0x000D_543C_1A30_C02E));
    }

    #[test]
    fn labels_round_trip_and_default_to_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SlotLabels::load(dir.path()).unwrap(), SlotLabels::default());
        let mut labels = SlotLabels::default();
        labels.slots.insert("1-2.1".into(), "A1".into());
        labels.save(dir.path()).unwrap();
        let again = SlotLabels::load(dir.path()).unwrap();
        assert_eq!(again.label("1-2.1"), "A1");
        assert_eq!(again.label("1-2.2"), "1-2.2");
        std::fs::write(SlotLabels::path(dir.path()), "slots = 3").unwrap();
        assert!(SlotLabels::load(dir.path()).is_err());
    }

    #[test]
    fn libusb_failing_to_start_is_not_a_panic() {
        // Whatever this machine has, opening must not panic; without /dev/bus/usb it says why.
        let t = RusbTopology::open();
        if let Some(why) = t.unavailable() {
            assert!(why.contains("without slot mapping"));
            assert!(t.apple_devices().is_empty());
        }
    }
}
