//! Real iPad models and the iPadOS releases they ran, and identities in the real formats.
//!
//! Values come from public device tables: ProductType, HardwareModel (board), ChipID of the SoC,
//! and ProductVersion/BuildVersion pairs Apple shipped. Only Wi-Fi models: a school cart has no
//! cellular iPads, and those would need telephony keys.

use crate::rng::Seeded;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub version: &'static str,
    pub build: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    pub product_type: &'static str,
    pub marketing_name: &'static str,
    pub hardware_model: &'static str,
    pub hardware_platform: &'static str,
    pub chip_id: u32,
    pub board_id: u32,
    pub cpu_architecture: &'static str,
    /// Model numbers (the part before the region) of Wi-Fi configurations.
    pub model_numbers: &'static [&'static str],
    /// USB idProduct the iPad enumerates with in its normal mode.
    pub usb_product_id: u16,
    pub releases: &'static [Release],
}

impl Model {
    /// A12 and later use the `%08X-%016X` UDID; older SoCs a 40-hex-digit one.
    pub fn has_modern_udid(&self) -> bool {
        self.chip_id >= 0x8020
    }

    pub fn release(&self, version: &str) -> Option<Release> {
        self.releases.iter().copied().find(|r| r.version == version)
    }
}

const R15_7: Release = Release {
    version: "15.7",
    build: "19H12",
};
const R16_3_1: Release = Release {
    version: "16.3.1",
    build: "20D67",
};
const R16_7_10: Release = Release {
    version: "16.7.10",
    build: "20H350",
};
const R17_5_1: Release = Release {
    version: "17.5.1",
    build: "21F90",
};
const R17_6_1: Release = Release {
    version: "17.6.1",
    build: "21G93",
};
const R18_3_2: Release = Release {
    version: "18.3.2",
    build: "22D82",
};
const R18_5: Release = Release {
    version: "18.5",
    build: "22F76",
};

pub const MODELS: &[Model] = &[
    Model {
        product_type: "iPad12,1",
        marketing_name: "iPad (9th generation)",
        hardware_model: "J181AP",
        hardware_platform: "t8030",
        chip_id: 0x8030,
        board_id: 24,
        cpu_architecture: "arm64e",
        model_numbers: &["MK2K3", "MK2L3"],
        usb_product_id: 0x12AB,
        releases: &[R15_7, R16_3_1, R17_6_1, R18_5],
    },
    Model {
        product_type: "iPad13,18",
        marketing_name: "iPad (10th generation)",
        hardware_model: "J271AP",
        hardware_platform: "t8101",
        chip_id: 0x8101,
        board_id: 12,
        cpu_architecture: "arm64e",
        model_numbers: &["MPQ03", "MPQ13"],
        usb_product_id: 0x12AB,
        releases: &[R16_3_1, R17_5_1, R18_3_2, R18_5],
    },
    Model {
        product_type: "iPad7,11",
        marketing_name: "iPad (7th generation)",
        hardware_model: "J171AP",
        hardware_platform: "t8010",
        chip_id: 0x8010,
        board_id: 20,
        cpu_architecture: "arm64",
        model_numbers: &["MW742", "MW752"],
        usb_product_id: 0x12AB,
        releases: &[R15_7, R16_7_10, R17_6_1],
    },
    Model {
        product_type: "iPad11,6",
        marketing_name: "iPad (8th generation)",
        hardware_model: "J171aAP",
        hardware_platform: "t8020",
        chip_id: 0x8020,
        board_id: 22,
        cpu_architecture: "arm64e",
        model_numbers: &["MYL92", "MYLA2"],
        usb_product_id: 0x12AB,
        releases: &[R15_7, R16_7_10, R17_6_1, R18_3_2],
    },
    Model {
        product_type: "iPad13,16",
        marketing_name: "iPad Air (5th generation)",
        hardware_model: "J407AP",
        hardware_platform: "t8103",
        chip_id: 0x8103,
        board_id: 10,
        cpu_architecture: "arm64e",
        model_numbers: &["MM9C3", "MM9D3"],
        usb_product_id: 0x12AB,
        releases: &[R16_3_1, R17_6_1, R18_5],
    },
    Model {
        product_type: "iPad14,1",
        marketing_name: "iPad mini (6th generation)",
        hardware_model: "J310AP",
        hardware_platform: "t8110",
        chip_id: 0x8110,
        board_id: 8,
        cpu_architecture: "arm64e",
        model_numbers: &["MK7M3", "MK7P3"],
        usb_product_id: 0x12AB,
        releases: &[R15_7, R17_5_1, R18_3_2],
    },
];

pub fn model(product_type: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.product_type == product_type)
}

/// The identity of one iPad: what is burnt in at the factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub udid: String,
    pub serial_number: String,
    pub ecid: u64,
    pub die_id: u64,
    pub wifi_address: String,
    pub bluetooth_address: String,
    pub model_number: String,
    pub mlb_serial_number: String,
}

const SERIAL_ALPHABET: &[u8] = b"0123456789BCDFGHJKLMNPQRSTVWXYZ";
// Factory/year/week characters seen in pre-2021 12-character serials.
const LEGACY_PREFIXES: &[&str] = &["DMP", "DMQ", "F9F", "GG7", "DLX"];

fn serial_chars(rng: &mut Seeded, n: usize) -> String {
    (0..n).map(|_| *rng.pick(SERIAL_ALPHABET) as char).collect()
}

fn mac(rng: &mut Seeded) -> [u8; 6] {
    let v = rng.next_u64().to_be_bytes();
    // Apple OUI-like prefix, locally unique tail.
    [0xf0, 0x18, 0x98, v[0], v[1], v[2]]
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Identity {
    /// A plausible identity for `model`, the same for the same seed.
    pub fn generate(model: &Model, seed: u64) -> Self {
        let mut rng = Seeded::new(seed ^ 0x00CA_A7FE_ED00 ^ u64::from(model.chip_id) << 32);
        let ecid = rng.next_u64() & 0x000F_FFFF_FFFF_FFFF;
        let udid = if model.has_modern_udid() {
            format!("{:08X}-{:016X}", model.chip_id, ecid)
        } else {
            (0..5)
                .map(|_| format!("{:08x}", rng.next_u64() as u32))
                .collect()
        };
        // Apple switched to 10-character randomised serials in 2021; older iPads keep 12.
        let serial_number = if model.chip_id >= 0x8101 || model.chip_id == 0x8030 {
            serial_chars(&mut rng, 10)
        } else {
            format!("{}{}", rng.pick(LEGACY_PREFIXES), serial_chars(&mut rng, 9))
        };
        let wifi = mac(&mut rng);
        let mut bt = wifi;
        bt[5] = bt[5].wrapping_add(1);
        Identity {
            udid,
            serial_number,
            ecid,
            die_id: ecid,
            wifi_address: fmt_mac(wifi),
            bluetooth_address: fmt_mac(bt),
            model_number: rng.pick(model.model_numbers).to_string(),
            mlb_serial_number: format!("C{}", serial_chars(&mut rng, 16)),
        }
    }

    /// The USB iSerialNumber (the UDID without hyphen), macOS's `USBSerialNumber`.
    pub fn usb_serial(&self) -> String {
        self.udid.replace('-', "")
    }
}
