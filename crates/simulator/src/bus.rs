//! The virtual cart's USB bus: one hub on port 1 of bus 1 and, with more hub levels, 7-port
//! hubs under it (`1-1.k` for one level; `1-1.a.b` for two; `1-1.a.b.c` for three), the way a
//! cart's chained hubs sit.
//!
//! A cart bigger than one bus holds (more than 125 iPads with one hub level) goes on on the
//! next bus (`2-1.k`…), the layout repeated, as on a station with several USB host
//! controllers: a district-sized simulator of 1,000 iPads uses 8.
//!
//! This is the one place that says where a slot sits. The simulator reports each iPad's
//! LocationID from it, and whoever draws the cart's bus for the station (the demo, the
//! end-to-end tests, the sysfs tree of `crate::sysfs`) reads the same layout instead of writing
//! the rule again.

/// The bus the cart's hub hangs off.
pub const BUS: u8 = 1;

/// The root port of that bus the hub is plugged into.
pub const HUB_PORT: u8 = 1;

/// Ports on each hub below the first level (a common 7-port hub).
pub const HUB_PORTS: u32 = 7;

/// The most slots one hub level has room for: USB addresses are 7 bits (at most 127), and
/// addresses 1 and 2 belong to the root hub and the cart's hub.
pub const MAX_SLOTS: u32 = 125;

/// The most buses (host controllers) a simulated station has.
pub const MAX_BUSES: u32 = 16;

/// How many levels of hubs the cart's bus has (1 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLevels(u8);

impl HubLevels {
    pub const ONE: HubLevels = HubLevels(1);

    pub fn new(levels: u8) -> Option<HubLevels> {
        (1..=3).contains(&levels).then_some(HubLevels(levels))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Hubs on the bus besides the root hub: the cart's hub, then 7 per hub of the level above.
    fn hubs(self) -> u32 {
        (1..self.0).fold(1, |sum, level| sum + HUB_PORTS.pow(u32::from(level)))
    }

    /// Slots the layout has: ports on the last level, and addresses left after the hubs.
    pub fn max_slots(self) -> u32 {
        let ports = match self.0 {
            1 => MAX_SLOTS,
            n => HUB_PORTS.pow(u32::from(n - 1)) * HUB_PORTS,
        };
        ports.min(127 - 1 - self.hubs())
    }

    /// Slots on all the buses a simulated station can have.
    pub fn max_slots_all_buses(self) -> u32 {
        self.max_slots() * MAX_BUSES
    }
}

impl Default for HubLevels {
    fn default() -> Self {
        HubLevels::ONE
    }
}

/// Where a slot's iPad sits on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbPort {
    /// 1-based position on the cart.
    pub slot: u32,
    /// Port chain as Linux sysfs names it (`1-1.3`: bus, then each hub port).
    pub chain: String,
    pub bus: u8,
    /// Hub ports from the root down (`[1, 3]` for `1-1.3`).
    pub ports: Vec<u8>,
    /// Device address on the bus (after the root hub and the cart's hubs).
    pub address: u8,
}

impl UsbPort {
    /// The LocationID usbmuxd reports, in Linux usbmuxd's `(bus << 16) | address` form.
    pub fn location_id(&self) -> u64 {
        (u64::from(self.bus) << 16) | u64::from(self.address)
    }

    /// The LocationID as macOS's IOKit writes it: the bus in the top byte, then one nibble per
    /// port from the root down (docs/fidelity.md §14). `None` when a port number does not fit a
    /// nibble or the chain is deeper than six ports.
    pub fn macos_location_id(&self) -> Option<u32> {
        if self.ports.len() > 6 || self.ports.iter().any(|p| *p == 0 || *p > 15) {
            return None;
        }
        let mut location = u32::from(self.bus) << 24;
        for (i, port) in self.ports.iter().enumerate() {
            location |= u32::from(*port) << (20 - 4 * i);
        }
        Some(location)
    }
}

/// The port of `slot` on a one-level cart; `None` for slot 0 or past [`MAX_SLOTS`].
pub fn port(slot: u32) -> Option<UsbPort> {
    port_in(HubLevels::ONE, slot)
}

/// The port of `slot` with `levels` of hubs; `None` for slot 0 or past the room of
/// [`MAX_BUSES`] buses. Slots past one bus's room go on the next bus, laid out the same way.
pub fn port_in(levels: HubLevels, slot: u32) -> Option<UsbPort> {
    if !(1..=levels.max_slots_all_buses()).contains(&slot) {
        return None;
    }
    let per_bus = levels.max_slots();
    let bus = BUS.checked_add(u8::try_from((slot - 1) / per_bus).ok()?)?;
    let on_bus = (slot - 1) % per_bus + 1;
    let ports = ports_on_bus(levels, on_bus)?;
    Some(UsbPort {
        slot,
        chain: chain(bus, &ports),
        bus,
        ports,
        address: u8::try_from(1 + levels.hubs() + on_bus).ok()?,
    })
}

/// The hub ports, from the root hub, of the `on_bus`-th iPad of a bus (every bus is laid out
/// the same way).
fn ports_on_bus(levels: HubLevels, on_bus: u32) -> Option<Vec<u8>> {
    let mut ports = vec![HUB_PORT];
    if levels.get() == 1 {
        ports.push(u8::try_from(on_bus).ok()?);
    } else {
        // Below the cart's hub, slot k is the k-th port in depth-first order.
        let mut below = Vec::new();
        let mut rest = on_bus - 1;
        for _ in 1..levels.get() {
            below.push(u8::try_from(rest % HUB_PORTS + 1).ok()?);
            rest /= HUB_PORTS;
        }
        below.push(u8::try_from(rest + 1).ok()?);
        below.reverse();
        ports.extend(below);
    }
    Some(ports)
}

/// The port chain of `slot` on a one-level cart (`1-1.k`; `2-1.k` past the first bus), the key
/// of the station's `[slots]`.
pub fn port_chain(slot: u32) -> String {
    port(slot)
        .map(|p| p.chain)
        .unwrap_or_else(|| format!("{BUS}-{HUB_PORT}.{slot}"))
}

/// `bus-port.port…`, as Linux names USB devices in sysfs.
pub fn chain(bus: u8, ports: &[u8]) -> String {
    let ports: Vec<String> = ports.iter().map(u8::to_string).collect();
    format!("{bus}-{}", ports.join("."))
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
    from_slots(cart.slots())
}

/// The bus for `(iPad, DeviceID if plugged)` pairs, as `Cart::slots` gives them.
pub fn from_slots(
    slots: Vec<(std::sync::Arc<crate::ipad::VirtualIpad>, Option<u32>)>,
) -> Vec<BusDevice> {
    slots
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
    fn there_is_no_slot_0_and_none_past_the_last_bus() {
        assert_eq!(port(0), None);
        assert_eq!(port(MAX_SLOTS * MAX_BUSES + 1), None);
        assert_eq!(port(u32::MAX), None);
    }

    #[test]
    fn a_cart_bigger_than_one_bus_goes_on_on_the_next_bus() {
        let two = HubLevels::new(2).unwrap();
        let cases = [
            // levels, slot, chain, bus, address, Linux LocationID
            (HubLevels::ONE, MAX_SLOTS, "1-1.125", 1, 127, 0x1_007F),
            (HubLevels::ONE, MAX_SLOTS + 1, "2-1.1", 2, 3, 0x2_0003),
            (HubLevels::ONE, 1000, "8-1.125", 8, 127, 0x8_007F),
            (two, 50, "2-1.1.1", 2, 10, 0x2_000A),
        ];
        for (levels, slot, chain, bus, address, location_id) in cases {
            let p = port_in(levels, slot).expect("a slot on some bus");
            assert_eq!(p.slot, slot);
            assert_eq!(p.chain, chain, "slot {slot}");
            assert_eq!(p.bus, bus, "slot {slot}");
            assert_eq!(p.address, address, "slot {slot}");
            assert_eq!(p.location_id(), location_id, "slot {slot}");
        }
        assert_eq!(port_chain(MAX_SLOTS + 1), "2-1.1");
        assert_eq!(
            port(MAX_SLOTS + 1).unwrap().macos_location_id(),
            Some(0x0211_0000)
        );
    }

    #[test]
    fn deeper_carts_fill_7_port_hubs_depth_first() {
        let two = HubLevels::new(2).unwrap();
        let three = HubLevels::new(3).unwrap();
        let cases = [
            // levels, slot, chain, address, macOS LocationID
            (two, 1, "1-1.1.1", 10, Some(0x0111_1000)),
            (two, 7, "1-1.1.7", 16, Some(0x0111_7000)),
            (two, 8, "1-1.2.1", 17, Some(0x0112_1000)),
            (two, 49, "1-1.7.7", 58, Some(0x0117_7000)),
            (three, 1, "1-1.1.1.1", 59, Some(0x0111_1100)),
            (three, 8, "1-1.1.2.1", 66, Some(0x0111_2100)),
            (three, 50, "1-1.2.1.1", 108, Some(0x0112_1100)),
        ];
        for (levels, slot, chain, address, macos) in cases {
            let p = port_in(levels, slot).expect("a slot on the bus");
            assert_eq!(p.chain, chain, "{levels:?} slot {slot}");
            assert_eq!(p.address, address, "{levels:?} slot {slot}");
            assert_eq!(p.macos_location_id(), macos, "{levels:?} slot {slot}");
        }
        assert_eq!(two.max_slots(), 49);
        assert_eq!(three.max_slots(), 69);
        assert_eq!(port_in(two, 50).map(|p| p.bus), Some(2));
        assert_eq!(port_in(three, 70).map(|p| p.bus), Some(2));
        assert_eq!(HubLevels::new(0), None);
        assert_eq!(HubLevels::new(4), None);
    }

    #[test]
    fn a_port_past_15_has_no_macos_location() {
        assert_eq!(port(15).unwrap().macos_location_id(), Some(0x011F_0000));
        assert_eq!(port(16).unwrap().macos_location_id(), None);
    }
}
