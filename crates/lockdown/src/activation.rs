//! Activation (`docs/protocol.md` §4, session flow): mobileactivationd on the device (one
//! request per service connection) and the HTTPS exchange with the activation server, done by
//! the host, so the iPad needs no network.
//!
//! 1. `CreateTunnel1SessionInfoRequest` → session info dict;
//! 2. `POST <base>drmHandshake` with it as a plist → handshake response;
//! 3. `CreateTunnel1ActivationInfoRequest {Value: <handshake response>}` → activation-info dict;
//! 4. `POST <base>deviceActivation`, form field `activation-info` = XML plist of it;
//! 5. `application/x-buddyml` (or an HTML Activation Lock form) → [`ActivationError::ActivationLocked`];
//!    `text/xml` → the activation record;
//! 6. `HandleActivationInfoWithSessionRequest {Value: <record>, ActivationResponseHeaders}`;
//! 7. lockdown `SetValue ActivationStateAcknowledged = true` in a session (a refusal is only
//!    logged: go-ios skips this step);
//! 8. the state is polled until `Activated` (bounded).
//!
//! Every device exchange and every HTTP request has a deadline.

use std::time::{Duration, Instant};

use crate::provider::UsbmuxProvider;
use idevice::Idevice;
use plist::{Dictionary, Value};

use crate::error::LockdownError;
use crate::session::timed;
use crate::supervised_pairing::{read_plist, send_plist};

/// Apple's activation server.
pub const DEFAULT_ACTIVATION_URL: &str = "https://albert.apple.com/deviceservices/";
/// What go-ios and libideviceactivation send.
pub const USER_AGENT: &str = "iOS Device Activator (MobileActivation-592.103.2)";
/// The lockdown service.
pub const SERVICE_NAME: &str = "com.apple.mobileactivationd";
/// Largest HTTP body accepted from the activation server.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Bounds of a plist in an activation server's reply.
const BODY_LIMITS: usbmux::Limits = usbmux::Limits::new(MAX_BODY);
/// Characters of a server body kept in errors.
const EXCERPT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "the iPad is Activation Locked: the activation server asks for the owner's Apple ID \
         (remove it from Find My, or use the Activation Lock bypass code)"
    )]
    ActivationLocked,
    #[error("the activation server answered HTTP {status}: {body}")]
    ServerError { status: u16, body: String },
    #[error("mobileactivationd refused {request}: {name}")]
    DeviceRefused { request: &'static str, name: String },
    #[error("{operation} did not finish within {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("activation server: {0}")]
    Http(String),
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    #[error("the device still reports ActivationState {state} after activation")]
    NotActivated { state: String },
    #[error(transparent)]
    Lockdown(#[from] LockdownError),
}

impl ActivationError {
    /// Worth another try: the server or the device was slow or unreachable. Activation Lock
    /// and refusals are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ActivationError::Timeout { .. }
            | ActivationError::Http(_)
            | ActivationError::ServerError { .. }
            | ActivationError::MalformedReply(_) => true,
            ActivationError::Lockdown(l) => l.is_transient(),
            _ => false,
        }
    }
}

/// Where and how to reach the activation server.
#[derive(Debug, Clone)]
pub struct ActivationServer {
    /// The folder holding `drmHandshake` and `deviceActivation` (a missing trailing slash is
    /// added).
    pub base_url: reqwest::Url,
    /// Trusted in addition to the built-in Mozilla roots: PEM (one or more certificates) or
    /// DER.
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// For each HTTP request, connection to last body byte.
    pub timeout: Duration,
}

impl Default for ActivationServer {
    fn default() -> Self {
        ActivationServer {
            base_url: reqwest::Url::parse(DEFAULT_ACTIVATION_URL).expect("a valid constant URL"),
            extra_root_certificates: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// The activation server's answer to `deviceActivation`.
#[derive(Clone)]
pub struct ActivationRecord {
    /// The body, as received (a plist).
    pub body: Vec<u8>,
    /// The response headers, one value each, names in their usual capitalisation.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for ActivationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationRecord")
            .field("body_len", &self.body.len())
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// "content-type" → "Content-Type" (hyper lowercases names; servers send them capitalised).
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(EXCERPT).collect();
    if text.chars().count() > EXCERPT {
        out.push('…');
    }
    out
}

fn media_type(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether an HTML page is the Activation Lock / Apple ID form.
fn is_lock_page(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    [
        "xmlui",
        "buddyml",
        "activation lock",
        "activation-lock",
        "activationlock",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// What `deviceActivation`'s answer means (status, media type, body).
fn classify_activation_response(
    status: u16,
    media_type: &str,
    body: &[u8],
) -> Result<(), ActivationError> {
    match media_type {
        "application/x-buddyml" => return Err(ActivationError::ActivationLocked),
        "text/html" if is_lock_page(body) => return Err(ActivationError::ActivationLocked),
        _ => {}
    }
    if !(200..300).contains(&status) {
        return Err(ActivationError::ServerError {
            status,
            body: excerpt(body),
        });
    }
    match media_type {
        "text/xml" | "application/xml" | "application/x-apple-plist" => {
            match usbmux::bounded_plist::dictionary_from_bytes(body, BODY_LIMITS) {
                Ok(_) => Ok(()),
                Err(_) => Err(ActivationError::MalformedReply(format!(
                    "the activation record is not a plist dictionary: {}",
                    excerpt(body)
                ))),
            }
        }
        other => Err(ActivationError::ServerError {
            status,
            body: format!("unexpected Content-Type {other:?}: {}", excerpt(body)),
        }),
    }
}

fn to_xml(dict: &Dictionary) -> Result<Vec<u8>, ActivationError> {
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, dict).map_err(|e| ActivationError::Http(e.to_string()))?;
    Ok(out)
}

impl ActivationServer {
    pub fn new(base_url: &str) -> Result<Self, ActivationError> {
        let base_url =
            reqwest::Url::parse(base_url).map_err(|e| ActivationError::Http(e.to_string()))?;
        Ok(ActivationServer {
            base_url,
            ..Default::default()
        })
    }

    fn endpoint(&self, name: &str) -> Result<reqwest::Url, ActivationError> {
        let mut base = self.base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.join(name)
            .map_err(|e| ActivationError::Http(e.to_string()))
    }

    /// The HTTPS client: rustls with ring, Mozilla roots plus the extra ones.
    pub fn client(&self) -> Result<reqwest::Client, ActivationError> {
        // Idempotent: fails harmlessly when a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        for cert in &self.extra_root_certificates {
            let is_pem = cert
                .windows(b"-----BEGIN".len())
                .any(|w| w == b"-----BEGIN");
            if is_pem {
                let certs = reqwest::Certificate::from_pem_bundle(cert)
                    .map_err(|e| ActivationError::Http(format!("extra root certificate: {e}")))?;
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            } else {
                let c = reqwest::Certificate::from_der(cert)
                    .map_err(|e| ActivationError::Http(format!("extra root certificate: {e}")))?;
                builder = builder.add_root_certificate(c);
            }
        }
        builder
            .build()
            .map_err(|e| ActivationError::Http(e.to_string()))
    }

    fn http_error(&self, operation: &'static str, e: reqwest::Error) -> ActivationError {
        if e.is_timeout() {
            ActivationError::Timeout {
                operation,
                after: self.timeout,
            }
        } else {
            // The chain says why (refused, certificate unknown…).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            ActivationError::Http(format!("{operation}: {text}"))
        }
    }

    /// Sends the request and reads the whole body (bounded), all within `timeout`.
    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), ActivationError> {
        let exchange = async {
            let mut response = request
                .send()
                .await
                .map_err(|e| self.http_error(operation, e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.http_error(operation, e))?
            {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ActivationError::Http(format!(
                        "{operation}: the body is larger than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        };
        // reqwest's own timeout covers this too; the outer one is a backstop.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), exchange).await {
            Ok(r) => r,
            Err(_) => Err(ActivationError::Timeout {
                operation,
                after: self.timeout,
            }),
        }
    }

    /// `POST <base>drmHandshake` with the session info; returns the response body.
    pub async fn drm_handshake(
        &self,
        client: &reqwest::Client,
        session_info: &Dictionary,
    ) -> Result<Vec<u8>, ActivationError> {
        let request = client
            .post(self.endpoint("drmHandshake")?)
            .header(reqwest::header::CONTENT_TYPE, "application/x-apple-plist")
            .header(reqwest::header::ACCEPT, "application/xml")
            .body(to_xml(session_info)?);
        let (status, _, body) = self.send("drmHandshake", request).await?;
        if !(200..300).contains(&status) {
            return Err(ActivationError::ServerError {
                status,
                body: excerpt(&body),
            });
        }
        if body.is_empty() {
            return Err(ActivationError::MalformedReply(
                "drmHandshake answered with an empty body".into(),
            ));
        }
        Ok(body)
    }

    /// `POST <base>deviceActivation` with `activation-info` = XML plist of the dict.
    pub async fn device_activation(
        &self,
        client: &reqwest::Client,
        activation_info: &Dictionary,
    ) -> Result<ActivationRecord, ActivationError> {
        let xml = String::from_utf8(to_xml(activation_info)?)
            .map_err(|e| ActivationError::Http(e.to_string()))?;
        let request = client
            .post(self.endpoint("deviceActivation")?)
            .form(&[("activation-info", xml)]);
        let (status, headers, body) = self.send("deviceActivation", request).await?;
        classify_activation_response(status, &media_type(&headers), &body)?;
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    header_case(name.as_str()),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(ActivationRecord { body, headers })
    }
}

// ---------------------------------------------------------------------------------------------
// mobileactivationd

/// One service connection (the daemon takes one request per connection).
struct Connection {
    idevice: Idevice,
}

/// mobileactivationd, each request on a new connection, each step with a deadline.
pub struct MobileActivationd<'a> {
    provider: &'a UsbmuxProvider,
    timeout: Duration,
}

impl std::fmt::Debug for MobileActivationd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MobileActivationd")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn error_name(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Dictionary(d) => ["ErrorString", "ErrorDescription", "Description", "Error"]
            .iter()
            .find_map(|k| d.get(k).and_then(Value::as_string))
            .map(str::to_owned)
            .unwrap_or_else(|| "error (no description)".into()),
        Value::Integer(i) => i.to_string(),
        _ => "error (unreadable)".into(),
    }
}

impl<'a> MobileActivationd<'a> {
    /// Default deadline for each exchange.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(provider: &'a UsbmuxProvider) -> Self {
        Self::with_timeout(provider, Self::DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(provider: &'a UsbmuxProvider, timeout: Duration) -> Self {
        MobileActivationd { provider, timeout }
    }

    /// Sends `{Command, Value?, …extra}` on a new connection and returns the reply; an `Error`
    /// in it becomes [`ActivationError::DeviceRefused`].
    async fn command(
        &self,
        command: &'static str,
        value: Option<Value>,
        extra: Dictionary,
    ) -> Result<Dictionary, ActivationError> {
        let mut conn = match tokio::time::timeout(
            self.timeout,
            crate::services::connect_plist_service(self.provider, SERVICE_NAME, self.timeout),
        )
        .await
        {
            Ok(r) => Connection { idevice: r? },
            Err(_) => {
                return Err(ActivationError::Timeout {
                    operation: command,
                    after: self.timeout,
                });
            }
        };
        let mut request = Dictionary::new();
        request.insert("Command".into(), command.into());
        if let Some(v) = value {
            request.insert("Value".into(), v);
        }
        for (k, v) in extra {
            request.insert(k, v);
        }
        send_plist(&mut conn.idevice, command, &request, self.timeout)
            .await
            .map_err(|e| timeout_named(command, e))?;
        let reply = read_plist(&mut conn.idevice, command, self.timeout)
            .await
            .map_err(|e| timeout_named(command, e))?;
        if let Some(err) = reply.get("Error") {
            return Err(ActivationError::DeviceRefused {
                request: command,
                name: error_name(err),
            });
        }
        Ok(reply)
    }

    fn value_dict(command: &str, mut reply: Dictionary) -> Result<Dictionary, ActivationError> {
        match reply.remove("Value") {
            Some(Value::Dictionary(d)) => Ok(d),
            Some(_) => Err(ActivationError::MalformedReply(format!(
                "{command}: Value is not a dictionary"
            ))),
            None => Err(ActivationError::MalformedReply(format!(
                "{command}: no Value"
            ))),
        }
    }

    /// `Unactivated`, `Activated`, …: mobileactivationd's answer, else lockdown's
    /// `ActivationState` (as idevice's client does, with every reply checked within bounds).
    pub async fn state(&self) -> Result<String, ActivationError> {
        const C: &str = "GetActivationStateRequest";
        if let Ok(reply) = self.command(C, None, Dictionary::new()).await
            && let Some(state) = reply.get("Value").and_then(Value::as_string)
        {
            return Ok(state.to_owned());
        }
        let mut lockdown = crate::services::lockdown_session(self.provider, self.timeout).await?;
        match timed(
            "GetValue",
            self.timeout,
            lockdown.get_value(Some("ActivationState"), None),
        )
        .await?
        {
            Value::String(state) => Ok(state),
            _ => Err(ActivationError::MalformedReply(
                "ActivationState is not a string".into(),
            )),
        }
    }

    /// `CreateTunnel1SessionInfoRequest`: the dict to send to `drmHandshake`.
    pub async fn create_session_info(&self) -> Result<Dictionary, ActivationError> {
        const C: &str = "CreateTunnel1SessionInfoRequest";
        Self::value_dict(C, self.command(C, None, Dictionary::new()).await?)
    }

    /// `CreateTunnel1ActivationInfoRequest` with the handshake response: the activation-info
    /// dict.
    pub async fn create_activation_info_with_session(
        &self,
        handshake_response: &[u8],
    ) -> Result<Dictionary, ActivationError> {
        const C: &str = "CreateTunnel1ActivationInfoRequest";
        let reply = self
            .command(
                C,
                Some(Value::Data(handshake_response.to_vec())),
                Dictionary::new(),
            )
            .await?;
        Self::value_dict(C, reply)
    }

    /// `HandleActivationInfoWithSessionRequest` with the record and the response headers.
    pub async fn handle_activation_info_with_session(
        &self,
        record: &ActivationRecord,
    ) -> Result<(), ActivationError> {
        let headers: Dictionary = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut extra = Dictionary::new();
        extra.insert(
            "ActivationResponseHeaders".into(),
            Value::Dictionary(headers),
        );
        self.command(
            "HandleActivationInfoWithSessionRequest",
            Some(Value::Data(record.body.clone())),
            extra,
        )
        .await
        .map(|_| ())
    }
}

fn timeout_named(command: &'static str, e: LockdownError) -> ActivationError {
    match e {
        LockdownError::Timeout { after, .. } => ActivationError::Timeout {
            operation: command,
            after,
        },
        other => ActivationError::Lockdown(other),
    }
}

/// Lockdown `SetValue ActivationStateAcknowledged = true`, in a session.
pub async fn acknowledge_activation(
    provider: &UsbmuxProvider,
    timeout: Duration,
) -> Result<(), ActivationError> {
    let mut lockdown = crate::services::lockdown_session(provider, timeout).await?;
    timed(
        "SetValue",
        timeout,
        lockdown.set_value("ActivationStateAcknowledged", Value::Boolean(true), None),
    )
    .await?;
    Ok(())
}

/// How long the device side may take.
#[derive(Debug, Clone)]
pub struct ActivationOptions {
    /// Each mobileactivationd / lockdown exchange.
    pub device_timeout: Duration,
    /// How long to wait for `Activated` after the record was handed over.
    pub activated_wait: Duration,
    pub poll_every: Duration,
}

impl Default for ActivationOptions {
    fn default() -> Self {
        ActivationOptions {
            device_timeout: MobileActivationd::DEFAULT_TIMEOUT,
            activated_wait: Duration::from_secs(30),
            poll_every: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationOutcome {
    /// It was activated before we started; nothing was sent.
    AlreadyActivated,
    /// Activated now.
    Activated,
}

/// Activates the device through `server` with default device timeouts.
pub async fn activate(
    provider: &UsbmuxProvider,
    server: &ActivationServer,
) -> Result<ActivationOutcome, ActivationError> {
    activate_with(provider, server, &ActivationOptions::default()).await
}

/// The whole session flow (module docs).
pub async fn activate_with(
    provider: &UsbmuxProvider,
    server: &ActivationServer,
    options: &ActivationOptions,
) -> Result<ActivationOutcome, ActivationError> {
    let device = MobileActivationd::with_timeout(provider, options.device_timeout);
    if device.state().await? == "Activated" {
        return Ok(ActivationOutcome::AlreadyActivated);
    }
    let client = server.client()?;
    let session_info = device.create_session_info().await?;
    let handshake = server.drm_handshake(&client, &session_info).await?;
    let activation_info = device
        .create_activation_info_with_session(&handshake)
        .await?;
    let record = server.device_activation(&client, &activation_info).await?;
    device.handle_activation_info_with_session(&record).await?;
    // Best effort (go-ios skips it): a refusal is logged, the state poll below decides.
    match acknowledge_activation(provider, options.device_timeout).await {
        Ok(()) => {}
        Err(ActivationError::Lockdown(LockdownError::Device { name, .. })) => {
            tracing::warn!("the device refused ActivationStateAcknowledged: {name}");
        }
        Err(e) => return Err(e),
    }

    let started = Instant::now();
    loop {
        let state = device.state().await?;
        if state == "Activated" {
            tracing::info!("device activated");
            return Ok(ActivationOutcome::Activated);
        }
        if started.elapsed() + options.poll_every > options.activated_wait {
            return Err(ActivationError::NotActivated { state });
        }
        tokio::time::sleep(options.poll_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_get_their_usual_case() {
        assert_eq!(header_case("content-type"), "Content-Type");
        assert_eq!(header_case("x-apple-i-md-m"), "X-Apple-I-Md-M");
        assert_eq!(header_case("server"), "Server");
    }

    #[test]
    fn endpoints_join_under_the_base_folder() {
        let s = ActivationServer::new("https://127.0.0.1:4443/deviceservices").unwrap();
        assert_eq!(
            s.endpoint("drmHandshake").unwrap().as_str(),
            "https://127.0.0.1:4443/deviceservices/drmHandshake"
        );
        let d = ActivationServer::default();
        assert_eq!(
            d.endpoint("deviceActivation").unwrap().as_str(),
            "https://albert.apple.com/deviceservices/deviceActivation"
        );
    }

    #[test]
    fn responses_are_classified() {
        let record = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>ActivationRecord</key><dict/></dict></plist>"#;
        assert!(classify_activation_response(200, "text/xml", record).is_ok());
        assert!(matches!(
            classify_activation_response(200, "application/x-buddyml", b"<xmlui/>"),
            Err(ActivationError::ActivationLocked)
        ));
        assert!(matches!(
            classify_activation_response(
                200,
                "text/html",
                b"<html><body><form>Activation Lock</form></body></html>"
            ),
            Err(ActivationError::ActivationLocked)
        ));
        assert!(matches!(
            classify_activation_response(200, "text/html", b"<html>oops</html>"),
            Err(ActivationError::ServerError { status: 200, .. })
        ));
        match classify_activation_response(500, "text/plain", b"boom") {
            Err(ActivationError::ServerError { status, body }) => {
                assert_eq!(status, 500);
                assert_eq!(body, "boom");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_activation_response(200, "text/xml", b"not a plist"),
            Err(ActivationError::MalformedReply(_))
        ));
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = vec![b'a'; 2000];
        assert_eq!(excerpt(&long).chars().count(), EXCERPT + 1);
    }

    #[test]
    fn device_error_names_are_kept() {
        assert_eq!(error_name(&"NotAllowed".into()), "NotAllowed");
        let mut d = Dictionary::new();
        d.insert("ErrorDescription".into(), "Failed to handle".into());
        assert_eq!(error_name(&Value::Dictionary(d)), "Failed to handle");
    }
}
