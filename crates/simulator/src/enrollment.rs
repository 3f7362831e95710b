//! Finishing Setup Assistant on a virtual iPad: with a `ConfigurationURL` in its cloud
//! configuration, the device fetches its MDM enrollment profile from that URL as iOS does, and
//! installs it — or stays in Setup Assistant and records why it could not.
//!
//! The device's rules (evidence in `docs/fidelity.md` §12):
//! - it POSTs to the URL with the user agent `CloudConfiguration/1.0` (fleetdm/fleet#28187,
//!   a device's console log);
//! - the body is its MachineInfo plist, CMS-signed with its identity certificate (Apple's
//!   Device Management documentation, "MachineInfo"); the simulated device signs with a
//!   self-signed stand-in, having no Apple-issued identity;
//! - it trusts the server's TLS certificate only through the cloud configuration's
//!   `AnchorCertificates` (Apple's ADE profile documentation: the anchors are used to evaluate
//!   trust of the connection to the MDM), the simulator having no public roots;
//! - the reply must be CMS-signed: an unsigned one is refused ("Invalid Profile" in
//!   fleetdm/fleet#28187); its content must be a configuration profile with a `com.apple.mdm`
//!   payload;
//! - the enrollment is mandatory (`IsMandatory`, which the tunnel forces to true): when it
//!   fails, Setup Assistant cannot finish.
//!
//! Reads are bounded: 10 s to connect and handshake, 30 s for the whole exchange, 1 MiB reply.

use std::sync::Arc;
use std::time::Duration;

use plist::{Dictionary, Value};
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ipad::VirtualIpad;

/// The user agent of the device's request (fleetdm/fleet#28187).
pub const USER_AGENT: &str = "CloudConfiguration/1.0";
const MAX_REPLY: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the device could not enroll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentFailure {
    #[error("the MDM server could not be reached: {0}")]
    Unreachable(String),
    #[error("the MDM server answered HTTP {0}")]
    HttpStatus(u16),
    #[error("the reply is not signed (Invalid Profile)")]
    Unsigned,
    #[error("the reply's signature does not verify: {0}")]
    BadSignature(String),
    #[error("the reply is not a configuration profile: {0}")]
    NotAProfile(String),
    #[error("the profile holds no com.apple.mdm payload")]
    NoMdmPayload,
}

/// What the iPad remembers of its enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// The MDM profile is installed.
    Enrolled {
        profile_identifier: String,
        organization: Option<String>,
    },
    /// The last attempt failed; the iPad is still in Setup Assistant.
    Failed(EnrollmentFailure),
}

/// How a `setup` request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    /// Enrolled in the MDM; Setup Assistant finished.
    Enrolled { profile_identifier: String },
    /// No `ConfigurationURL`: Setup Assistant finished without enrolling.
    FinishedWithoutMdm,
    /// Enrollment failed; still in Setup Assistant.
    Failed(EnrollmentFailure),
    /// Setup Assistant begins with activation.
    NotActivated,
    /// Setup Assistant was finished before.
    AlreadyFinished,
}

impl std::fmt::Display for SetupOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupOutcome::Enrolled { profile_identifier } => {
                write!(
                    f,
                    "Setup Assistant finished; enrolled ({profile_identifier})"
                )
            }
            SetupOutcome::FinishedWithoutMdm => {
                f.write_str("Setup Assistant finished; no ConfigurationURL, no MDM")
            }
            SetupOutcome::Failed(e) => {
                write!(f, "enrollment failed, still in Setup Assistant: {e}")
            }
            SetupOutcome::NotActivated => {
                f.write_str("not activated: Setup Assistant cannot finish")
            }
            SetupOutcome::AlreadyFinished => f.write_str("Setup Assistant was already finished"),
        }
    }
}

/// Walks the iPad through the end of Setup Assistant.
pub async fn finish_setup_assistant(ipad: &VirtualIpad) -> SetupOutcome {
    let (url, anchors, info) = {
        let state = ipad.state();
        if state.setup_done {
            return SetupOutcome::AlreadyFinished;
        }
        if !state.activated {
            return SetupOutcome::NotActivated;
        }
        let cc = state.cloud_config.clone().unwrap_or_default();
        let url = cc
            .get("ConfigurationURL")
            .and_then(Value::as_string)
            .map(str::to_owned);
        let anchors: Vec<Vec<u8>> = cc
            .get("AnchorCertificates")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_data)
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default();
        let mut info = Dictionary::new();
        info.insert("UDID".into(), ipad.udid().into());
        info.insert(
            "SERIAL".into(),
            ipad.spec.identity.serial_number.clone().into(),
        );
        info.insert("PRODUCT".into(), ipad.spec.model.product_type.into());
        info.insert("VERSION".into(), ipad.spec.release.build.into());
        info.insert("LANGUAGE".into(), state.language.clone().into());
        (url, anchors, info)
    };
    let Some(url) = url else {
        complete(ipad, None);
        return SetupOutcome::FinishedWithoutMdm;
    };
    // The device signs MachineInfo with its own key, made on first use.
    let signed = match ipad.keys_ready().await {
        Ok(()) => machine_info(ipad, &info),
        Err(e) => Err(e.to_string()),
    };
    let result = match signed {
        Ok(body) => fetch_profile(&url, &anchors, &body).await,
        Err(e) => Err(EnrollmentFailure::Unreachable(e)),
    };
    match result.and_then(|bytes| check_profile(&bytes)) {
        Ok(profile) => {
            let id = profile.identifier.clone();
            complete(ipad, Some(profile));
            SetupOutcome::Enrolled {
                profile_identifier: id,
            }
        }
        Err(e) => {
            tracing::info!(slot = ipad.spec.slot, "enrollment failed: {e}");
            ipad.state().enrollment = Some(Enrollment::Failed(e.clone()));
            SetupOutcome::Failed(e)
        }
    }
}

/// Setup Assistant is over: the profile installed, the cloud configuration's UI complete.
fn complete(ipad: &VirtualIpad, profile: Option<crate::ipad::Profile>) {
    let mut state = ipad.state();
    state.setup_done = true;
    if let Some(cc) = state.cloud_config.as_mut() {
        cc.insert("CloudConfigurationUIComplete".into(), true.into());
    }
    if let Some(p) = profile {
        state.enrollment = Some(Enrollment::Enrolled {
            profile_identifier: p.identifier.clone(),
            organization: p.organization.clone(),
        });
        state.profiles.retain(|x| x.identifier != p.identifier);
        state.profiles.push(p);
    }
}

/// The MachineInfo plist, CMS-signed with a self-signed stand-in for the device identity.
fn machine_info(ipad: &VirtualIpad, info: &Dictionary) -> Result<Vec<u8>, String> {
    let key = RsaPrivateKey::from_pkcs8_der(&ipad.key_pkcs8_der()).map_err(|e| e.to_string())?;
    let name = format!("CN={},O=cartprep simulated device", ipad.udid());
    let (cert, _, _) =
        crate::activation_server::loopback_certificates(&key, &name).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    plist::to_writer_xml(&mut body, info).map_err(|e| e.to_string())?;
    crate::cms_sign::sign_attached(&key, &cert, &body).map_err(|e| e.to_string())
}

/// `https://host[:port]/path` → (host, port, path).
fn split_url(url: &str) -> Result<(String, u16, String), EnrollmentFailure> {
    let bad = || EnrollmentFailure::Unreachable(format!("{url:?} is not an https URL"));
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (authority, 443),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// POSTs the MachineInfo and returns the reply's body (HTTP 200 only).
async fn fetch_profile(
    url: &str,
    anchors: &[Vec<u8>],
    body: &[u8],
) -> Result<Vec<u8>, EnrollmentFailure> {
    let (host, port, path) = split_url(url)?;
    let unreachable = |e: &dyn std::fmt::Display| EnrollmentFailure::Unreachable(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for a in anchors {
        // An anchor that is not a certificate is ignored, as one that fits nothing.
        let _ = roots.add(rustls::pki_types::CertificateDer::from(a.clone()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| unreachable(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| unreachable(&"connection timed out"))?
        .map_err(|e| unreachable(&e))?;
        let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| unreachable(&"TLS handshake timed out"))?
            .map_err(|e| unreachable(&e))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {USER_AGENT}\r\nContent-Type: application/pkcs7-signature\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes())
            .await
            .map_err(|e| unreachable(&e))?;
        tls.write_all(body).await.map_err(|e| unreachable(&e))?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match tls.read(&mut chunk).await {
                Ok(n) => n,
                // A server that closes without close_notify still sent its reply.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(unreachable(&e)),
            };
            if n == 0 {
                break;
            }
            if reply.len() + n > MAX_REPLY {
                return Err(unreachable(&"the reply is larger than 1 MiB"));
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        Ok(reply)
    };
    let reply = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(&"no reply within 30 s"))??;
    parse_reply(&reply)
}

/// The body of an HTTP/1.1 reply, if its status is 200.
fn parse_reply(reply: &[u8]) -> Result<Vec<u8>, EnrollmentFailure> {
    let malformed = || EnrollmentFailure::Unreachable("malformed HTTP reply".into());
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| malformed())?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    if status != 200 {
        return Err(EnrollmentFailure::HttpStatus(status));
    }
    let mut body = reply[end + 4..].to_vec();
    let length = head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(n) = length {
        if body.len() < n {
            return Err(malformed());
        }
        body.truncate(n);
    }
    Ok(body)
}

/// The reply must be a CMS-signed configuration profile with an MDM payload.
fn check_profile(bytes: &[u8]) -> Result<crate::ipad::Profile, EnrollmentFailure> {
    // A DER SEQUENCE is the only way a CMS message starts; anything else was sent unsigned.
    if bytes.first() != Some(&0x30) {
        return Err(EnrollmentFailure::Unsigned);
    }
    crate::cms_verify::verify_attached_by_included(bytes)
        .map_err(EnrollmentFailure::BadSignature)?;
    let profile = crate::mcinstall::parse_profile(bytes)
        .map_err(|why| EnrollmentFailure::NotAProfile(why.to_owned()))?;
    if !profile.payload_types.iter().any(|t| t == "com.apple.mdm") {
        return Err(EnrollmentFailure::NoMdmPayload);
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_only_https_is_fetched() {
        assert_eq!(
            split_url("https://127.0.0.1:8443/enroll").unwrap(),
            ("127.0.0.1".into(), 8443, "/enroll".into())
        );
        assert_eq!(
            split_url("https://mdm.example.org").unwrap(),
            ("mdm.example.org".into(), 443, "/".into())
        );
        for bad in [
            "http://mdm.example.org/enroll",
            "https://:80/",
            "mdm.example.org",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_200_reply_has_a_body_to_install() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_reply(ok).unwrap(), b"abc");
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_reply(missing),
            Err(EnrollmentFailure::HttpStatus(404))
        );
        assert!(parse_reply(b"garbage").is_err());
    }

    #[test]
    fn an_unsigned_reply_is_refused_before_it_is_read() {
        assert_eq!(
            check_profile(b"<?xml version=\"1.0\"?><plist></plist>"),
            Err(EnrollmentFailure::Unsigned)
        );
        assert!(matches!(
            check_profile(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(EnrollmentFailure::BadSignature(_))
        ));
    }
}
