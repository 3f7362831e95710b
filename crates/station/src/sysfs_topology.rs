//! The USB bus as Linux's sysfs shows it (`/sys/bus/usb/devices`): one folder per device, named
//! by its port chain (`1-1.4`), holding `idVendor`, `idProduct`, `busnum`, `devnum` and, when the
//! device has one, `serial` (docs/protocol.md §8).
//!
//! Reading sysfs needs no permission on the device nodes and no I/O to the devices, so the
//! station sees every iPad's port and serial — recovery and DFU iPads included — as an
//! unprivileged user, where libusb would have to open each device to read its serial. The root
//! is a parameter (`/sys` on a Linux host) so a bus written elsewhere, such as a container's
//! bind-mounted `/sys`, is read the same way.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::slots::{APPLE_VID, AppleUsbDevice, Topology, UsbMode};

/// Where the device folders are, under the sysfs root.
const DEVICES: &str = "bus/usb/devices";

/// The most bytes read from one attribute file: they hold a number or a short string.
const ATTRIBUTE_LIMIT: u64 = 256;

/// The most device folders looked at in one scan (a bus has at most 127 devices per
/// controller; a machine has a handful of controllers).
const DEVICE_LIMIT: usize = 4096;

/// Where Linux's kernel adds and removes a node per USB device; inotify does not report
/// changes under the real sysfs, so the station watches this instead.
const DEVICE_NODES: &str = "/dev/bus/usb";

pub struct SysfsTopology {
    root: PathBuf,
    /// Why the tree cannot be read, if it cannot.
    unavailable: Option<String>,
}

impl SysfsTopology {
    /// Reads the bus under `root` (`/sys` on a Linux host).
    pub fn open(root: &Path) -> SysfsTopology {
        let devices = root.join(DEVICES);
        let unavailable = match std::fs::read_dir(&devices) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "the USB bus cannot be read at {} ({e}); running without slot mapping",
                devices.display()
            )),
        };
        SysfsTopology {
            root: root.to_owned(),
            unavailable,
        }
    }

    fn devices_dir(&self) -> PathBuf {
        self.root.join(DEVICES)
    }
}

impl Topology for SysfsTopology {
    fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        let Ok(entries) = std::fs::read_dir(self.devices_dir()) else {
            return Vec::new();
        };
        let mut found: Vec<AppleUsbDevice> = entries
            .take(DEVICE_LIMIT)
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                read_device(&entry.path(), &name)
            })
            .collect();
        found.sort_by(|a, b| a.chain.cmp(&b.chain));
        found
    }

    fn changes_path(&self) -> Option<PathBuf> {
        // The real sysfs raises no inotify events; a tree written by a program does.
        if self.root == Path::new("/sys") {
            Some(PathBuf::from(DEVICE_NODES))
        } else {
            Some(self.devices_dir())
        }
    }
}

/// One device folder, when it is an Apple device in a mode the station knows. Interfaces
/// (`1-1.4:1.0`) and root hubs (`usb1`) are not devices with a port chain and are skipped.
fn read_device(dir: &Path, name: &str) -> Option<AppleUsbDevice> {
    let (bus, ports) = parse_chain(name)?;
    if hex_attribute(dir, "idVendor")? != APPLE_VID {
        return None;
    }
    let product_id = hex_attribute(dir, "idProduct")?;
    let mode = UsbMode::from_product_id(product_id)?;
    let busnum: u8 = attribute(dir, "busnum")?.parse().ok()?;
    if busnum != bus || ports.is_empty() {
        return None;
    }
    Some(AppleUsbDevice {
        chain: name.to_owned(),
        bus,
        address: attribute(dir, "devnum")?.parse().ok()?,
        product_id,
        mode,
        serial: attribute(dir, "serial").filter(|s| !s.is_empty()),
    })
}

/// `1-1.4` → bus 1, ports [1, 4]; anything else (`usb1`, `1-1.4:1.0`) → `None`.
fn parse_chain(name: &str) -> Option<(u8, Vec<u8>)> {
    let (bus, rest) = name.split_once('-')?;
    let bus = bus.parse().ok()?;
    let ports = rest
        .split('.')
        .map(|p| p.parse::<u8>().ok().filter(|p| *p > 0))
        .collect::<Option<Vec<u8>>>()?;
    Some((bus, ports))
}

fn attribute(dir: &Path, name: &str) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(dir.join(name))
        .ok()?
        .take(ATTRIBUTE_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_owned())
}

fn hex_attribute(dir: &Path, name: &str) -> Option<u16> {
    u16::from_str_radix(&attribute(dir, name)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes one device folder the way the kernel lays it out.
    fn device(root: &Path, name: &str, attributes: &[(&str, &str)]) {
        let dir = root.join(DEVICES).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (key, value) in attributes {
            std::fs::write(dir.join(key), format!("{value}\n")).unwrap();
        }
    }

    /// A folder name and the bus and ports it names, if it names a device.
    type ChainCase = (&'static str, Option<(u8, &'static [u8])>);

    #[test]
    fn chains_are_device_folders_only() {
        let cases: &[ChainCase] = &[
            ("1-1", Some((1, &[1]))),
            ("1-1.4", Some((1, &[1, 4]))),
            ("3-2.1.7", Some((3, &[2, 1, 7]))),
            ("usb1", None),
            ("1-1.4:1.0", None),
            ("1-", None),
            ("1-0", None),
            ("1-1..2", None),
            ("x-1", None),
        ];
        for (name, want) in cases {
            let got = parse_chain(name);
            assert_eq!(
                got,
                want.map(|(b, p)| (b, p.to_vec())),
                "{name}: parsed as {got:?}"
            );
        }
    }

    #[test]
    fn apple_devices_are_read_with_their_chain_mode_and_serial() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        device(r, "usb1", &[("idVendor", "1d6b"), ("idProduct", "0002")]);
        device(
            r,
            "1-1",
            &[("idVendor", "05e3"), ("idProduct", "0610"), ("busnum", "1")],
        );
        let ipad = [
            ("idVendor", "05ac"),
            ("idProduct", "12ab"),
            ("busnum", "1"),
            ("devnum", "9"),
            ("serial", "00008030000D543C1A30C02E"),
        ];
        device(r, "1-1.4", &ipad);
        device(r, "1-1.4:1.0", &ipad);
        device(
            r,
            "1-1.2.3",
            &[
                ("idVendor", "05ac"),
                ("idProduct", "1281"),
                ("busnum", "1"),
                ("devnum", "12"),
                (
                    "serial",
                    "CPID:8030 CPRV:11 ECID:000D543C1A30C02E SRNM:[DMPX]",
                ),
            ],
        );
        // An Apple keyboard: Apple's vendor ID, not an iPad's product ID.
        device(
            r,
            "1-2",
            &[
                ("idVendor", "05ac"),
                ("idProduct", "024f"),
                ("busnum", "1"),
                ("devnum", "4"),
            ],
        );

        let bus = SysfsTopology::open(r);
        assert_eq!(bus.unavailable(), None);
        let found = bus.apple_devices();
        let summary: Vec<(&str, u8, UsbMode, Option<&str>)> = found
            .iter()
            .map(|d| (d.chain.as_str(), d.address, d.mode, d.serial.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "1-1.2.3",
                    12,
                    UsbMode::Recovery,
                    Some("CPID:8030 CPRV:11 ECID:000D543C1A30C02E SRNM:[DMPX]")
                ),
                (
                    "1-1.4",
                    9,
                    UsbMode::Normal,
                    Some("00008030000D543C1A30C02E")
                ),
            ]
        );
        assert_eq!(found[0].ecid(), Some(0x000D_543C_1A30_C02E));
    }

    #[test]
    fn a_device_with_broken_attributes_is_skipped_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        device(r, "1-1.1", &[("idVendor", "05ac"), ("idProduct", "zz")]);
        device(r, "1-1.2", &[("idVendor", "05ac"), ("idProduct", "12ab")]);
        device(
            r,
            "1-1.3",
            &[
                ("idVendor", "05ac"),
                ("idProduct", "12ab"),
                ("busnum", "2"),
                ("devnum", "5"),
            ],
        );
        let long = "9".repeat(10_000);
        device(
            r,
            "1-1.5",
            &[
                ("idVendor", "05ac"),
                ("idProduct", "12ab"),
                ("busnum", "1"),
                ("devnum", &long),
            ],
        );
        assert!(SysfsTopology::open(r).apple_devices().is_empty());
    }

    #[test]
    fn a_missing_tree_says_why_and_sees_nothing() {
        let root = tempfile::tempdir().unwrap();
        let bus = SysfsTopology::open(&root.path().join("nothing"));
        let why = bus.unavailable().expect("a reason");
        assert!(why.contains("without slot mapping"), "{why}");
        assert!(bus.apple_devices().is_empty());
    }
}
