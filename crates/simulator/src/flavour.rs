//! Which usbmuxd the simulator imitates: Linux's (libimobiledevice usbmuxd) or Apple's on macOS.
//! Each difference is a pure function here, with its evidence in `docs/fidelity.md` §13.

use std::net::Ipv4Addr;

use serde::Deserialize;
use usbmux::DeviceProperties;

use crate::bus::UsbPort;
use crate::catalogue::Identity;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// libimobiledevice's usbmuxd (`docs/fidelity.md` §1).
    #[default]
    Linux,
    /// Apple's usbmuxd on macOS (`docs/fidelity.md` §13).
    Macos,
}

impl std::str::FromStr for Flavour {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linux" => Ok(Flavour::Linux),
            "macos" => Ok(Flavour::Macos),
            other => Err(format!("unknown flavour {other:?} (linux or macos)")),
        }
    }
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Linux => "linux",
            Flavour::Macos => "macos",
        })
    }
}

/// Hub ports IOKit can write in one nibble of a location ID (`bus::UsbPort::macos_location_id`).
pub const MACOS_MAX_HUB_PORT: u32 = 15;

impl Flavour {
    /// Whether devices reached over Wi-Fi are listed at all: Linux usbmuxd has no network
    /// support (libimobiledevice/usbmuxd#173, libimobiledevice/libimobiledevice#1335).
    pub fn lists_network_devices(self) -> bool {
        self == Flavour::Macos
    }

    /// Whether binary-protocol (version 0) messages are served. Apple's usbmuxd is reported to
    /// disconnect such clients (ST-readme); the simulator closes the connection.
    pub fn serves_binary_protocol(self) -> bool {
        self == Flavour::Linux
    }

    /// Whether a plist request must be XML. Linux usbmuxd reads requests with `plist_from_xml`
    /// (UMX-client); for macOS nothing shows a binary request accepted, so it is refused too.
    /// The Linux flavour still accepts binary plists (`docs/fidelity.md` §10 item 20).
    pub fn xml_requests_only(self) -> bool {
        self == Flavour::Macos
    }

    /// The properties of an iPad on a USB cable, as this usbmuxd lists them.
    pub fn usb_properties(
        self,
        device_id: u32,
        identity: &Identity,
        port: &UsbPort,
        product_id: u16,
    ) -> DeviceProperties {
        let mut p = DeviceProperties::usb(device_id, identity.udid.clone());
        p.product_id = Some(u64::from(product_id));
        match self {
            Flavour::Linux => p.location_id = Some(port.location_id()),
            Flavour::Macos => {
                p.location_id = port.macos_location_id().map(u64::from);
                p.usb_serial_number = Some(identity.usb_serial());
            }
        }
        p
    }

    /// Macos only: the properties of an iPad reached over Wi-Fi (`None` on Linux).
    pub fn network_properties(
        self,
        device_id: u32,
        identity: &Identity,
        interface_index: u64,
    ) -> Option<DeviceProperties> {
        if !self.lists_network_devices() {
            return None;
        }
        let mut p = DeviceProperties::usb(device_id, identity.udid.clone());
        p.connection_type = Some("Network".into());
        p.connection_speed = None;
        p.extra.insert(
            "EscapedFullServiceName".into(),
            service_name(&identity.wifi_address).into(),
        );
        p.extra
            .insert("InterfaceIndex".into(), interface_index.into());
        p.extra.insert(
            "NetworkAddress".into(),
            plist::Value::Data(bsd_sockaddr_in(lan_address(&identity.wifi_address))),
        );
        Some(p)
    }

    /// The `PairRecordData` bytes a ReadPairRecord answers, from the bytes stored. Linux
    /// returns the file's bytes; macOS's usbmuxd serves binary plists (fixture in
    /// `docs/fidelity.md` §13), so the record is re-encoded as one.
    pub fn served_pair_record(self, stored: Vec<u8>) -> Vec<u8> {
        if self == Flavour::Linux {
            return stored;
        }
        let Ok(dict) = crate::untrusted::dictionary(&stored) else {
            return stored;
        };
        let mut out = Vec::new();
        match plist::to_writer_binary(&mut out, &dict) {
            Ok(()) => out,
            Err(_) => stored,
        }
    }
}

/// The Bonjour name of an iPad's Wi-Fi sync service: `<Wi-Fi MAC>@<IPv6 link-local>.
/// _apple-mobdev2._tcp.local.`, as lockdownd's `BonjourFullServiceName` shows it
/// (libimobiledevice/libimobiledevice#728, #919). The link-local address is the MAC's EUI-64.
pub fn service_name(wifi_mac: &str) -> String {
    let b = mac_bytes(wifi_mac);
    let groups = [
        u16::from_be_bytes([b[0] ^ 0x02, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
    ];
    let tail: Vec<String> = groups.iter().map(|g| format!("{g:x}")).collect();
    format!(
        "{}@fe80::{}._apple-mobdev2._tcp.local.",
        wifi_mac.to_ascii_lowercase(),
        tail.join(":")
    )
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}

/// An address on the school's network, the same for the same iPad.
fn lan_address(wifi_mac: &str) -> Ipv4Addr {
    let b = mac_bytes(wifi_mac);
    Ipv4Addr::new(192, 168, b[4], b[5].clamp(2, 254))
}

/// A `struct sockaddr_in` in BSD layout, as `NetworkAddress` carries it: `sa_len` 16, family
/// `AF_INET` (2), port 0, the address, eight zero bytes.
pub fn bsd_sockaddr_in(ip: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![16, 2, 0, 0];
    b.extend_from_slice(&ip.octets());
    b.extend_from_slice(&[0; 8]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macos_location_ids_put_one_hub_port_in_each_nibble() {
        for (slot, want) in [
            (1, Some(0x0111_0000)),
            (2, Some(0x0112_0000)),
            (15, Some(0x011F_0000)),
            (16, None),
        ] {
            let port = crate::bus::port(slot).expect("a slot on the bus");
            assert_eq!(port.macos_location_id(), want, "slot {slot}");
        }
    }

    #[test]
    fn the_service_name_is_the_mac_at_its_eui64_link_local_address() {
        // The pair in libimobiledevice/libimobiledevice#728.
        assert_eq!(
            service_name("18:f1:d8:df:17:9f"),
            "18:f1:d8:df:17:9f@fe80::1af1:d8ff:fedf:179f._apple-mobdev2._tcp.local."
        );
    }

    #[test]
    fn network_addresses_are_bsd_sockaddrs_with_the_ipv4_address_at_bytes_4_to_8() {
        let b = bsd_sockaddr_in(Ipv4Addr::new(192, 168, 1, 30));
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..2], &[16, 2]);
        assert_eq!(&b[4..8], &[192, 168, 1, 30]);
    }

    #[test]
    fn only_macos_lists_network_devices_and_refuses_binary_clients() {
        let identity = crate::catalogue::Identity::generate(&crate::catalogue::MODELS[0], 1);
        assert!(Flavour::Linux.network_properties(9, &identity, 4).is_none());
        assert!(Flavour::Linux.serves_binary_protocol());
        let net = Flavour::Macos
            .network_properties(9, &identity, 4)
            .expect("listed on macOS");
        assert_eq!(net.connection_type.as_deref(), Some("Network"));
        assert!(!Flavour::Macos.serves_binary_protocol());
        assert_eq!("macos".parse(), Ok(Flavour::Macos));
        assert!("windows".parse::<Flavour>().is_err());
    }

    #[test]
    fn macos_serves_pair_records_as_binary_plists_with_the_same_dictionary() {
        let mut d = plist::Dictionary::new();
        d.insert(
            "HostID".into(),
            "3B32AC55-3638-838A-2BBD-77B5E60E3913".into(),
        );
        let mut xml = Vec::new();
        plist::to_writer_xml(&mut xml, &d).unwrap();
        assert_eq!(Flavour::Linux.served_pair_record(xml.clone()), xml);
        let served = Flavour::Macos.served_pair_record(xml);
        assert!(served.starts_with(b"bplist00"));
        assert_eq!(crate::untrusted::dictionary(&served).unwrap(), d);
    }
}
