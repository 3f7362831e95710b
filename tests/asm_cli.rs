//! `cartprep asm devices | show | assign` against the simulator's fake Apple School Manager.

use std::path::{Path, PathBuf};
use std::time::Duration;

use simulator::activation::ActivationAuthority;
use simulator::asm_server::{self, AsmDevice, AsmScenario, AsmServer, AsmService};

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");
const OURS: &str = "1F97349736CF4614A94F624E705841AD";
const OTHER: &str = "2A00000000000000000000000000000B";

async fn setup(dir: &Path) -> (AsmServer, PathBuf) {
    let authority = ActivationAuthority::load_or_create(&dir.join("ca")).expect("authority");
    let key = asm::PrivateKey::generate();
    let mut scenario = AsmScenario::new("SCHOOLAPI.t", "k1", &key.public_key_pem().expect("pem"));
    scenario.services = vec![
        AsmService {
            id: OURS.into(),
            name: "Mosyle".into(),
        },
        AsmService {
            id: OTHER.into(),
            name: "Old MDM".into(),
        },
    ];
    scenario.devices = vec![
        AsmDevice {
            serial: "DMPWAAAA0001".into(),
            product_type: "iPad12,1".into(),
            assigned_to: None,
        },
        AsmDevice {
            serial: "DMPWAAAA0002".into(),
            product_type: "iPad13,18".into(),
            assigned_to: Some(OTHER.into()),
        },
    ];
    let server = asm_server::start(&authority, scenario)
        .await
        .expect("server");
    let write = |name: &str, bytes: &[u8]| {
        profiles::files::write_private(&dir.join(name), bytes).expect("write")
    };
    write("asm-key.pem", key.to_pem().expect("pem").as_bytes());
    write("asm-ca.pem", &server.ca_pem);
    let config = format!(
        "state_dir = \"state\"\n[organization]\nname = \"School\"\n[wifi]\nssid = \"S\"\nsecurity = \"wpa2\"\npassword = \"correct horse\"\n[mdm]\nname = \"Mosyle\"\nenrollment_url = \"https://mdm.example.org/e\"\nmode = \"ade\"\n[asm]\nclient_id = \"SCHOOLAPI.t\"\nkey_id = \"k1\"\nprivate_key_file = \"asm-key.pem\"\nmdm_server = \"Mosyle\"\napi_url = \"{}\"\ntoken_url = \"{}\"\nextra_ca_file = \"asm-ca.pem\"\n",
        server.api_url, server.token_url
    );
    write("station.toml", config.as_bytes());
    (server, dir.join("station.toml"))
}

async fn cartprep(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(CARTPREP);
    cmd.arg("asm").arg("--config").arg(config).args(args);
    // Run off the runtime: the fake server answers on it meanwhile.
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("cartprep answers in time")
    .expect("joined")
    .expect("cartprep runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_asm_commands_list_show_and_assign() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, config) = setup(dir.path()).await;

    let (code, out, err) = cartprep(&config, &["devices"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DMPWAAAA0002") && out.contains("Old MDM"),
        "{out}"
    );
    assert!(out.contains("2 device(s)"), "{out}");

    let (code, out, err) = cartprep(&config, &["devices", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(2));

    let (code, out, _) = cartprep(&config, &["show", "NOTOURS00001"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("not in your Apple School Manager: ask the seller or the previous owner"),
        "{out}"
    );

    let (code, out, err) = cartprep(&config, &["assign", "DMPWAAAA0001", "DMPWAAAA0002"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("assigned in ASM to Mosyle (activity "),
        "{out}"
    );
    assert_eq!(server.assigned("DMPWAAAA0002").as_deref(), Some(OURS));

    let (code, _, err) = cartprep(&config, &["assign", "DMPWAAAA0001", "--server", "Mosyl"]).await;
    assert_eq!(code, 2, "a wrong server name is bad input: {err}");
    assert!(err.contains("Mosyle, Old MDM"), "{err}");
}
