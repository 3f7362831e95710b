//! A fake Apple activation server on loopback (HTTPS, HTTP/1.1), trusted by the virtual iPads:
//! `POST …/drmHandshake` and `POST …/deviceActivation`, as albert.apple.com answers them —
//! a signed activation record, or the Activation Lock (BuddyML) page for a locked iPad.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use der::asn1::{Ia5String, OctetString};
use der::{Encode, EncodePem};
use plist::{Dictionary, Value};
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::EncodePrivateKey;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use crate::activation::ActivationAuthority;
use crate::cart::Cart;
use crate::error::SimError;

const MAX_HEADER: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The running server: its base URL and the CA certificate a client must trust.
pub struct ActivationServer {
    pub base_url: String,
    pub ca_pem: Vec<u8>,
    pub task: JoinHandle<()>,
}

fn cert_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(format!("activation server certificate: {e}"))
}

/// The TLS side of a fake server: `leaf_der` (issued by `ca_der`) and its `key`.
pub(crate) fn tls_acceptor(
    key: &rsa::RsaPrivateKey,
    leaf_der: Vec<u8>,
    ca_der: Vec<u8>,
) -> Result<tokio_rustls::TlsAcceptor, SimError> {
    let pkcs8 = key.to_pkcs8_der().map_err(cert_err)?.as_bytes().to_vec();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(cert_err)?
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf_der.into(), ca_der.into()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into()),
    )
    .map_err(cert_err)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves one request per TLS connection with `route`, each read and handshake bounded in
/// time (the activation and MDM servers).
pub(crate) fn serve_requests(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    route: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> JoinHandle<()> {
    let route = Arc::new(route);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let route = route.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await
                else {
                    return;
                };
                let response =
                    match tokio::time::timeout(Duration::from_secs(30), read_request(&mut tls))
                        .await
                    {
                        Ok(Ok(req)) => route(&req),
                        Ok(Err(e)) => Response::text(400, &format!("bad request: {e}")),
                        Err(_) => return,
                    };
                let _ = tls.write_all(&response.to_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    })
}

/// A CA and a leaf for 127.0.0.1/localhost, both under the authority's key.
pub(crate) fn certificates(
    authority: &ActivationAuthority,
) -> Result<(Vec<u8>, Vec<u8>, String), SimError> {
    loopback_certificates(
        authority.key(),
        "CN=cartprep simulated activation CA,O=cartprep simulator",
    )
}

/// A CA named `ca_name` and a leaf for 127.0.0.1/localhost, both under `key`: (CA DER, leaf
/// DER, CA PEM). The fake servers (activation, MDM) each have their own.
pub(crate) fn loopback_certificates(
    key: &rsa::RsaPrivateKey,
    ca_name: &str,
) -> Result<(Vec<u8>, Vec<u8>, String), SimError> {
    let key = key.clone();
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).map_err(cert_err)?;
    let validity =
        Validity::from_now(Duration::from_secs(3 * 365 * 24 * 3600)).map_err(cert_err)?;
    let ca_name = Name::from_str(ca_name).map_err(cert_err)?;
    let ca = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        validity,
        ca_name.clone(),
        spki.clone(),
        &signer,
    )
    .map_err(cert_err)?
    .build::<Signature>()
    .map_err(cert_err)?;
    let mut leaf = CertificateBuilder::new(
        Profile::Leaf {
            issuer: ca_name,
            enable_key_agreement: false,
            enable_key_encipherment: true,
        },
        SerialNumber::from(2u32),
        validity,
        Name::from_str("CN=127.0.0.1").map_err(cert_err)?,
        spki,
        &signer,
    )
    .map_err(cert_err)?;
    leaf.add_extension(&SubjectAltName(vec![
        GeneralName::IpAddress(OctetString::new(vec![127, 0, 0, 1]).map_err(cert_err)?),
        GeneralName::DnsName(Ia5String::new("localhost").map_err(cert_err)?),
    ]))
    .map_err(cert_err)?;
    let leaf = leaf.build::<Signature>().map_err(cert_err)?;
    let ca_pem = ca.to_pem(der::pem::LineEnding::LF).map_err(cert_err)?;
    Ok((
        ca.to_der().map_err(cert_err)?,
        leaf.to_der().map_err(cert_err)?,
        ca_pem,
    ))
}

/// Starts the server on 127.0.0.1 (a free port).
pub async fn start(cart: Arc<Cart>) -> Result<ActivationServer, SimError> {
    let authority = cart.authority.clone();
    let (ca_der, leaf_der, ca_pem) = certificates(&authority)?;
    let acceptor = tls_acceptor(authority.key(), leaf_der, ca_der)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = serve_requests(listener, acceptor, move |req| route(&cart, req));
    Ok(ActivationServer {
        base_url: format!("https://127.0.0.1:{port}/deviceservices/"),
        ca_pem: ca_pem.into_bytes(),
        task,
    })
}

pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (headers up to 64 KiB, a Content-Length body up to 4 MiB); the
/// caller bounds the time.
pub(crate) async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Result<Request, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER {
            return Err("headers too large".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let mut length = 0usize;
    let mut content_type = String::new();
    let mut user_agent = String::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().map_err(|_| "bad Content-Length")?,
            "content-type" => content_type = value.trim().to_owned(),
            "user-agent" => user_agent = value.trim().to_owned(),
            "transfer-encoding" => return Err("chunked bodies are not supported".into()),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err("body too large".into());
    }
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        content_type,
        user_agent,
        body,
    })
}

pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(status: u16, text: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nServer: cartprep-simulated-albert\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = plist::to_writer_xml(&mut out, dict);
    out
}

fn route(cart: &Cart, req: &Request) -> Response {
    if req.method != "POST" {
        return Response::text(405, "POST only");
    }
    if req.path.ends_with("/drmHandshake") {
        handshake(cart, req)
    } else if req.path.ends_with("/deviceActivation") {
        activation(cart, req)
    } else {
        Response::text(404, "unknown endpoint")
    }
}

fn handshake(cart: &Cart, req: &Request) -> Response {
    let Ok(dict) = crate::untrusted::dictionary(&req.body) else {
        return Response::text(400, "the handshake body is not a plist");
    };
    let Some(message) = dict.get("HandshakeRequestMessage").and_then(Value::as_data) else {
        return Response::text(400, "no HandshakeRequestMessage");
    };
    let mut d = Dictionary::new();
    d.insert(
        "HandshakeResponseMessage".into(),
        Value::Data(cart.authority.sign(message)),
    );
    d.insert(
        "serverKP".into(),
        Value::Data(crate::rng::random_bytes::<32>().to_vec()),
    );
    Response {
        status: 200,
        content_type: "application/xml",
        body: xml(&d),
    }
}

/// Decodes `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte).
pub fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (percent_decode(k)? == name.as_bytes()).then(|| percent_decode(v))?
    })
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

const BUDDYML_LOCKED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<xmlui style="setupAssistant">
  <page>
    <navigationBar title="Activation Lock" hidesBackButton="false"/>
    <tableView>
      <section footer="This iPad is linked to an Apple ID. Enter the Apple ID and password that were used to set up this iPad.">
        <editableTextRow id="login" label="Apple ID" placeholder="example@icloud.com"/>
        <editableTextRow id="password" label="Password" secure="true"/>
      </section>
    </tableView>
  </page>
</xmlui>
"#;

fn activation(cart: &Cart, req: &Request) -> Response {
    if !req
        .content_type
        .starts_with("application/x-www-form-urlencoded")
    {
        return Response::text(400, "expected an application/x-www-form-urlencoded form");
    }
    let Some(info) = form_field(&req.body, "activation-info") else {
        return Response::text(400, "no activation-info field");
    };
    let Ok(info) = crate::untrusted::dictionary(&info) else {
        return Response::text(400, "activation-info is not a plist");
    };
    let Some(inner) = info
        .get("ActivationInfoXML")
        .and_then(Value::as_data)
        .and_then(|d| crate::untrusted::dictionary(d).ok())
    else {
        return Response::text(400, "no ActivationInfoXML");
    };
    let udid = inner
        .get("UniqueDeviceID")
        .and_then(Value::as_string)
        .unwrap_or_default();
    let serial = inner
        .get("SerialNumber")
        .and_then(Value::as_string)
        .unwrap_or_default();
    let Some(ipad) = cart
        .devices()
        .iter()
        .find(|d| d.udid() == udid && d.spec.identity.serial_number == serial)
    else {
        return Response::text(404, "unknown device");
    };
    if ipad.spec.activation_lock {
        return Response {
            status: 200,
            content_type: "application/x-buddyml",
            body: BUDDYML_LOCKED.as_bytes().to_vec(),
        };
    }
    let mut token = Dictionary::new();
    token.insert("UniqueDeviceID".into(), udid.into());
    token.insert("SerialNumber".into(), serial.into());
    token.insert(
        "ActivityURL".into(),
        "https://albert.apple.com/deviceservices/activity".into(),
    );
    if let Some(nonce) = inner.get("SessionNonce") {
        token.insert("SessionNonce".into(), nonce.clone());
    }
    let token = xml(&token);
    let mut record = Dictionary::new();
    record.insert(
        "AccountTokenSignature".into(),
        Value::Data(cart.authority.sign(&token)),
    );
    record.insert("AccountToken".into(), Value::Data(token));
    record.insert("unbrick".into(), true.into());
    let mut outer = Dictionary::new();
    outer.insert("ActivationRecord".into(), Value::Dictionary(record));
    Response {
        status: 200,
        content_type: "text/xml",
        body: xml(&outer),
    }
}
