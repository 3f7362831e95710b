//! `[web]` and `[notify]`: off by default, checked like every other section, and the token and
//! webhook never shown.

use std::os::unix::fs::PermissionsExt;

use super::*;

const TOKEN: &str = "3f9c2a7d5e1b8c4a6f0d2e9b7a5c3e1f";

fn with(section: &str) -> String {
    format!("{MINIMAL}\n{section}")
}

fn write_token(f: &Fixture, mode: u32) {
    let path = f.path("web-token");
    fs::write(&path, format!("{TOKEN}\n")).expect("token");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn without_the_sections_there_is_no_page_and_no_webhook() {
    let f = Fixture::new();
    let c = f.load(MINIMAL).expect("valid");
    assert_eq!((c.web, c.notify), (None, None));
}

#[test]
fn the_page_listens_where_it_is_told_with_the_token_from_a_private_file() {
    let f = Fixture::new();
    write_token(&f, 0o600);
    let c = f
        .load(&with(
            "[web]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"web-token\"\n",
        ))
        .expect("valid");
    let web = c.web.expect("[web]");
    assert_eq!(web.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(web.token.as_ref().map(Secret::expose), Some(TOKEN));
    assert!(
        !format!("{web:?}").contains(TOKEN),
        "the token is not in Debug"
    );
}

#[test]
fn a_token_file_others_can_read_is_refused_without_showing_the_token() {
    let f = Fixture::new();
    write_token(&f, 0o644);
    let p = only_problem(f.settings(&with(
        "[web]\nlisten = \"127.0.0.1:8080\"\ntoken_file = \"web-token\"\n",
    )));
    assert_eq!(p.field, "web.token_file");
    assert!(
        p.reason.contains("0644") && p.reason.contains("chmod 600"),
        "{}",
        p.reason
    );
    assert!(!p.reason.contains(TOKEN), "{}", p.reason);
}

#[test]
fn a_listen_address_must_be_an_ip_and_a_port() {
    let f = Fixture::new();
    for bad in ["localhost:8080", "8080", "127.0.0.1"] {
        let text = with(&format!("[web]\nlisten = \"{bad}\"\n"));
        let line = text.lines().position(|l| l.starts_with("listen")).unwrap() + 1;
        let p = only_problem(f.settings(&text));
        assert_eq!(p.field, "web.listen", "{bad}");
        assert_eq!(p.line, Some(line), "{bad}");
    }
}

#[test]
fn a_webhook_must_be_https_and_is_never_shown() {
    let f = Fixture::new();
    let p = only_problem(f.settings(&with(
        "[notify]\nwebhook = \"http://chat.example.org/hooks/s3cr3t-t0ken\"\n",
    )));
    assert_eq!(p.field, "notify.webhook");
    assert!(!p.reason.contains("s3cr3t"), "{}", p.reason);

    let c = f
        .load(&with(
            "[notify]\nwebhook = \"https://chat.example.org/hooks/s3cr3t-t0ken\"\nstation = \"Library cart\"\n",
        ))
        .expect("valid");
    let notify = c.notify.expect("[notify]");
    assert_eq!(notify.webhook_host(), "https://chat.example.org");
    assert_eq!(notify.station.as_deref(), Some("Library cart"));
    assert!(!format!("{notify:?}").contains("s3cr3t"));
}

#[test]
fn the_documented_web_and_notify_examples_are_valid_when_uncommented() {
    let f = Fixture::new();
    write_token(&f, 0o600);
    let text: String = example_text()
        .lines()
        .map(|l| {
            for key in [
                "[web]",
                "listen =",
                "token_file =",
                "[notify]",
                "webhook =",
                "station =",
            ] {
                if let Some(rest) = l.strip_prefix("# ")
                    && rest.starts_with(key)
                {
                    return format!("{rest}\n");
                }
            }
            format!("{l}\n")
        })
        .collect();
    let c = f
        .load(&text)
        .unwrap_or_else(|e| panic!("the uncommented example must validate: {e}"));
    assert_eq!(c.web.expect("[web]").listen.to_string(), "127.0.0.1:8080");
    let notify = c.notify.expect("[notify]");
    assert_eq!(notify.webhook_host(), "https://hooks.slack.com");
    assert_eq!(notify.station.as_deref(), Some("Library cart"));
}
