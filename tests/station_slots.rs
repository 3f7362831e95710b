//! Slots on a bus the station reads as it reads a Linux host's: the simulator writes its cart as
//! a sysfs tree (`cartprep sim --sysfs`), with 2 or 3 levels of 7-port hubs, and on a Mac's bus
//! (IOKit LocationIDs). The station names each iPad's slot from it, reports an iPad in recovery
//! mode against its slot, and `cartprep slots learn` names the ports in the order the operator
//! plugs them.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use simulator::bus::HubLevels;
use station::Attention;
use station::slots::{AppleUsbDevice, FixedMacTopology, SlotLabels, UsbMode};
use station::status::Light;
use station::sysfs_topology::SysfsTopology;

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");

fn cart_with_hubs(
    devices: Vec<simulator::scenario::DeviceEntry>,
    levels: u8,
) -> simulator::Scenario {
    simulator::Scenario {
        hub_levels: Some(levels),
        ..cart(devices)
    }
}

fn chain(levels: u8, slot: u32) -> String {
    simulator::bus::port_in(HubLevels::new(levels).unwrap(), slot)
        .unwrap()
        .chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_level_bus_each_ipad_gets_its_port_and_recovery_is_reported_by_slot() {
    within(async {
        let h = Harness::new(cart_with_hubs(vec![fresh(), fresh(), fresh()], 3)).await;
        let sys = h.root.path().join("sys");
        h.sim().cart.write_sysfs_to(&sys).unwrap();
        let recovery_key = format!("usb:{}", chain(3, 2));
        let stop_key = recovery_key.clone();
        let daemon = spawn_daemon(
            h.settings(),
            h.board.clone(),
            Arc::new(SysfsTopology::open(&sys)),
            false,
            Box::new(move |board, idle| idle.running == 0 && board.get(&stop_key).is_some()),
        );
        h.wait_for("the cart done", |h| {
            (1..=3).all(|s| h.light(s) == Some(Light::Done))
        })
        .await;
        for slot in 1..=3 {
            let status = h.status(slot).unwrap();
            assert_eq!(
                status.slot.as_deref(),
                Some(chain(3, slot).as_str()),
                "slot {slot} is named by its port chain"
            );
        }
        assert_eq!(chain(3, 2), "1-1.1.1.2");

        // The iPad in slot 2 reboots into recovery: it leaves usbmuxd and the bus shows it with
        // the recovery product ID at the same port.
        h.sim().cart.enter_recovery(2).unwrap();
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 3);
        let s = h.board.get(&recovery_key).expect("reported from the bus");
        assert_eq!(s.light, Light::Attention);
        assert_eq!(s.attention, Some(Attention::RecoveryMode));
        assert_eq!(s.slot.as_deref(), Some("1-1.1.1.2"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_mac_the_location_id_names_the_port_even_without_serials() {
    within(async {
        let h = Harness::new(simulator::Scenario {
            flavour: simulator::flavour::Flavour::Macos,
            ..cart_with_hubs(vec![fresh(), fresh()], 2)
        })
        .await;
        // A Mac's libusb numbers the bus and ports from the IOKit location and does not read a
        // normal-mode iPad's serial; the station finds the port from usbmuxd's LocationID.
        let mac_bus = FixedMacTopology(
            h.sim()
                .cart
                .devices()
                .iter()
                .map(|d| {
                    let location = d.spec.usb.macos_location_id().expect("fits a Mac's bus");
                    AppleUsbDevice {
                        chain: station::slots::chain_from_macos_location(location),
                        bus: d.spec.usb.bus,
                        address: d.spec.usb.address,
                        product_id: d.spec.model.usb_product_id,
                        mode: UsbMode::Normal,
                        serial: None,
                    }
                })
                .collect(),
        );
        let udids = vec![h.udid(1), h.udid(2)];
        let daemon = spawn_daemon(
            h.settings(),
            h.board.clone(),
            Arc::new(mac_bus),
            false,
            when_all(udids, &[Light::Done]),
        );
        daemon.await.unwrap().expect("the daemon runs");
        for slot in 1..=2 {
            assert_eq!(
                h.status(slot).unwrap().slot.as_deref(),
                Some(chain(2, slot).as_str()),
                "slot {slot}: Apple's usbmuxd's LocationID decoded as the Mac's port chain"
            );
        }
    })
    .await;
}

/// The lines `cartprep slots learn` prints, as they come.
fn lines_of(stdout: std::process::ChildStdout) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the first line starting with `prefix`.
async fn line_starting(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    prefix: &str,
) -> String {
    loop {
        let line = lines
            .recv()
            .await
            .unwrap_or_else(|| panic!("slots learn ended before {prefix:?}"));
        if line.starts_with(prefix) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_learn_names_each_port_in_the_order_the_operator_plugs() {
    within(async {
        let h = Harness::new(cart_with_hubs(
            vec![unplugged(), unplugged(), unplugged()],
            2,
        ))
        .await;
        let sys = h.root.path().join("sys");
        h.sim().cart.write_sysfs_to(&sys).unwrap();
        let state = h.root.path().join("learn");
        let mut child = std::process::Command::new(CARTPREP)
            .args(["slots", "learn", "--count", "3", "--usbmuxd"])
            .arg(h.sim().address().to_string())
            .arg("--sysfs")
            .arg(&sys)
            .arg("--state")
            .arg(&state)
            .stdout(Stdio::piped())
            .spawn()
            .expect("cartprep slots learn starts");
        let mut lines = lines_of(child.stdout.take().unwrap());

        line_starting(&mut lines, "Plug an iPad into slot 1").await;
        // The operator works along the cart from the far end.
        for (n, slot) in [(1, 3), (2, 1), (3, 2)] {
            h.sim().cart.plug(slot).unwrap();
            let said = line_starting(&mut lines, &format!("Slot {n} is USB port")).await;
            assert!(said.contains(&chain(2, slot)), "{said}");
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "slots learn stops after --count 3");

        let labels = SlotLabels::load(&state).unwrap();
        assert_eq!(labels.label(&chain(2, 3)), "1");
        assert_eq!(labels.label(&chain(2, 1)), "2");
        assert_eq!(labels.label(&chain(2, 2)), "3");
        let list = std::process::Command::new(CARTPREP)
            .args(["slots", "list", "--state"])
            .arg(&state)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(text.contains("1-1.1.3"), "{text}");
    })
    .await;
}
