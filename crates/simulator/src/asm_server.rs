//! A fake Apple School Manager API (and its Apple Business twin) on loopback, over HTTPS with
//! its own CA: the OAuth token endpoint and the device, device management service and
//! device activity resources, as Apple documents them (see `docs/protocol.md`, Apple School
//! Manager API, and `docs/fidelity.md`, the fake Apple School Manager API).
//!
//! It checks what the real service checks that a client can get wrong: the client assertion's
//! ES256 signature against the API account's registered public key and its claims (issuer,
//! subject, audience, lifetime, key ID, one use of each `jti`), the bearer token and its
//! expiry, page limits. A scenario holds the organization's devices (some assigned elsewhere)
//! and services; switches make it rate limit (429 with `Retry-After`) or fail activities.
//!
//! It does not use cartprep's client: it is written from the documentation, so a mistake in
//! the client cannot hide here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::activation::ActivationAuthority;
use crate::activation_server::{certificates, form_field, tls_acceptor};
use crate::error::SimError;

/// The audience Apple's OAuth page gives for the client assertion.
pub const AUDIENCE: &str = "https://account.apple.com/auth/oauth2/v2/token";
/// Largest request body read.
const MAX_BODY: usize = 1 << 20;
/// Apple's documented default and largest page sizes.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Longest client assertion life Apple accepts (180 days).
const MAX_ASSERTION_LIFE: u64 = 180 * 24 * 3600;

/// A device the organization holds.
#[derive(Clone, Debug)]
pub struct AsmDevice {
    pub serial: String,
    pub product_type: String,
    /// The ID of the service it is assigned to.
    pub assigned_to: Option<String>,
}

/// A device management service.
#[derive(Clone, Debug)]
pub struct AsmService {
    pub id: String,
    pub name: String,
}

/// What the fake organization holds and how the API behaves.
#[derive(Clone, Debug)]
pub struct AsmScenario {
    /// `school.api` or `business.api`.
    pub scope: String,
    pub client_id: String,
    pub key_id: String,
    /// The API account's public key (SubjectPublicKeyInfo PEM).
    pub public_key_pem: String,
    pub services: Vec<AsmService>,
    pub devices: Vec<AsmDevice>,
    /// Access token lifetime (Apple: one hour).
    pub token_lifetime: Duration,
    /// Answer every n-th API request with 429.
    pub rate_limit_every: Option<u32>,
    pub retry_after: Duration,
    /// Activities naming one of these serials fail.
    pub failing_serials: HashSet<String>,
}

impl AsmScenario {
    pub fn new(client_id: &str, key_id: &str, public_key_pem: &str) -> AsmScenario {
        AsmScenario {
            scope: "school.api".into(),
            client_id: client_id.into(),
            key_id: key_id.into(),
            public_key_pem: public_key_pem.into(),
            services: Vec::new(),
            devices: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            rate_limit_every: None,
            retry_after: Duration::from_secs(1),
            failing_serials: HashSet::new(),
        }
    }
}

/// What the server saw, for tests and the demo.
#[derive(Clone, Debug, Default)]
pub struct AsmStats {
    pub tokens_issued: u32,
    pub assertions_refused: u32,
    pub expired_tokens_refused: u32,
    pub rate_limited: u32,
    /// Requests that came back before the `Retry-After` they were given.
    pub early_retries: u32,
    pub pages_served: u32,
    /// Every ASSIGN_DEVICES activity: (id, serials, service id).
    pub activities: Vec<(String, Vec<String>, String)>,
}

struct Activity {
    serials: Vec<String>,
    service: String,
    /// (status, subStatus) once polled.
    outcome: Option<(&'static str, &'static str)>,
}

struct State {
    scenario: AsmScenario,
    key: DecodingKey,
    tokens: HashMap<String, Instant>,
    jtis: HashSet<String>,
    requests: u32,
    blocked_until: Option<Instant>,
    activities: BTreeMap<String, Activity>,
    stats: AsmStats,
}

/// The running server.
pub struct AsmServer {
    /// Base URL of the API (`…/v1/…` hangs under it).
    pub api_url: String,
    pub token_url: String,
    pub ca_pem: Vec<u8>,
    state: Arc<Mutex<State>>,
    pub task: JoinHandle<()>,
}

impl AsmServer {
    pub fn stats(&self) -> AsmStats {
        self.lock().stats.clone()
    }

    /// Expires every access token issued so far (as an hour passing would).
    pub fn expire_tokens(&self) {
        let past = Instant::now();
        for t in self.lock().tokens.values_mut() {
            *t = past;
        }
    }

    /// The service a device is assigned to now.
    pub fn assigned(&self, serial: &str) -> Option<String> {
        let s = self.lock();
        s.scenario
            .devices
            .iter()
            .find(|d| d.serial == serial)
            .and_then(|d| d.assigned_to.clone())
    }

    pub fn set_rate_limit_every(&self, n: Option<u32>) {
        self.lock().scenario.rate_limit_every = n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the server on 127.0.0.1 (a free port), with a certificate from `authority`.
pub async fn start(
    authority: &ActivationAuthority,
    scenario: AsmScenario,
) -> Result<AsmServer, SimError> {
    let key = DecodingKey::from_ec_pem(scenario.public_key_pem.as_bytes())
        .map_err(|e| SimError::Key(format!("ASM account public key: {e}")))?;
    let (ca_der, leaf_der, ca_pem) = certificates(authority)?;
    let acceptor = tls_acceptor(authority.key(), leaf_der, ca_der)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let base = format!("https://127.0.0.1:{port}/");
    let state = Arc::new(Mutex::new(State {
        scenario,
        key,
        tokens: HashMap::new(),
        jtis: HashSet::new(),
        requests: 0,
        blocked_until: None,
        activities: BTreeMap::new(),
        stats: AsmStats::default(),
    }));
    let shared = state.clone();
    let links = base.clone();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let state = shared.clone();
            let links = links.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    let links = links.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &links, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                let _ = tokio::time::timeout(Duration::from_secs(120), conn).await;
            });
        }
    });
    Ok(AsmServer {
        token_url: format!("{base}auth/oauth2/token"),
        api_url: base,
        ca_pem: ca_pem.into_bytes(),
        state,
        task,
    })
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON:API error answer.
fn error(status: StatusCode, code: &str, detail: &str) -> Answer {
    answer(
        status,
        json!({"errors": [{"status": status.as_u16().to_string(), "code": code, "title": code, "detail": detail}]}),
    )
}

/// An OAuth error answer (RFC 6749 §5.2).
fn oauth_error(code: &str, description: &str) -> Answer {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"error": code, "error_description": description}),
    )
}

async fn handle(state: &Mutex<State>, base: &str, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ENTITY_TOO_LARGE",
                "body too large",
            );
        }
    };
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if method == Method::POST && path == "/auth/oauth2/token" {
        return s.token(&body);
    }
    // Rate limiting applies to API requests (Apple documents 429 with Retry-After).
    let now = Instant::now();
    if let Some(until) = s.blocked_until {
        if now < until {
            s.stats.early_retries += 1;
            s.stats.rate_limited += 1;
            return s.too_many(until - now);
        }
        s.blocked_until = None;
    }
    s.requests += 1;
    if let Some(n) = s.scenario.rate_limit_every
        && n > 0
        && s.requests.is_multiple_of(n)
    {
        let wait = s.scenario.retry_after;
        s.blocked_until = Some(now + wait);
        s.stats.rate_limited += 1;
        return s.too_many(wait);
    }
    match bearer.as_deref().and_then(|t| s.tokens.get(t).copied()) {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "NOT_AUTHORIZED",
                "missing or unknown bearer token",
            );
        }
        Some(expiry) if expiry <= now => {
            s.stats.expired_tokens_refused += 1;
            return error(
                StatusCode::UNAUTHORIZED,
                "NOT_AUTHORIZED",
                "the access token has expired",
            );
        }
        Some(_) => {}
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "orgDevices"]) => s.devices(base, &query),
        (&Method::GET, ["v1", "orgDevices", serial]) => s.device(serial),
        (
            &Method::GET,
            [
                "v1",
                "orgDevices",
                serial,
                "relationships",
                "assignedServer",
            ],
        ) => s.assigned_server(base, serial),
        (&Method::GET, ["v1", "mdmServers"]) => s.services(base, &query),
        (&Method::POST, ["v1", "orgDeviceActivities"]) => s.create_activity(&body),
        (&Method::GET, ["v1", "orgDeviceActivities", id]) => s.activity(id),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource"),
    }
}

impl State {
    fn too_many(&self, wait: Duration) -> Answer {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
            "too many requests",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.max(1).to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        r
    }

    /// `POST /auth/oauth2/token`: client credentials with a JWT client assertion.
    fn token(&mut self, body: &[u8]) -> Answer {
        let field = |name| form_field(body, name).and_then(|v| String::from_utf8(v).ok());
        if field("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error(
                "unsupported_grant_type",
                "grant_type must be client_credentials",
            );
        }
        if field("client_assertion_type").as_deref()
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return oauth_error(
                "invalid_request",
                "client_assertion_type must be jwt-bearer",
            );
        }
        if field("scope").as_deref() != Some(self.scenario.scope.as_str()) {
            return oauth_error("invalid_scope", "unknown scope");
        }
        let client_id = field("client_id").unwrap_or_default();
        let assertion = field("client_assertion").unwrap_or_default();
        if let Err(why) = self.check_assertion(&client_id, &assertion) {
            self.stats.assertions_refused += 1;
            return oauth_error("invalid_client", why);
        }
        let token: String = crate::rng::random_bytes::<32>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.tokens
            .insert(token.clone(), Instant::now() + self.scenario.token_lifetime);
        self.stats.tokens_issued += 1;
        answer(
            StatusCode::OK,
            json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.scenario.token_lifetime.as_secs(),
                "scope": self.scenario.scope,
            }),
        )
    }

    fn check_assertion(&mut self, client_id: &str, assertion: &str) -> Result<(), &'static str> {
        #[derive(serde::Deserialize)]
        struct Claims {
            iss: String,
            sub: String,
            iat: u64,
            exp: u64,
            jti: String,
        }
        if client_id != self.scenario.client_id {
            return Err("unknown client_id");
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| "not a JWT")?;
        if header.alg != Algorithm::ES256 {
            return Err("the assertion must be signed with ES256");
        }
        if header.kid.as_deref() != Some(self.scenario.key_id.as_str()) {
            return Err("unknown key ID (kid)");
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[&self.scenario.client_id]);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        v.leeway = 60;
        let data = jsonwebtoken::decode::<Claims>(assertion, &self.key, &v)
            .map_err(|_| "the assertion's signature or claims are not valid")?;
        let c = data.claims;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if c.sub != self.scenario.client_id || c.iss != c.sub {
            return Err("iss and sub must be the client ID");
        }
        if c.iat > now + 60 || c.exp <= c.iat || c.exp - c.iat > MAX_ASSERTION_LIFE {
            return Err("iat and exp are out of range");
        }
        if c.jti.is_empty() || !self.jtis.insert(c.jti) {
            return Err("jti missing or already used");
        }
        Ok(())
    }

    /// (offset, limit) of a list request, or a 400.
    fn paging(query: &str) -> Result<(usize, usize), &'static str> {
        let field =
            |name| form_field(query.as_bytes(), name).and_then(|v| String::from_utf8(v).ok());
        let limit = match field("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err("limit must be 1 to 1000"),
            },
        };
        let offset = match field("cursor") {
            None => 0,
            Some(c) => match c.strip_prefix('c').and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => return Err("unknown cursor"),
            },
        };
        Ok((offset, limit))
    }

    fn page(&mut self, base: &str, path: &str, query: &str, items: Vec<Value>) -> Answer {
        let (offset, limit) = match Self::paging(query) {
            Ok(p) => p,
            Err(why) => return error(StatusCode::BAD_REQUEST, "PARAMETER_ERROR.INVALID", why),
        };
        self.stats.pages_served += 1;
        let end = (offset + limit).min(items.len());
        let data: Vec<Value> = items
            .get(offset..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let mut paging = json!({"limit": limit, "total": items.len()});
        let mut links = json!({"self": format!("{base}{path}")});
        if end < items.len() {
            paging["nextCursor"] = json!(format!("c{end}"));
            links["next"] = json!(format!("{base}{path}?cursor=c{end}&limit={limit}"));
        }
        answer(
            StatusCode::OK,
            json!({"data": data, "links": links, "meta": {"paging": paging}}),
        )
    }

    fn device_json(d: &AsmDevice) -> Value {
        json!({
            "type": "orgDevices",
            "id": d.serial,
            "attributes": {
                "serialNumber": d.serial,
                "productFamily": "iPad",
                "productType": d.product_type,
                "status": if d.assigned_to.is_some() { "ASSIGNED" } else { "UNASSIGNED" },
                "addedToOrgDateTime": "2025-04-30T22:05:14.192Z",
                "releasedFromOrgDateTime": null,
            }
        })
    }

    fn devices(&mut self, base: &str, query: &str) -> Answer {
        let items = self
            .scenario
            .devices
            .iter()
            .map(Self::device_json)
            .collect();
        self.page(base, "v1/orgDevices", query, items)
    }

    fn device(&self, serial: &str) -> Answer {
        match self.scenario.devices.iter().find(|d| d.serial == serial) {
            Some(d) => answer(StatusCode::OK, json!({"data": Self::device_json(d)})),
            None => error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no device with this serial number in the organization",
            ),
        }
    }

    fn assigned_server(&self, base: &str, serial: &str) -> Answer {
        let Some(d) = self.scenario.devices.iter().find(|d| d.serial == serial) else {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no device with this serial number in the organization",
            );
        };
        let data = match &d.assigned_to {
            Some(id) => json!({"type": "mdmServers", "id": id}),
            None => Value::Null,
        };
        answer(
            StatusCode::OK,
            json!({"data": data, "links": {"self": format!("{base}v1/orgDevices/{serial}/relationships/assignedServer")}}),
        )
    }

    fn services(&mut self, base: &str, query: &str) -> Answer {
        let items = self
            .scenario
            .services
            .iter()
            .map(|s| json!({"type": "mdmServers", "id": s.id, "attributes": {"serverName": s.name, "serverType": "MDM"}}))
            .collect();
        self.page(base, "v1/mdmServers", query, items)
    }

    fn create_activity(&mut self, body: &[u8]) -> Answer {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAMETER_ERROR.INVALID",
                "body is not JSON",
            );
        };
        let d = &v["data"];
        if d["type"] != "orgDeviceActivities" || d["attributes"]["activityType"] != "ASSIGN_DEVICES"
        {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAMETER_ERROR.INVALID",
                "only ASSIGN_DEVICES is simulated",
            );
        }
        let server = &d["relationships"]["mdmServer"]["data"];
        let Some(service) = server["id"]
            .as_str()
            .filter(|_| server["type"] == "mdmServers")
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAMETER_ERROR.INVALID",
                "relationships.mdmServer is missing",
            );
        };
        if !self.scenario.services.iter().any(|s| s.id == service) {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such device management service",
            );
        }
        let Some(devices) = d["relationships"]["devices"]["data"].as_array() else {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAMETER_ERROR.INVALID",
                "relationships.devices is missing",
            );
        };
        let mut serials = Vec::new();
        for dev in devices {
            match dev["id"].as_str().filter(|_| dev["type"] == "orgDevices") {
                Some(s) => serials.push(s.to_owned()),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "PARAMETER_ERROR.INVALID",
                        "devices must be orgDevices",
                    );
                }
            }
        }
        if serials.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAMETER_ERROR.INVALID",
                "no device",
            );
        }
        let id = crate::rng::uuid_upper().to_ascii_lowercase();
        self.stats
            .activities
            .push((id.clone(), serials.clone(), service.to_owned()));
        self.activities.insert(
            id.clone(),
            Activity {
                serials,
                service: service.to_owned(),
                outcome: None,
            },
        );
        answer(
            StatusCode::CREATED,
            json!({"data": {"type": "orgDeviceActivities", "id": id, "attributes": {
                "status": "IN_PROGRESS", "subStatus": "SUBMITTED",
                "createdDateTime": "2025-05-01T18:22:27.106Z", "activityType": "ASSIGN_DEVICES"}}}),
        )
    }

    /// The first read completes the activity: every device is assigned, or (a failing or
    /// unknown serial) none is.
    fn activity(&mut self, id: &str) -> Answer {
        let Some(a) = self.activities.get_mut(id) else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such activity");
        };
        let outcome = match a.outcome {
            Some(o) => o,
            None => {
                let devices = &mut self.scenario.devices;
                let fails = a.serials.iter().any(|s| {
                    self.scenario.failing_serials.contains(s)
                        || !devices.iter().any(|d| &d.serial == s)
                });
                let o = if fails {
                    ("FAILED", "COMPLETED_WITH_FAILURE")
                } else {
                    for d in devices.iter_mut().filter(|d| a.serials.contains(&d.serial)) {
                        d.assigned_to = Some(a.service.clone());
                    }
                    ("COMPLETED", "COMPLETED_WITH_SUCCESS")
                };
                a.outcome = Some(o);
                o
            }
        };
        answer(
            StatusCode::OK,
            json!({"data": {"type": "orgDeviceActivities", "id": id, "attributes": {
                "status": outcome.0, "subStatus": outcome.1,
                "createdDateTime": "2025-05-01T18:22:27.106Z",
                "completedDateTime": "2025-05-01T18:22:38.894Z"}}}),
        )
    }
}
