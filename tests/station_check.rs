//! `cartprep check` against the simulator: it passes when everything answers, and names each
//! failure (a wrong URL, the identity missing, usbmuxd absent) with exit status 2.

mod common;

use std::process::Command;

use common::*;

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");

/// Writes `config` beside the harness's station.toml and runs `cartprep check` on it.
async fn check(h: &Harness, config: String) -> (i32, String, String) {
    let path = h.config_path.with_file_name("check.toml");
    std::fs::write(&path, config).unwrap();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(CARTPREP)
            .args(["check", "--config", path.to_str().unwrap()])
            .env_remove("CARTPREP_LOG")
            .output()
            .expect("cartprep runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The row of `check` in the table.
fn row<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(check) && l[check.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no row {check}:\n{out}"))
}

/// The configuration with the MDM enrollment URL on the simulator's fake MDM, whose CA the
/// station trusts beside the activation server's (`activation.extra_ca_file`).
fn reachable_config(h: &Harness) -> String {
    config_enrolling_at(h, &h.sim().mdm_enrollment_url())
}

fn config_enrolling_at(h: &Harness, url: &str) -> String {
    let mut cas = std::fs::read(h.station_dir.join("activation-ca.pem")).unwrap();
    cas.extend_from_slice(&h.sim().mdm_ca_pem());
    std::fs::write(h.station_dir.join("check-ca.pem"), cas).unwrap();
    h.config_text(&ConfigSpec::default())
        .replace(ENROLLMENT_URL, url)
        .replace(
            "extra_ca_file = \"activation-ca.pem\"",
            "extra_ca_file = \"check-ca.pem\"",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_passes_against_the_simulator() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let (code, out, err) = check(&h, reachable_config(&h)).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.starts_with("CHECK"), "a header row:\n{out}");
        for check in [
            "configuration",
            "identity",
            "Wi-Fi profile",
            "usbmuxd",
            "activation server",
            "MDM enrollment URL",
            "MDM enrollment profile",
        ] {
            assert!(row(&out, check).contains(" ok "), "{check}:\n{out}");
        }
        let base = &h.sim().mdm_server().base_url;
        assert!(
            row(&out, "MDM enrollment profile").contains(&format!(
                "MDM payload found (server {base}mdm/server, topic \
                 com.apple.mgmt.External.cartprep-simulator); signed by "
            )),
            "{out}"
        );
        // The MDM saw what an iPad sends: a POST of a signed MachineInfo.
        let seen = h.sim().mdm_server().seen();
        let post = seen
            .iter()
            .find(|r| r.method == "POST")
            .unwrap_or_else(|| panic!("no POST among {seen:?}"));
        assert_eq!(post.user_agent, "CloudConfiguration/1.0");
        assert_eq!(post.content_type, "application/pkcs7-signature");
        assert!(
            post.udid.is_some(),
            "a signed MachineInfo with a UDID: {post:?}"
        );
        assert!(row(&out, "usbmuxd").contains("1 iPad(s) attached"), "{out}");
        assert!(row(&out, "Wi-Fi profile").contains(SSID), "{out}");
        assert!(out.contains("ready: plug the cart in"), "{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_each_failure() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let good = reachable_config(&h);
        let usbmuxd = h.config().usbmuxd.clone();

        let wrong_url = config_enrolling_at(&h, "https://127.0.0.1:9/enroll");
        let (code, out, err) = check(&h, wrong_url).await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(row(&out, "MDM enrollment URL").contains("FAIL"), "{out}");
        assert!(
            row(&out, "MDM enrollment profile").contains("FAIL"),
            "{out}"
        );
        assert!(row(&out, "activation server").contains(" ok "), "{out}");
        assert!(
            err.contains("not ready: MDM enrollment URL, MDM enrollment profile"),
            "{err}"
        );

        let absent = h.station_dir.join("no-usbmuxd.sock");
        let no_usbmuxd = good.replace(
            &format!("usbmuxd = \"{usbmuxd}\""),
            &format!("usbmuxd = \"{}\"", absent.display()),
        );
        let (code, out, err) = check(&h, no_usbmuxd).await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(row(&out, "usbmuxd").contains("FAIL"), "{out}");
        assert!(err.contains("not ready: usbmuxd"), "{err}");

        std::fs::rename(h.identity_dir(), h.station_dir.join("identity-elsewhere")).unwrap();
        let (code, out, err) = check(&h, good).await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(row(&out, "identity").contains("FAIL"), "{out}");
        assert!(row(&out, "configuration").contains(" ok "), "{out}");
        assert!(row(&out, "usbmuxd").contains("skipped"), "{out}");
        assert!(err.contains("not ready: identity"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_what_is_wrong_with_the_enrollment_reply() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let base = h.sim().mdm_server().base_url.clone();
        // (path on the fake MDM, the row's result, what the row says)
        let cases = [
            ("enroll/unsigned", "FAIL", "an iPad rejects an unsigned enrollment profile (Invalid Profile)"),
            ("enroll/nowhere", "FAIL", "HTTP 404 (\u{201c}unknown endpoint\u{201d}): no enrollment profile at this address"),
            ("enroll/no-mdm-payload", "FAIL", "the profile holds no com.apple.mdm payload (its payloads: com.apple.webClip.managed)"),
            ("enroll/bad-signature", "FAIL", "the reply's signature does not verify"),
            ("enroll/not-a-profile", "FAIL", "the reply is not a configuration profile"),
            ("enroll/devices-only", "warning", "HTTP 403: the MDM refuses the request"),
        ];
        for (path, result, says) in cases {
            let (code, out, err) = check(&h, config_enrolling_at(&h, &format!("{base}{path}"))).await;
            let profile = row(&out, "MDM enrollment profile");
            assert!(profile.contains(&format!(" {result} ")), "{path}:\n{out}");
            assert!(profile.contains(says), "{path}:\n{out}");
            if result == "FAIL" {
                assert_eq!(code, 2, "{path}:\n{out}{err}");
                assert!(err.contains("not ready: MDM enrollment profile"), "{path}: {err}");
            } else {
                assert_eq!(code, 0, "{path}: a warning alone does not fail the check\n{out}{err}");
                assert!(
                    out.contains("ready: plug the cart in (but read the warning above: MDM enrollment profile)"),
                    "{path}:\n{out}"
                );
            }
        }
    })
    .await;
}

/// The configuration with `[asm]` pointing at a fake Apple School Manager that holds one MDM
/// server, "Mosyle"; `server` is the name the configuration asks for.
async fn with_asm(h: &Harness, server: &str) -> (simulator::asm_server::AsmServer, String) {
    use simulator::asm_server::{self, AsmScenario, AsmService};
    let key = asm::PrivateKey::generate();
    let mut scenario = AsmScenario::new("SCHOOLAPI.check", "k1", &key.public_key_pem().unwrap());
    scenario.services = vec![AsmService {
        id: "1F97349736CF4614A94F624E705841AD".into(),
        name: "Mosyle".into(),
    }];
    let fake = asm_server::start(&h.sim().cart.authority, scenario)
        .await
        .expect("fake ASM");
    let dir = &h.station_dir;
    profiles::files::write_private(&dir.join("asm-key.pem"), key.to_pem().unwrap().as_bytes())
        .unwrap();
    profiles::files::write_private(&dir.join("asm-ca.pem"), &fake.ca_pem).unwrap();
    let config = format!(
        "{}\n[asm]\nclient_id = \"SCHOOLAPI.check\"\nkey_id = \"k1\"\nprivate_key_file = \"asm-key.pem\"\nmdm_server = \"{server}\"\napi_url = \"{}\"\ntoken_url = \"{}\"\nextra_ca_file = \"asm-ca.pem\"\n",
        reachable_config(h),
        fake.api_url,
        fake.token_url
    );
    (fake, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_signs_in_to_apple_school_manager_and_finds_the_mdm_server() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let (_fake, config) = with_asm(&h, "Mosyle").await;
        let (code, out, err) = check(&h, config).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(row(&out, "Apple School Manager").contains(" ok "), "{out}");

        let (_fake, config) = with_asm(&h, "Jamf").await;
        let (code, out, err) = check(&h, config).await;
        assert_eq!(code, 2, "{out}{err}");
        let asm = row(&out, "Apple School Manager");
        assert!(asm.contains("FAIL") && asm.contains("Mosyle"), "{out}");
    })
    .await;
}
