//! A fake MDM enrollment server on loopback (HTTPS with its own CA, HTTP/1.1): it answers the
//! POST a device sends to its cloud configuration's `ConfigurationURL` at the end of Setup
//! Assistant with a CMS-signed configuration profile holding a `com.apple.mdm` payload, as an
//! MDM's enrollment endpoint does (`docs/protocol.md` §7; the device side is `enrollment.rs`).
//!
//! Paths under the base URL:
//! - `enroll`: the signed enrollment profile;
//! - `enroll/unsigned`: the same profile as a plain plist (a misconfigured MDM);
//! - `enroll/not-a-profile`: a signed plist that is not a configuration profile;
//! - `enroll/no-mdm-payload`: a signed configuration profile without a `com.apple.mdm` payload;
//! - `enroll/bad-signature`: the signed profile with its signature spoilt;
//! - `enroll/devices-only`: 403, as an MDM that checks that the request is signed by an
//!   Apple-issued device identity answers (a station's check cannot be).
//!
//! These failure paths are the fake MDM's test knobs, not device rules.
//!
//! Each request is kept (method, path, user agent, the device's UDID from its MachineInfo) so
//! tests can check what the device sent. The request body must be a CMS-signed MachineInfo
//! plist with a `UDID` (Apple's Device Management documentation, "MachineInfo"); anything else
//! gets 400.

use std::path::Path;
use std::sync::{Arc, Mutex};

use plist::{Dictionary, Value};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::activation_server::{
    Request, Response, loopback_certificates, serve_requests, tls_acceptor,
};
use crate::error::SimError;

/// The identifier of the enrollment profile the server hands out.
pub const PROFILE_IDENTIFIER: &str = "org.cartprep.simulator.mdm.enrollment";

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub user_agent: String,
    pub content_type: String,
    /// From the signed MachineInfo, when the body was one.
    pub udid: Option<String>,
}

/// The running server.
pub struct MdmServer {
    /// The MDM's name (the profile's organisation and display name).
    pub name: String,
    /// `https://127.0.0.1:PORT/` — append `enroll` for the enrollment URL.
    pub base_url: String,
    /// The CA certificate (PEM) a device must trust (its cloud configuration's
    /// `AnchorCertificates`) to reach the server.
    pub ca_pem: Vec<u8>,
    /// The same CA, DER.
    pub ca_der: Vec<u8>,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    pub task: JoinHandle<()>,
}

impl MdmServer {
    /// The enrollment URL to put in a cloud configuration.
    pub fn enrollment_url(&self) -> String {
        format!("{}enroll", self.base_url)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn key_err(e: impl std::fmt::Display) -> SimError {
    SimError::Key(format!("MDM server key: {e}"))
}

/// Loads `dir/mdm-server.key` or creates it (0600), so the CA stays the same across runs.
fn load_or_create_key(dir: &Path) -> Result<RsaPrivateKey, SimError> {
    let path = dir.join("mdm-server.key");
    if let Some(k) = std::fs::read(&path)
        .ok()
        .and_then(|d| RsaPrivateKey::from_pkcs8_der(&d).ok())
    {
        return Ok(k);
    }
    let k = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(key_err)?;
    let der = k.to_pkcs8_der().map_err(key_err)?;
    crate::files::write_private(&path, der.as_bytes())?;
    Ok(k)
}

struct Served {
    name: String,
    base_url: String,
    key: RsaPrivateKey,
    leaf_der: Vec<u8>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

/// Starts the server on 127.0.0.1 (a free port); `name` is the MDM's name.
pub async fn start(state_dir: &Path, name: &str) -> Result<MdmServer, SimError> {
    let dir = state_dir.to_owned();
    let key = tokio::task::spawn_blocking(move || load_or_create_key(&dir))
        .await
        .map_err(key_err)??;
    let (ca_der, leaf_der, ca_pem) =
        loopback_certificates(&key, "CN=cartprep simulated MDM CA,O=cartprep simulator")?;
    let acceptor = tls_acceptor(&key, leaf_der.clone(), ca_der.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let base_url = format!("https://127.0.0.1:{port}/");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Served {
        name: name.to_owned(),
        base_url: base_url.clone(),
        key,
        leaf_der,
        seen: seen.clone(),
    });
    let task = serve_requests(listener, acceptor, move |req| route(&served, req));
    Ok(MdmServer {
        name: name.to_owned(),
        base_url,
        ca_pem: ca_pem.into_bytes(),
        ca_der,
        seen,
        task,
    })
}

/// The UDID of a CMS-signed MachineInfo plist.
fn machine_info_udid(body: &[u8]) -> Option<String> {
    let (content, _) = crate::cms_verify::verify_attached_by_included(body).ok()?;
    let info: Dictionary = plist::from_bytes(&content).ok()?;
    info.get("UDID")
        .and_then(Value::as_string)
        .map(str::to_owned)
}

fn route(served: &Served, req: &Request) -> Response {
    let udid = machine_info_udid(&req.body);
    served
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(SeenRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            user_agent: req.user_agent.clone(),
            content_type: req.content_type.clone(),
            udid: udid.clone(),
        });
    if req.method != "POST" {
        return Response::text(405, "POST only");
    }
    if udid.is_none() {
        return Response::text(400, "the body is not a signed MachineInfo with a UDID");
    }
    let profile = enrollment_profile(served);
    let signed = |content: &[u8]| match crate::cms_sign::sign_attached(
        &served.key,
        &served.leaf_der,
        content,
    ) {
        Ok(der) => Response {
            status: 200,
            content_type: "application/x-apple-aspen-config",
            body: der,
        },
        Err(e) => Response::text(500, &format!("signing failed: {e}")),
    };
    match req.path.trim_end_matches('/') {
        "/enroll" => signed(&profile),
        "/enroll/unsigned" => Response {
            status: 200,
            content_type: "application/x-apple-aspen-config",
            body: profile,
        },
        "/enroll/no-mdm-payload" => signed(&without_mdm_payload(served)),
        "/enroll/bad-signature" => {
            let mut response = signed(&profile);
            // The signature is the message's last bytes.
            if let Some(last) = response.body.last_mut() {
                *last ^= 0x01;
            }
            response
        }
        "/enroll/devices-only" => Response::text(
            403,
            "unauthorized enrollment client: not signed by an Apple device identity",
        ),
        "/enroll/not-a-profile" => {
            let mut d = Dictionary::new();
            d.insert("Message".into(), "Welcome to the MDM".into());
            signed(&xml(&d))
        }
        _ => Response::text(404, "unknown endpoint"),
    }
}

fn xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = plist::to_writer_xml(&mut out, dict);
    out
}

/// A configuration profile whose only payload is a web clip: signed, but it enrolls nothing.
fn without_mdm_payload(served: &Served) -> Vec<u8> {
    let mut clip = Dictionary::new();
    clip.insert("PayloadType".into(), "com.apple.webClip.managed".into());
    clip.insert("PayloadVersion".into(), 1u64.into());
    clip.insert(
        "PayloadIdentifier".into(),
        format!("{PROFILE_IDENTIFIER}.clip").into(),
    );
    clip.insert("PayloadUUID".into(), crate::rng::uuid_upper().into());
    clip.insert("Label".into(), "School portal".into());
    clip.insert("URL".into(), served.base_url.clone().into());
    let mut profile = Dictionary::new();
    profile.insert("PayloadType".into(), "Configuration".into());
    profile.insert("PayloadVersion".into(), 1u64.into());
    profile.insert(
        "PayloadIdentifier".into(),
        format!("{PROFILE_IDENTIFIER}.web").into(),
    );
    profile.insert("PayloadUUID".into(), crate::rng::uuid_upper().into());
    profile.insert(
        "PayloadContent".into(),
        Value::Array(vec![Value::Dictionary(clip)]),
    );
    xml(&profile)
}

/// The enrollment profile: one `com.apple.mdm` payload pointing at this server.
fn enrollment_profile(served: &Served) -> Vec<u8> {
    let mut mdm = Dictionary::new();
    mdm.insert("PayloadType".into(), "com.apple.mdm".into());
    mdm.insert("PayloadVersion".into(), 1u64.into());
    mdm.insert(
        "PayloadIdentifier".into(),
        format!("{PROFILE_IDENTIFIER}.mdm").into(),
    );
    mdm.insert("PayloadUUID".into(), crate::rng::uuid_upper().into());
    mdm.insert(
        "ServerURL".into(),
        format!("{}mdm/server", served.base_url).into(),
    );
    mdm.insert(
        "CheckInURL".into(),
        format!("{}mdm/checkin", served.base_url).into(),
    );
    mdm.insert(
        "Topic".into(),
        "com.apple.mgmt.External.cartprep-simulator".into(),
    );
    mdm.insert("AccessRights".into(), 8191u64.into());
    mdm.insert("SignMessage".into(), true.into());
    let mut profile = Dictionary::new();
    profile.insert("PayloadType".into(), "Configuration".into());
    profile.insert("PayloadVersion".into(), 1u64.into());
    profile.insert("PayloadIdentifier".into(), PROFILE_IDENTIFIER.into());
    profile.insert("PayloadUUID".into(), crate::rng::uuid_upper().into());
    profile.insert(
        "PayloadDisplayName".into(),
        format!("{} enrollment", served.name).into(),
    );
    profile.insert("PayloadOrganization".into(), served.name.clone().into());
    profile.insert(
        "PayloadDescription".into(),
        format!("Enrolls this iPad in {}", served.name).into(),
    );
    profile.insert(
        "PayloadContent".into(),
        Value::Array(vec![Value::Dictionary(mdm)]),
    );
    xml(&profile)
}
