//! The pre-flight look at the MDM enrollment URL (`cartprep check`): send it the request an
//! iPad sends at the end of Setup Assistant and judge the reply as the iPad would
//! (`docs/protocol.md` §7.1; the request and the judgement are `profiles::enrollment`).
//!
//! The connection trusts what the station's other HTTPS requests trust (the built-in roots and
//! `activation.extra_ca_file`). The request cannot be a real iPad's (no Apple device identity),
//! so a refusal that may be aimed at that is a warning, not a failure.

use std::time::Duration;

use profiles::SupervisionIdentity;
use profiles::enrollment::{
    self, EnrollmentProfile, MAX_REPLY, MachineInfo, ReplyProblem, Signature,
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pass,
    /// Not proven wrong, but not proven right either; the detail says what to do.
    Warn,
    Fail,
}

/// The result, with a detail that names what was found or the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub detail: String,
}

/// Why no reply was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not an https:// URL")]
    NotHttps,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the reply is larger than {} KiB", MAX_REPLY / 1024)]
    TooLarge,
    /// The request could not be made (signing it, building the client).
    #[error("{0}")]
    Local(String),
}

/// The URL as shown to the operator: without a query or user name, where MDMs put enrollment
/// tokens.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let mut s = u.to_string();
            if had_query {
                s.push_str("?\u{2026}");
            }
            s
        }
        Err(_) => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

/// Sends the enrollment request to `url` and reads the reply (status, body), bounded in size
/// and, as a whole, in time.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Fetched {
    if !url.starts_with("https://") {
        return Err(FetchError::NotHttps);
    }
    let exchange = async {
        let mut response = client
            .post(url)
            .header(reqwest::header::USER_AGENT, enrollment::USER_AGENT)
            .header(
                reqwest::header::CONTENT_TYPE,
                enrollment::REQUEST_CONTENT_TYPE,
            )
            .body(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status().as_u16();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_REPLY as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut reply = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if reply.len() + chunk.len() > MAX_REPLY {
                return Err(FetchError::TooLarge);
            }
            reply.extend_from_slice(&chunk);
        }
        Ok((status, reply))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

/// reqwest's own text is "error sending request"; the chain of causes says what failed, and a
/// rustls error in it makes it a TLS failure.
fn request_error(e: reqwest::Error) -> FetchError {
    let mut why = e.to_string();
    let mut tls = false;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        tls |= s.downcast_ref::<rustls::Error>().is_some()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        why = format!("{why}: {s}");
        source = s.source();
    }
    if tls {
        FetchError::Tls(why)
    } else {
        FetchError::Unreachable(why)
    }
}

/// The reply's status and body, or why there is none.
pub type Fetched = Result<(u16, Vec<u8>), FetchError>;

/// What the check reports for `url` (shown without its query), given what was fetched.
pub fn finding(url: &str, fetched: Fetched, version_sent: &str) -> Finding {
    let url = shown_url(url);
    let fail = |detail: String| Finding {
        level: Level::Fail,
        detail,
    };
    let (status, body) = match fetched {
        Ok(reply) => reply,
        Err(e) => {
            let next = match &e {
                FetchError::NotHttps => "an iPad fetches its enrollment profile over HTTPS only: \
                     set mdm.enrollment_url to the https:// URL the MDM gives"
                    .to_owned(),
                FetchError::Tls(_) => "the station must trust the server's certificate: a public \
                     CA, or the MDM's CA in activation.extra_ca_file (and in \
                     mdm.anchor_certificates for the iPads)"
                    .to_owned(),
                FetchError::Unreachable(_) | FetchError::Timeout(_) => {
                    "check the host name in mdm.enrollment_url, this station's network and \
                     firewall"
                        .to_owned()
                }
                FetchError::TooLarge => "that is not an enrollment profile: check \
                     mdm.enrollment_url"
                    .to_owned(),
                FetchError::Local(_) => "run the check again; report it if it persists".into(),
            };
            return fail(format!("{url}: {e}: {next}"));
        }
    };
    match enrollment::judge_reply(status, &body, version_sent) {
        Ok(profile) => found(&url, &profile),
        Err(problem) => {
            let next = next_step(&problem);
            Finding {
                level: if problem.is_warning() {
                    Level::Warn
                } else {
                    Level::Fail
                },
                detail: format!("{url}: {problem}: {next}"),
            }
        }
    }
}

/// The pass line: the MDM found, and who signed it.
fn found(url: &str, profile: &EnrollmentProfile) -> Finding {
    let signer = profile.signer.as_deref().unwrap_or("an unnamed signer");
    let (level, signed) = match &profile.signature {
        Signature::Verified => (Level::Pass, format!("signed by {signer}")),
        Signature::NotChecked(why) => (
            Level::Warn,
            format!(
                "signed by {signer}, but {why}: cartprep cannot check this signature; \
                 the iPad checks it itself"
            ),
        ),
    };
    Finding {
        level,
        detail: format!(
            "{url}: MDM payload found (server {}, topic {}); {signed}",
            profile.mdm.server_url, profile.mdm.topic
        ),
    }
}

/// What to do about a reply an iPad would not enroll with.
fn next_step(problem: &ReplyProblem) -> &'static str {
    match problem {
        ReplyProblem::SoftwareUpdateRequired { .. } => {
            "iPads older than the MDM's minimum update in Setup Assistant before they enroll: \
             keep them on power and Wi-Fi"
        }
        ReplyProblem::Refused { .. } => {
            "the MDM may refuse any request not signed by a real iPad or for a device it does \
             not know, which a station cannot imitate; prepare one iPad, finish Setup Assistant \
             and check that `cartprep ledger show SERIAL` says enrolled"
        }
        ReplyProblem::Status { status: 404, .. } => {
            "no enrollment profile at this address: copy the enrollment URL for Apple \
             Configurator or Automated Device Enrollment from the MDM into mdm.enrollment_url"
        }
        ReplyProblem::Status { status, .. } if *status >= 500 => {
            "the MDM failed on the request: look at its log (some MDMs answer 500 to a request \
             not signed by a real iPad), or try again later"
        }
        ReplyProblem::Status { .. } => {
            "an iPad enrolls only on HTTP 200: check mdm.enrollment_url against the enrollment \
             URL the MDM gives"
        }
        ReplyProblem::Unsigned => {
            "an iPad rejects an unsigned enrollment profile (Invalid Profile): turn on profile \
             signing in the MDM, or use its signed enrollment URL"
        }
        ReplyProblem::BadSignature(_) => {
            "an iPad rejects it: check the MDM's signing certificate, and that no proxy between \
             here and the MDM changes the reply"
        }
        ReplyProblem::NotAProfile(_) => {
            "is mdm.enrollment_url the URL a device enrolls with (not a web page for people)? \
             Copy it from the MDM's enrollment settings"
        }
        ReplyProblem::NoMdmPayload(_) | ReplyProblem::IncompleteMdmPayload(_) => {
            "this profile does not enroll an iPad in an MDM: use the MDM's enrollment URL for \
             Apple Configurator or Automated Device Enrollment"
        }
    }
}

/// Sends the request a station can make in place of an iPad to `url` and judges the reply.
/// `language` goes into the `MachineInfo`.
pub async fn check(
    client: &reqwest::Client,
    url: &str,
    language: &str,
    timeout: Duration,
) -> Finding {
    let info = MachineInfo::station_stand_in(language);
    // A throwaway signer: the station has no device identity, and the organisation's
    // supervision identity has no business in an MDM's logs.
    let signed = {
        let info = info.clone();
        tokio::task::spawn_blocking(move || {
            let signer = SupervisionIdentity::create("cartprep check")?;
            info.signed(&signer)
        })
        .await
    };
    let fetched = match signed {
        Ok(Ok(body)) => fetch(client, url, body, timeout).await,
        Ok(Err(e)) => Err(FetchError::Local(format!("signing the request: {e}"))),
        Err(e) => Err(FetchError::Local(format!("signing the request: {e}"))),
    };
    finding(url, fetched, &info.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mdm.example.org/enroll?token=SECRET";

    fn detail(fetched: Fetched) -> Finding {
        finding(URL, fetched, "22A3354")
    }

    #[test]
    fn enrollment_tokens_in_the_url_are_not_shown() {
        assert_eq!(shown_url(URL), "https://mdm.example.org/enroll?\u{2026}");
        assert_eq!(
            shown_url("https://user:pw@mdm.example.org/e"),
            "https://mdm.example.org/e"
        );
        assert_eq!(shown_url("https://x.org/e"), "https://x.org/e");
        let f = detail(Ok((404, b"token SECRET unknown".to_vec())));
        assert!(
            f.detail
                .starts_with("https://mdm.example.org/enroll?\u{2026}: HTTP 404")
        );
    }

    #[test]
    fn each_outcome_has_its_level_and_next_step() {
        let cases: Vec<(Fetched, Level, &str)> = vec![
            (Ok((404, vec![])), Level::Fail, "copy the enrollment URL"),
            (Ok((500, vec![])), Level::Fail, "look at its log"),
            (Ok((302, vec![])), Level::Fail, "only on HTTP 200"),
            (Ok((403, vec![])), Level::Warn, "not signed by a real iPad"),
            (Ok((401, vec![])), Level::Warn, "cartprep ledger show"),
            (
                Ok((403, br#"{"code":"com.apple.softwareupdate.required"}"#.to_vec())),
                Level::Warn,
                "update in Setup Assistant",
            ),
            (
                Ok((200, b"<?xml version=\"1.0\"?><plist><dict><key>PayloadType</key><string>Configuration</string></dict></plist>".to_vec())),
                Level::Fail,
                "an iPad rejects an unsigned enrollment profile (Invalid Profile)",
            ),
            (Ok((200, b"<html/>".to_vec())), Level::Fail, "not a web page"),
            (
                Err(FetchError::Tls("invalid peer certificate: UnknownIssuer".into())),
                Level::Fail,
                "activation.extra_ca_file",
            ),
            (
                Err(FetchError::Unreachable("connection refused".into())),
                Level::Fail,
                "check the host name",
            ),
            (Err(FetchError::Timeout(Duration::from_secs(10))), Level::Fail, "no answer within 10 s"),
            (Err(FetchError::NotHttps), Level::Fail, "over HTTPS only"),
            (Err(FetchError::TooLarge), Level::Fail, "not an enrollment profile"),
        ];
        for (fetched, level, needle) in cases {
            let what = format!("{fetched:?}");
            let f = detail(fetched);
            assert_eq!(f.level, level, "{what}: {f:?}");
            assert!(f.detail.contains(needle), "{what}: {}", f.detail);
        }
    }

    #[test]
    fn a_signed_enrollment_profile_passes_naming_the_mdm_and_the_signer() {
        let mut mdm = plist::Dictionary::new();
        mdm.insert("PayloadType".into(), "com.apple.mdm".into());
        mdm.insert("ServerURL".into(), "https://mdm.example.org/server".into());
        mdm.insert("Topic".into(), "com.apple.mgmt.External.42".into());
        let mut top = plist::Dictionary::new();
        top.insert("PayloadType".into(), "Configuration".into());
        top.insert("PayloadIdentifier".into(), "org.example.enroll".into());
        top.insert(
            "PayloadContent".into(),
            plist::Value::Array(vec![mdm.into()]),
        );
        let mut xml = Vec::new();
        plist::to_writer_xml(&mut xml, &top).unwrap();
        let signer = SupervisionIdentity::create("Example MDM").unwrap();
        let reply = profiles::sign_attached(&signer, &xml).unwrap();
        let f = detail(Ok((200, reply)));
        assert_eq!(f.level, Level::Pass, "{f:?}");
        assert!(
            f.detail.contains(
                "MDM payload found (server https://mdm.example.org/server, topic \
                 com.apple.mgmt.External.42); signed by "
            ) && f.detail.contains("Example MDM"),
            "{}",
            f.detail
        );
    }
}
