//! Supervised lockdown pairing (`docs/protocol.md` §2.5) against virtual iPads whose cloud
//! configuration names our supervision identity and forbids ordinary pairing
//! (`AllowPairing = false`, `docs/protocol.md` §5.3).

use std::time::Duration;

use lockdown::{ChallengeSigner, DeviceSession, LockdownError};
use profiles::SupervisionIdentity;
use testcart::{Cart, SignsWrongBytes, new_identity, supervised_cloud_configuration};
use usbmux::UsbmuxClient;

const SCENARIO: &str = r#"
seed = 31

[[device]]            # 1: prepared and supervised by us, AllowPairing = false (set by the test)
activated = true

[[device]]            # 2: the same, for failures
activated = true
"#;

/// Puts the state a prepare with `AllowPairing = false` leaves: a supervised cloud
/// configuration naming `supervisor`, and no pairing records (the device deleted them when it
/// saved the configuration). The MCInstall side of this is tested in crates/mcinstall.
fn supervise(cart: &Cart, slot: u32, supervisor: &[u8]) {
    let mut cc = supervised_cloud_configuration(supervisor);
    cc.insert("AllowPairing".into(), false.into());
    cc.insert("CloudConfigurationUIComplete".into(), true.into());
    let ipad = cart.sim.cart.device(slot).unwrap();
    let mut state = ipad.state();
    state.cloud_config = Some(cc);
    state.hosts.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_pairing_is_refused_and_supervised_pairing_works() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    supervise(&cart, 1, identity.certificate_der());
    let device = cart.device(1).await;

    // Ordinary pairing: refused, by name.
    let plain =
        lockdown::trusted_session(device.clone(), Some(&cart.store), Duration::from_secs(3)).await;
    match plain {
        Err(LockdownError::Device { request, name }) => {
            assert_eq!(request, "Pair");
            assert!(
                name == "MCProtected" || name == "MCChallengeRequired",
                "unexpected refusal {name}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let mut session = DeviceSession::connect(device.clone()).await.unwrap();
    let record = lockdown::pair_supervised_and_save(
        &mut session,
        Some(&cart.store),
        Some("cartprep"),
        &identity,
    )
    .await
    .unwrap();
    assert!(record.escrow_bag.as_ref().is_some_and(|b| !b.is_empty()));
    assert_eq!(record.udid.as_deref(), Some(device.udid.as_str()));
    assert!(
        cart.sim
            .cart
            .device(1)
            .unwrap()
            .state()
            .hosts
            .contains_key(&record.host_id),
        "the iPad trusts our HostID"
    );

    // Saved through usbmuxd (parses with idevice) and in our folder, 0600.
    let from_mux = UsbmuxClient::connect(&device.addr)
        .await
        .unwrap()
        .read_pair_record(&device.udid)
        .await
        .unwrap()
        .expect("usbmuxd stored the record");
    let parsed = lockdown::PairingFile::from_bytes(&from_mux).unwrap();
    assert_eq!(parsed.host_id, record.host_id);
    assert_eq!(parsed.escrow_bag, record.escrow_bag);
    let ours = cart.store.dir().join(format!("{}.plist", device.udid));
    assert_eq!(std::fs::read(&ours).unwrap(), from_mux);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No private key went to the device, and the record holds one.
    assert!(!record.host_private_key.is_empty());

    // The record opens TLS sessions: the stored one is used, no new pairing.
    drop(session);
    let hosts_before = cart.sim.cart.device(1).unwrap().state().hosts.len();
    let (mut s, used) =
        lockdown::trusted_session(device, Some(&cart.store), Duration::from_secs(3))
            .await
            .unwrap();
    assert_eq!(used.host_id, record.host_id);
    assert_eq!(
        cart.sim.cart.device(1).unwrap().state().hosts.len(),
        hosts_before
    );
    assert!(s.get_string("SerialNumber").await.is_ok());
    // Services work with it too.
    let (port, _) = s.start_service("com.apple.mobile.MCInstall").await.unwrap();
    assert!(port > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signatures_and_wrong_certificates_are_refused_by_name() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let stranger = new_identity("Shelbyville");
    supervise(&cart, 2, identity.certificate_der());
    let device = cart.device(2).await;

    // The right certificate, but the signature covers other bytes.
    let mut session = DeviceSession::connect(device.clone()).await.unwrap();
    match lockdown::pair_supervised_and_save(
        &mut session,
        Some(&cart.store),
        None,
        &SignsWrongBytes(&identity),
    )
    .await
    {
        Err(LockdownError::Device { request, name }) => {
            assert_eq!(request, "Pair");
            assert!(!name.is_empty());
            eprintln!("wrong signature: the device answered {name}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The right certificate, signed with another key.
    struct Mixed<'a>(&'a SupervisionIdentity, &'a SupervisionIdentity);
    impl ChallengeSigner for Mixed<'_> {
        fn certificate_der(&self) -> &[u8] {
            self.0.certificate_der()
        }
        fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
            self.1.sign(content)
        }
    }
    let mut session = DeviceSession::connect(device.clone()).await.unwrap();
    let mixed =
        lockdown::pair_supervised_and_save(&mut session, None, None, &Mixed(&identity, &stranger))
            .await;
    assert!(
        matches!(mixed, Err(LockdownError::Device { .. })),
        "{mixed:?}"
    );

    // Another identity's certificate: not a supervisor of this iPad.
    let mut session = DeviceSession::connect(device.clone()).await.unwrap();
    match lockdown::pair_supervised_and_save(&mut session, None, None, &stranger).await {
        Err(LockdownError::Device { request, name }) => {
            assert_eq!(request, "Pair");
            eprintln!("wrong certificate: the device answered {name}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A signer that fails is an error, not a panic.
    struct Broken<'a>(&'a SupervisionIdentity);
    impl ChallengeSigner for Broken<'_> {
        fn certificate_der(&self) -> &[u8] {
            self.0.certificate_der()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("the key is on a smart card that was removed".into())
        }
    }
    let mut session = DeviceSession::connect(device.clone()).await.unwrap();
    let broken =
        lockdown::pair_supervised_and_save(&mut session, None, None, &Broken(&identity)).await;
    assert!(broken.is_err(), "{broken:?}");

    // Nothing was saved, and the iPad trusts nobody new.
    assert!(
        UsbmuxClient::connect(&device.addr)
            .await
            .unwrap()
            .read_pair_record(&device.udid)
            .await
            .unwrap()
            .is_none()
    );
    assert!(cart.sim.cart.device(2).unwrap().state().hosts.is_empty());

    // And the right identity still works afterwards.
    let mut session = DeviceSession::connect(device).await.unwrap();
    lockdown::pair_supervised_and_save(&mut session, None, None, &identity)
        .await
        .unwrap();
}
