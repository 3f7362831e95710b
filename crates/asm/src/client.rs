//! The client: one method per documented request, an access token cached until it expires,
//! bounded retries, and a deadline on every request.
//!
//! Retries: HTTP 429 waits what `Retry-After` says (up to [`RetryPolicy::max_wait`]); 5xx and
//! connection failures back off; a 401 on an API request drops the cached token and asks for
//! a new one once (the token may have expired early, or been revoked). Everything else is
//! returned as it is.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::assertion::client_assertion;
use crate::model::{Activity, ActivityState, Device, Linkage, One, Page, Server, ServerId};
use crate::{AsmError, AsmSettings};

/// Largest answer read (a page of 1000 devices is well under this).
pub const MAX_BODY: usize = 8 << 20;
/// Longest list followed, in pages: a server that keeps answering "next" cannot loop us.
pub const MAX_PAGES: usize = 1000;
/// Devices or servers asked for per page.
pub const PAGE_LIMIT: u32 = 100;
/// A token this close to its expiry is renewed before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// How hard the client tries before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request (the first included).
    pub attempts: u32,
    /// First pause after a 5xx or a connection failure; doubled each time.
    pub backoff: Duration,
    /// Longest pause; a `Retry-After` longer than this is returned as [`AsmError::RateLimited`].
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

struct Token {
    value: Zeroizing<String>,
    expires: Instant,
}

/// A client for one API account.
pub struct AsmClient {
    settings: AsmSettings,
    http: reqwest::Client,
    token: Mutex<Option<Token>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for AsmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsmClient")
            .field("kind", &self.settings.kind)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl AsmClient {
    pub fn new(settings: AsmSettings) -> Result<AsmClient, AsmError> {
        Self::with_retry(settings, RetryPolicy::default())
    }

    pub fn with_retry(settings: AsmSettings, retry: RetryPolicy) -> Result<AsmClient, AsmError> {
        for (what, url) in [
            ("api_url", settings.api_url()),
            ("token_url", settings.token_url().to_owned()),
        ] {
            if !url.starts_with("https://") {
                return Err(AsmError::Config(format!(
                    "{what} must be an https:// address, not {url:?}"
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &settings.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AsmError::Config(format!("extra CA certificate: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| AsmError::Config(format!("HTTP client: {e}")))?;
        Ok(AsmClient {
            settings,
            http,
            token: Mutex::new(None),
            retry,
        })
    }

    pub fn settings(&self) -> &AsmSettings {
        &self.settings
    }

    /// Every device in the organization, page after page.
    pub async fn devices(&self) -> Result<Vec<Device>, AsmError> {
        self.list("v1/orgDevices").await
    }

    /// One device by serial number; `None` when the organization does not hold it.
    pub async fn device(&self, serial: &str) -> Result<Option<Device>, AsmError> {
        let path = format!("v1/orgDevices/{}", path_segment(serial)?);
        match self.get::<One<Device>>(&path, &[]).await {
            Ok(one) => Ok(Some(one.data)),
            Err(AsmError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every device management service of the organization.
    pub async fn servers(&self) -> Result<Vec<Server>, AsmError> {
        self.list("v1/mdmServers").await
    }

    /// The service named `name` (exactly as shown in Apple School Manager), or
    /// [`AsmError::ServerNotFound`] listing the names there are.
    pub async fn server_named(&self, name: &str) -> Result<Server, AsmError> {
        let servers = self.servers().await?;
        if let Some(s) = servers.iter().find(|s| s.name() == name) {
            return Ok(s.clone());
        }
        Err(AsmError::ServerNotFound {
            wanted: name.to_owned(),
            found: servers.iter().map(|s| s.name().to_owned()).collect(),
        })
    }

    /// The service a device is assigned to; `None` when it is unassigned.
    pub async fn assigned_server(&self, serial: &str) -> Result<Option<ServerId>, AsmError> {
        let path = format!(
            "v1/orgDevices/{}/relationships/assignedServer",
            path_segment(serial)?
        );
        let linkage: Linkage = self.get(&path, &[]).await?;
        Ok(linkage.data.map(|d| ServerId(d.id)))
    }

    /// Creates an ASSIGN_DEVICES activity: these serials to `server`.
    pub async fn assign(
        &self,
        serials: &[String],
        server: &ServerId,
    ) -> Result<Activity, AsmError> {
        if serials.is_empty() {
            return Err(AsmError::Config("no serial to assign".into()));
        }
        let devices: Vec<_> = serials
            .iter()
            .map(|s| serde_json::json!({"type": "orgDevices", "id": s}))
            .collect();
        let body = serde_json::json!({
            "data": {
                "type": "orgDeviceActivities",
                "attributes": {"activityType": "ASSIGN_DEVICES"},
                "relationships": {
                    "mdmServer": {"data": {"type": "mdmServers", "id": server.0}},
                    "devices": {"data": devices}
                }
            }
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| AsmError::Protocol(e.to_string()))?;
        let one: One<Activity> = self
            .call(Method::POST, "v1/orgDeviceActivities", &[], Some(bytes))
            .await?;
        Ok(one.data)
    }

    /// An activity as it is now.
    pub async fn activity(&self, id: &str) -> Result<Activity, AsmError> {
        let path = format!("v1/orgDeviceActivities/{}", path_segment(id)?);
        Ok(self.get::<One<Activity>>(&path, &[]).await?.data)
    }

    /// Polls an activity every `every` until it is no longer in progress, at most `polls`
    /// times; still in progress after that is returned as such.
    pub async fn wait_for(
        &self,
        id: &str,
        every: Duration,
        polls: u32,
    ) -> Result<ActivityState, AsmError> {
        let mut state = ActivityState::InProgress;
        for i in 0..polls.max(1) {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            state = self.activity(id).await?.state();
            if state != ActivityState::InProgress {
                break;
            }
        }
        Ok(state)
    }

    async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, AsmError> {
        let mut out = Vec::new();
        let limit = PAGE_LIMIT.to_string();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", limit.clone())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page: Page<T> = self.get(path, &query).await?;
            out.extend(page.data);
            cursor = page
                .meta
                .paging
                .next_cursor
                .or_else(|| page.links.next.as_deref().and_then(cursor_of));
            if cursor.is_none() {
                return Ok(out);
            }
        }
        Err(AsmError::Protocol(format!(
            "{path}: more than {MAX_PAGES} pages"
        )))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, AsmError> {
        self.call(Method::GET, path, query, None).await
    }

    /// One API request with the token, retried as the policy says, parsed as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, AsmError> {
        let url = format!("{}{path}", self.settings.api_url());
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .bearer_auth(token.as_str());
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let outcome = self.send(req).await;
            let (status, headers, bytes) = match outcome {
                Ok(answer) => answer,
                Err(e) => {
                    self.pause_or_give_up(attempt, None, e).await?;
                    continue;
                }
            };
            match status {
                s if s.is_success() => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| AsmError::Protocol(format!("{path}: {e}")));
                }
                StatusCode::UNAUTHORIZED if !refreshed => {
                    // Expired early or revoked: one fresh token, then give up.
                    refreshed = true;
                    attempt -= 1;
                    *self.token.lock().await = None;
                    tracing::debug!("access token refused; asking for a new one");
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(AsmError::Auth {
                        code: "HTTP 401".into(),
                        detail: " on an API request with a fresh token".into(),
                    });
                }
                StatusCode::FORBIDDEN => return Err(AsmError::Forbidden),
                StatusCode::NOT_FOUND => return Err(AsmError::NotFound(path.to_owned())),
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&headers);
                    let e = AsmError::RateLimited { retry_after: wait };
                    self.pause_or_give_up(attempt, Some(wait), e).await?;
                }
                s if s.is_server_error() => {
                    let e = AsmError::Server {
                        status: s.as_u16(),
                        detail: String::new(),
                    };
                    self.pause_or_give_up(attempt, None, e).await?;
                }
                s => {
                    return Err(AsmError::Server {
                        status: s.as_u16(),
                        detail: detail_of(&bytes),
                    });
                }
            }
        }
    }

    /// Waits before the next try, or returns `e` when tries are used up or the wait is too
    /// long.
    async fn pause_or_give_up(
        &self,
        attempt: u32,
        wait: Option<Duration>,
        e: AsmError,
    ) -> Result<(), AsmError> {
        if attempt >= self.retry.attempts {
            return Err(e);
        }
        let wait = match wait {
            Some(w) if w > self.retry.max_wait => return Err(e),
            Some(w) => w,
            None => {
                (self.retry.backoff * 2u32.saturating_pow(attempt - 1)).min(self.retry.max_wait)
            }
        };
        tracing::debug!("Apple School Manager: {e}; trying again in {wait:?}");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Sends and reads the whole answer, bounded in size.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), AsmError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| AsmError::Transport(without_url(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| AsmError::Transport(without_url(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(AsmError::Protocol(format!(
                    "answer larger than {} MiB",
                    MAX_BODY >> 20
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, headers, bytes))
    }

    /// The cached access token, or a new one.
    async fn token(&self) -> Result<Zeroizing<String>, AsmError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires > Instant::now() + TOKEN_MARGIN
        {
            return Ok(t.value.clone());
        }
        let t = self.new_token().await?;
        let value = t.value.clone();
        *cached = Some(t);
        Ok(value)
    }

    async fn new_token(&self) -> Result<Token, AsmError> {
        let s = &self.settings;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let assertion = Zeroizing::new(client_assertion(s, SystemTime::now())?);
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", s.client_id.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", s.kind.scope()),
            ];
            let req = self.http.post(s.token_url()).form(&form);
            let (status, headers, bytes) = match self.send(req).await {
                Ok(a) => a,
                Err(e) => {
                    self.pause_or_give_up(attempt, None, e).await?;
                    continue;
                }
            };
            match status {
                s if s.is_success() => {
                    let answer: TokenAnswer = serde_json::from_slice(&bytes)
                        .map_err(|e| AsmError::Protocol(format!("token answer: {e}")))?;
                    // Apple documents one hour; without expires_in, assume less.
                    let life = Duration::from_secs(answer.expires_in.unwrap_or(600).min(86_400));
                    return Ok(Token {
                        value: Zeroizing::new(answer.access_token),
                        expires: Instant::now() + life,
                    });
                }
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => {
                    let e: OAuthError = serde_json::from_slice(&bytes).unwrap_or_default();
                    let code = if e.error.is_empty() {
                        format!("HTTP {}", status.as_u16())
                    } else {
                        e.error
                    };
                    let detail = e
                        .error_description
                        .map(|d| format!(": {}", printable(&d)))
                        .unwrap_or_default();
                    return Err(AsmError::Auth { code, detail });
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&headers);
                    let e = AsmError::RateLimited { retry_after: wait };
                    self.pause_or_give_up(attempt, Some(wait), e).await?;
                }
                s if s.is_server_error() => {
                    let e = AsmError::Server {
                        status: s.as_u16(),
                        detail: " (token endpoint)".into(),
                    };
                    self.pause_or_give_up(attempt, None, e).await?;
                }
                s => {
                    return Err(AsmError::Server {
                        status: s.as_u16(),
                        detail: " (token endpoint)".into(),
                    });
                }
            }
        }
    }
}

/// `Retry-After` in seconds (RFC 9110 §10.2.3); an HTTP date or nothing counts as 1 s.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
}

/// The `cursor` parameter of a `links.next` URL.
fn cursor_of(next: &str) -> Option<String> {
    let query = next.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "cursor").then(|| v.to_owned())
    })
}

/// A serial or ID as one path segment: letters, digits and `-` only, so nothing can change the
/// path.
fn path_segment(s: &str) -> Result<&str, AsmError> {
    if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(s)
    } else {
        Err(AsmError::Config(format!(
            "{s:?} is not a serial number or ID"
        )))
    }
}

/// The first error's detail of a JSON:API error answer, for a message.
fn detail_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => return String::new(),
    };
    v.pointer("/errors/0/detail")
        .and_then(|d| d.as_str())
        .map(|d| format!(": {}", printable(d)))
        .unwrap_or_default()
}

/// Server text shortened and stripped of control characters before it reaches a log.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A transport error without the URL (which may carry a cursor, never a secret, but keeps
/// messages short).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_read_from_a_next_link() {
        assert_eq!(
            cursor_of("https://api-school.apple.com/v1/orgDevices?limit=100&cursor=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            cursor_of("https://api-school.apple.com/v1/orgDevices"),
            None
        );
    }

    #[test]
    fn only_plain_serials_become_path_segments() {
        assert!(path_segment("F9FZ1234ABCD").is_ok());
        assert!(path_segment("84d7f133-b4a4-41be").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a b"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_defaults_to_one() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("value"));
        assert_eq!(retry_after(&h), Duration::from_secs(7));
    }
}
