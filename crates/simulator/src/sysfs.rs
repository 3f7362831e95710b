//! The cart's USB bus written as Linux's sysfs lays it out (kept current by `Cart::write_sysfs_to`) (`<root>/bus/usb/devices/<chain>/`
//! with `idVendor`, `idProduct`, `busnum`, `devnum`, `devpath`, `serial`…), so a station reading
//! a sysfs tree sees the virtual cart the way it sees a real one: iPads in normal mode with their
//! UDID as serial, iPads in recovery with iBoot's serial string, and the hubs between.
//!
//! The attribute names and formats are the kernel's (docs/fidelity.md §14): hex IDs without
//! `0x`, decimal bus and device numbers, the port chain after the bus as `devpath`.

use std::path::Path;

use crate::bus::{self, BusDevice};

/// Where device folders go under the root.
pub const DEVICES: &str = "bus/usb/devices";

/// Linux Foundation's root hub IDs, as every Linux host shows its USB 2 root hubs.
const ROOT_HUB: (&str, &str) = ("1d6b", "0002");
/// A common 7-port USB 2 hub chip (Genesys Logic GL850G), as cart hubs carry.
const HUB: (&str, &str) = ("05e3", "0608");

/// One folder: its name and its attribute files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Folder {
    name: String,
    attributes: Vec<(&'static str, String)>,
}

/// The folders for the bus as it is now: the root hub, every hub above an Apple device, and
/// the Apple devices.
fn folders(devices: &[BusDevice]) -> Vec<Folder> {
    // Bus 1 is always there (the cart's own); another bus once an iPad sits on it.
    let mut buses: Vec<u8> = devices.iter().map(|d| d.port.bus).collect();
    buses.push(bus::BUS);
    buses.sort_unstable();
    buses.dedup();
    let mut out: Vec<Folder> = buses
        .iter()
        .map(|b| Folder {
            name: format!("usb{b}"),
            attributes: vec![
                ("idVendor", ROOT_HUB.0.into()),
                ("idProduct", ROOT_HUB.1.into()),
                ("busnum", b.to_string()),
                ("devnum", "1".into()),
                ("devpath", "0".into()),
            ],
        })
        .collect();
    let mut hubs: Vec<(u8, Vec<u8>)> = Vec::new();
    for d in devices {
        for depth in 1..d.port.ports.len() {
            hubs.push((d.port.bus, d.port.ports[..depth].to_vec()));
        }
    }
    hubs.sort();
    hubs.dedup();
    for (b, hub) in hubs {
        let chain = bus::chain(b, &hub);
        out.push(Folder {
            attributes: vec![
                ("idVendor", HUB.0.into()),
                ("idProduct", HUB.1.into()),
                ("busnum", b.to_string()),
                ("devpath", devpath(&chain)),
                ("bDeviceClass", "09".into()),
            ],
            name: chain,
        });
    }
    for d in devices {
        let product = if d.recovery {
            "Apple Mobile Device (Recovery Mode)"
        } else {
            "iPad"
        };
        out.push(Folder {
            name: d.port.chain.clone(),
            attributes: vec![
                ("idVendor", "05ac".into()),
                ("idProduct", format!("{:04x}", d.product_id)),
                ("busnum", d.port.bus.to_string()),
                ("devnum", d.port.address.to_string()),
                ("devpath", devpath(&d.port.chain)),
                ("manufacturer", "Apple Inc.".into()),
                ("product", product.into()),
                ("serial", d.serial.clone()),
                ("speed", "480".into()),
            ],
        });
    }
    out
}

fn devpath(chain: &str) -> String {
    chain
        .split_once('-')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}

/// Makes `<root>/bus/usb/devices` hold exactly `devices` (and their hubs). Each folder is built
/// beside the others under a dot-name and renamed into place, so a reader never sees one half
/// written; folders that did not change are left alone.
pub fn write(root: &Path, devices: &[BusDevice]) -> std::io::Result<()> {
    let dir = root.join(DEVICES);
    std::fs::create_dir_all(&dir)?;
    let wanted = folders(devices);
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.iter().any(|f| f.name == name) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    for folder in &wanted {
        let path = dir.join(&folder.name);
        if read_folder(&path) == folder.attributes {
            continue;
        }
        let staging = dir.join(format!(".{}.new", folder.name));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging)?;
        for (name, value) in &folder.attributes {
            std::fs::write(staging.join(name), format!("{value}\n"))?;
        }
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::rename(&staging, &path)?;
    }
    Ok(())
}

/// The attributes a folder holds now, in the order `folders` writes them.
fn read_folder(path: &Path) -> Vec<(&'static str, String)> {
    const NAMES: [&str; 10] = [
        "idVendor",
        "idProduct",
        "busnum",
        "devnum",
        "devpath",
        "bDeviceClass",
        "manufacturer",
        "product",
        "serial",
        "speed",
    ];
    let mut out = Vec::new();
    for name in NAMES {
        if let Ok(text) = std::fs::read_to_string(path.join(name)) {
            out.push((name, text.trim_end_matches('\n').to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(levels: u8, slot: u32, recovery: bool) -> BusDevice {
        let port = bus::port_in(bus::HubLevels::new(levels).unwrap(), slot).unwrap();
        BusDevice {
            port,
            product_id: if recovery {
                bus::RECOVERY_PRODUCT_ID
            } else {
                0x12ab
            },
            serial: if recovery {
                "CPID:8030 CPRV:11 ECID:000D543C1A30C02E SRNM:[DMPX]".into()
            } else {
                "00008030000D543C1A30C02E".into()
            },
            recovery,
        }
    }

    fn names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(DEVICES))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_tree_holds_the_root_hub_the_cart_hubs_and_each_ipad() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &[device(2, 1, false), device(2, 9, true)]).unwrap();
        assert_eq!(
            names(root.path()),
            ["1-1", "1-1.1", "1-1.1.1", "1-1.2", "1-1.2.2", "usb1"]
        );
        let ipad = root.path().join(DEVICES).join("1-1.1.1");
        let read = |name: &str| std::fs::read_to_string(ipad.join(name)).unwrap();
        assert_eq!(read("idVendor"), "05ac\n");
        assert_eq!(read("idProduct"), "12ab\n");
        assert_eq!(read("devnum"), "10\n");
        assert_eq!(read("devpath"), "1.1.1\n");
        assert_eq!(read("serial"), "00008030000D543C1A30C02E\n");
        let recovery = root.path().join(DEVICES).join("1-1.2.2");
        assert_eq!(
            std::fs::read_to_string(recovery.join("idProduct")).unwrap(),
            "1281\n"
        );
    }

    #[test]
    fn an_ipad_past_the_first_bus_has_a_root_hub_and_cart_hub_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        let last = bus::MAX_SLOTS + 1;
        write(root.path(), &[device(1, 1, false), device(1, last, false)]).unwrap();
        assert_eq!(
            names(root.path()),
            ["1-1", "1-1.1", "2-1", "2-1.1", "usb1", "usb2"]
        );
        let busnum = root.path().join(DEVICES).join("2-1.1/busnum");
        assert_eq!(std::fs::read_to_string(busnum).unwrap(), "2\n");
    }

    #[test]
    fn a_device_that_left_is_removed_and_one_that_stayed_is_not_rewritten() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &[device(1, 1, false), device(1, 2, false)]).unwrap();
        let kept = root.path().join(DEVICES).join("1-1.1/serial");
        let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(root.path(), &[device(1, 1, false)]).unwrap();
        assert_eq!(names(root.path()), ["1-1", "1-1.1", "usb1"]);
        assert_eq!(
            std::fs::metadata(&kept).unwrap().modified().unwrap(),
            before,
            "an unchanged device keeps its files"
        );
        write(root.path(), &[device(1, 1, true)]).unwrap();
        let pid = root.path().join(DEVICES).join("1-1.1/idProduct");
        assert_eq!(std::fs::read_to_string(pid).unwrap(), "1281\n");
    }
}
