//! EraseDevice's effect on a virtual iPad: a new iPad comes back, with a new key.

use std::time::Duration;

use simulator::{Scenario, SimConfig, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_ipad_comes_back_fresh_with_a_new_device_key_and_device_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario: Scenario = toml::from_str(
        r#"
        [[device]]
        model = "iPad12,1"
        activated = true
        setup_done = true
        name = "Room 4"
        erase_reattach_ms = 300
        "#,
    )
    .unwrap();
    scenario.seed = 3;
    let sim = Simulator::start(SimConfig {
        scenario,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: dir.path().to_path_buf(),
        activated: false,
    })
    .await
    .unwrap();
    let ipad = sim.cart.device(1).unwrap().clone();
    let key_before = ipad.public_key_der();
    let id_before = sim.cart.attached()[0].device_id;
    let key_file = dir
        .path()
        .join("devices")
        .join(format!("{}.key", ipad.udid()));
    let file_before = std::fs::read(&key_file).unwrap();
    assert!(
        ipad.state().cloud_config.is_some(),
        "a set-up iPad has a cloud configuration"
    );

    tokio::time::timeout(Duration::from_secs(30), sim.cart.erase(1))
        .await
        .expect("erase finishes")
        .unwrap();

    let state = ipad.state().clone();
    assert!(!state.activated);
    assert!(!state.setup_done);
    assert!(state.cloud_config.is_none());
    assert!(state.hosts.is_empty());
    assert!(state.profiles.is_empty());
    assert_eq!(state.device_name, "iPad");
    assert_ne!(
        ipad.public_key_der(),
        key_before,
        "lockdownd's key pair was wiped"
    );
    let attached = sim.cart.attached();
    assert_eq!(attached.len(), 1, "it re-attached");
    assert!(attached[0].device_id > id_before, "with a new DeviceID");
    // The new key is kept for the next run of the simulator.
    assert_ne!(std::fs::read(&key_file).unwrap(), file_before);
}
