//! The virtual cart's USB bus: one hub on port 1 of bus 1, the iPad of slot k in hub port k.
//!
//! This is the one place that says where a slot sits. The simulator reports each iPad's
//! LocationID from it, and whoever draws the cart's bus for the station (the demo, the
//! end-to-end tests) reads the same layout instead of writing the rule again.

/// The bus the cart's hub hangs off.
pub const BUS: u8 = 1;

/// The root port of that bus the hub is plugged into.
pub const HUB_PORT: u8 = 1;

/// The most slots the bus has room for: USB addresses are 7 bits (at most 127), and addresses
/// 1 and 2 belong to the root hub and the cart's hub.
pub const MAX_SLOTS: u32 = 125;

/// Where a slot's iPad sits on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbPort {
    /// 1-based position on the cart.
    pub slot: u32,
    /// Port chain as Linux sysfs names it (`1-1.3`: bus, then each hub port).
    pub chain: String,
    pub bus: u8,
    /// Device address on the bus (after the root hub and the cart's hub).
    pub address: u8,
}

impl UsbPort {
    /// The LocationID usbmuxd reports, in Linux usbmuxd's `(bus << 16) | address` form.
    pub fn location_id(&self) -> u64 {
        (u64::from(self.bus) << 16) | u64::from(self.address)
    }
}

/// The port of `slot`; `None` for slot 0 or past [`MAX_SLOTS`].
pub fn port(slot: u32) -> Option<UsbPort> {
    if !(1..=MAX_SLOTS).contains(&slot) {
        return None;
    }
    Some(UsbPort {
        slot,
        chain: port_chain(slot),
        bus: BUS,
        address: u8::try_from(slot + 2).ok()?,
    })
}

/// The port chain of `slot` (`1-1.k`), the key of the station's `[slots]` table.
pub fn port_chain(slot: u32) -> String {
    format!("{BUS}-{HUB_PORT}.{slot}")
}

/// The USB product ID of any device in recovery mode (Apple's iBoot "Recovery Mode" IDs are
/// 0x1280–0x1283; 0x1281 is the one iPads of this catalogue show).
pub const RECOVERY_PRODUCT_ID: u16 = 0x1281;

/// An Apple device on the cart's bus as the host's USB stack sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusDevice {
    pub port: UsbPort,
    pub product_id: u16,
    /// The iSerialNumber string: the UDID without hyphen in normal mode; in recovery mode
    /// iBoot's `CPID:… CPRV:… ECID:… SRNM:[…]` form.
    pub serial: String,
    pub recovery: bool,
}

/// Every plugged iPad and every iPad in recovery mode, as the bus shows them now (an iPad
/// unplugged from the cart is on neither).
pub fn devices(cart: &crate::Cart) -> Vec<BusDevice> {
    cart.slots()
        .into_iter()
        .filter_map(|(ipad, device_id)| {
            let recovery = ipad.state().in_recovery;
            if device_id.is_none() && !recovery {
                return None;
            }
            let spec = &ipad.spec;
            let (product_id, serial) = if recovery {
                (
                    RECOVERY_PRODUCT_ID,
                    format!(
                        "CPID:{:04X} CPRV:11 ECID:{:016X} SRNM:[{}]",
                        spec.model.chip_id, spec.identity.ecid, spec.identity.serial_number
                    ),
                )
            } else {
                (spec.model.usb_product_id, spec.identity.usb_serial())
            };
            Some(BusDevice {
                port: spec.usb.clone(),
                product_id,
                serial,
                recovery,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_k_is_hub_port_k_on_bus_1() {
        let cases = [
            // slot, chain, address, LocationID
            (1, "1-1.1", 3, 0x1_0003),
            (2, "1-1.2", 4, 0x1_0004),
            (7, "1-1.7", 9, 0x1_0009),
            (MAX_SLOTS, "1-1.125", 127, 0x1_007F),
        ];
        for (slot, chain, address, location_id) in cases {
            let p = port(slot).expect("a slot on the bus");
            assert_eq!(p.slot, slot);
            assert_eq!(p.chain, chain, "slot {slot}");
            assert_eq!(port_chain(slot), chain, "slot {slot}");
            assert_eq!(p.bus, 1, "slot {slot}");
            assert_eq!(p.address, address, "slot {slot}");
            assert_eq!(p.location_id(), location_id, "slot {slot}");
        }
    }

    #[test]
    fn there_is_no_slot_0_and_none_past_the_last_address() {
        assert_eq!(port(0), None);
        assert_eq!(port(MAX_SLOTS + 1), None);
        assert_eq!(port(u32::MAX), None);
    }
}
