//! `[web]` (the live page, its JSON and `/metrics`) and `[notify]` (the webhook): both off
//! unless the file has the section. Neither changes what a prepared iPad looks like, so neither
//! is in the fingerprint; both are read at start (an edit applies at the next start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Secret;
use super::files::read_file;
use super::problems::Problems;

/// Shortest token accepted: long enough that guessing it over the network is hopeless.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub(super) listen: String,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) webhook: Secret,
    pub(super) station: Option<String>,
}

/// `[web]`: where the read-only page listens, and the token it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` (`Debug` prints `***`).
    pub token: Option<Secret>,
}

/// `[notify]`: where events are posted. The URL is a credential for most chat services, so it
/// is held as a [`Secret`] and only its host is ever printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    pub webhook: Secret,
    /// A name for this station in the events ("Library cart"), to tell a school's apart.
    pub station: Option<String>,
}

impl NotifyConfig {
    /// What may be shown of the webhook: its scheme and host.
    pub fn webhook_host(&self) -> String {
        match reqwest::Url::parse(self.webhook.expose()) {
            Ok(url) => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
            Err(_) => "?".into(),
        }
    }
}

pub(super) fn check_web(
    raw: Option<RawWeb>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> Option<WebConfig> {
    let raw = raw?;
    let listen = match raw.listen.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "web.listen",
                format!(
                    "is \"{}\"; give an IP address and a port, e.g. \"127.0.0.1:8080\" (this machine only) or \"0.0.0.0:8080\" (the network)",
                    raw.listen
                ),
            );
            None
        }
    };
    let token_file = raw.token_file.as_deref().map(resolve);
    let token = match &token_file {
        None => None,
        Some(path) => {
            if let Some(reason) = too_open(path) {
                p.add("web.token_file", reason);
            }
            read_file("web.token_file", path, p).and_then(|bytes| match token_problem(&bytes) {
                Some(reason) => {
                    p.add("web.token_file", format!("{}: {reason}", path.display()));
                    None
                }
                None => Some(Secret::new(String::from_utf8_lossy(&bytes).trim())),
            })
        }
    };
    Some(WebConfig {
        listen: listen?,
        token: if token_file.is_some() {
            Some(token?)
        } else {
            None
        },
        token_file,
    })
}

/// Why a token file's contents are not a usable token (never quoting them).
fn token_problem(bytes: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some("is not text".into());
    };
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Some(format!(
            "the token is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
        ));
    }
    // It travels in a `?token=` link: only characters a URL carries as they are.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Some(
            "the token may hold only letters, digits and - . _ ~ (it goes in a link)".into(),
        );
    }
    None
}

/// Why a secret file is readable by others than its owner; `None` when it is not (or the
/// system has no such modes).
fn too_open(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some(format!(
                "{} has mode {mode:04o}; a token file must be readable by its owner only (chmod 600)",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

pub(super) fn check_notify(raw: Option<RawNotify>, p: &mut Problems) -> Option<NotifyConfig> {
    let raw = raw?;
    if let Some(reason) = webhook_problem(raw.webhook.expose()) {
        p.add("notify.webhook", reason);
        return None;
    }
    Some(NotifyConfig {
        webhook: raw.webhook,
        station: raw.station.filter(|s| !s.trim().is_empty()),
    })
}

/// Why a webhook address is refused: it must be https, except to this machine (a local relay,
/// or a test's receiver). The address itself is never quoted: it usually holds a token.
pub(super) fn webhook_problem(url: &str) -> Option<String> {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
        return Some(
            "is not an address (it must look like https://chat.example.org/hooks/…)".into(),
        );
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Some("has no server name".into()),
    };
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some(
            "is a plain http:// address; it must be https:// (plain http only to this machine)"
                .into(),
        ),
        other => Some(format!("is a {other}: address; it must be https://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_addresses() {
        let rows: &[(&str, bool)] = &[
            ("https://hooks.slack.com/services/T0/B0/XXXX", true),
            ("https://chat.example.org:8443/hooks/abc", true),
            ("http://127.0.0.1:9000/hook", true),
            ("http://localhost:9000/hook", true),
            ("http://[::1]:9000/hook", true),
            ("http://chat.example.org/hooks/abc", false),
            ("ftp://chat.example.org/", false),
            ("chat.example.org/hooks", false),
            ("", false),
        ];
        for (url, ok) in rows {
            assert_eq!(webhook_problem(url).is_none(), *ok, "{url}");
        }
    }

    #[test]
    fn a_refused_webhook_is_not_quoted() {
        let reason = webhook_problem("http://chat.example.org/hooks/s3cr3t").unwrap();
        assert!(!reason.contains("s3cr3t"), "{reason}");
    }

    #[test]
    fn tokens() {
        let rows: &[(&[u8], bool)] = &[
            (b"0123456789abcdef0123456789abcdef\n", true),
            (b"Abc-._~Abc-._~Abc", true),
            (b"short\n", false),
            (b"0123456789abcdef 0123456789abcdef", false),
            (b"0123456789abcdef&x=0123456789", false),
            (b"\xff\xfe0123456789abcdef0123", false),
        ];
        for (bytes, ok) in rows {
            assert_eq!(
                token_problem(bytes).is_none(),
                *ok,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
