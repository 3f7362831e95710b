//! lockdownd `EnterRecovery`: the iPad leaves usbmuxd and shows on the USB bus in recovery
//! mode, where the station reports it against its slot (`docs/fidelity.md` §3).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use station::Attention;
use station::status::Light;
use usbmux::UsbmuxClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_sent_into_recovery_leaves_usbmuxd_and_the_station_reports_it_from_the_bus() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let udid = h.udid(1);
        let recovery_key = format!("usb:{}", simulator::bus::port_chain(1));
        let stop_key = recovery_key.clone();
        let daemon = spawn_daemon(
            h.settings(),
            h.board.clone(),
            Arc::new(SimBus(h.sim().cart.clone())),
            false,
            Box::new(move |board, idle| idle.running == 0 && board.get(&stop_key).is_some()),
        );
        h.wait_for("slot 1 done", |h| h.light(1) == Some(Light::Done))
            .await;

        // A host (pymobiledevice3 `lockdown enter-recovery`, say) sends EnterRecovery in a
        // paired session; the device answers, then reboots.
        let addr = h.sim().address().clone();
        let props = UsbmuxClient::connect(&addr)
            .await
            .unwrap()
            .list_devices()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.udid == udid)
            .expect("listed");
        let device = lockdown::DeviceRef::new(addr.clone(), &props);
        let (mut session, _) = lockdown::trusted_session(device, None, Duration::from_secs(10))
            .await
            .unwrap();
        session.client().enter_recovery().await.unwrap();

        h.wait_for("slot 1 off usbmuxd", |h| {
            h.sim().cart.attached().iter().all(|d| d.udid != udid)
        })
        .await;
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 1);
        let s = h.board.get(&recovery_key).expect("reported from the bus");
        assert_eq!(s.light, Light::Attention);
        assert_eq!(s.attention, Some(Attention::RecoveryMode));
        assert!(s.message.contains("recovery mode"), "{}", s.message);
        let bus = simulator::bus::devices(&h.sim().cart);
        assert_eq!(bus.len(), 1);
        assert!(bus[0].recovery);
        assert!(bus[0].serial.contains("ECID:"), "{}", bus[0].serial);

        // Out of recovery, it boots and is back on usbmuxd.
        h.sim().cart.leave_recovery(1).unwrap();
        assert!(h.sim().cart.attached().iter().any(|d| d.udid == udid));
    })
    .await;
}
