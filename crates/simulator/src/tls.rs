//! The device side of lockdown TLS.
//!
//! The virtual iPad is the TLS server, presents the DeviceCertificate the host made for it at
//! pairing, and demands a client certificate that must be the stored HostCertificate or
//! RootCertificate of the session's HostID (or be signed by that root). No path validation: real
//! pair records use SHA-1, empty names, serial 0 and CA:TRUE host certificates.
//!
//! Reads are cut at TLS record boundaries so that, when a client stops TLS (StopSession, then
//! close_notify, then plaintext on the same socket), no plaintext byte is swallowed by the TLS
//! layer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use der::{Decode, Encode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use x509_cert::Certificate;

use crate::error::SimError;

/// Any byte stream a virtual device is reached through.
pub trait DeviceStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceStream for T {}

pub type BoxStream = Box<dyn DeviceStream>;

/// The certificates a paired host may authenticate with.
#[derive(Debug, Clone)]
pub struct TrustedHost {
    pub host_cert_der: Vec<u8>,
    pub root_cert_der: Vec<u8>,
}

/// Builds the server configuration for one session or service connection.
pub fn server_config(
    device_cert_der: Vec<u8>,
    device_key_pkcs8: Vec<u8>,
    host: TrustedHost,
) -> Result<Arc<rustls::ServerConfig>, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PairedHostVerifier { host });
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            device_key_pkcs8,
        )))
        .map_err(|e| SimError::Tls(e.to_string()))?;
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(device_cert_der)], key);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        // Real lockdownd negotiates TLS 1.2 (only 1.2 has been observed).
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(DeviceCertificate(Arc::new(certified))));
    Ok(Arc::new(config))
}

/// The DeviceCertificate the host made at pairing, served as it is. rustls's `with_single_cert`
/// parses it with webpki, which refuses X.509 v1 certificates; hosts that make v1 device
/// certificates (tidevice) work with real iPads (docs/fidelity.md §3), so the certificate is
/// served without that check.
#[derive(Debug)]
struct DeviceCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for DeviceCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// PEM certificate (as stored in pair records) to DER.
pub fn cert_pem_to_der(pem: &[u8]) -> Result<Vec<u8>, SimError> {
    use der::DecodePem;
    let cert = Certificate::from_pem(pem)
        .map_err(|e| SimError::BadPairRecord(format!("certificate: {e}")))?;
    cert.to_der()
        .map_err(|e| SimError::BadPairRecord(e.to_string()))
}

#[derive(Debug)]
struct PairedHostVerifier {
    host: TrustedHost,
}

const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA1,
];

fn rsa_public_key(cert_der: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let cert = Certificate::from_der(cert_der)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    Ok(cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec())
}

fn verify_with(
    alg: &'static dyn ring::signature::VerificationAlgorithm,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    ring::signature::UnparsedPublicKey::new(alg, public_key)
        .verify(message, signature)
        .is_ok()
}

fn scheme_algorithm(
    scheme: SignatureScheme,
) -> Option<&'static dyn ring::signature::VerificationAlgorithm> {
    use ring::signature as s;
    Some(match scheme {
        SignatureScheme::RSA_PKCS1_SHA256 => &s::RSA_PKCS1_2048_8192_SHA256,
        SignatureScheme::RSA_PKCS1_SHA384 => &s::RSA_PKCS1_2048_8192_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512 => &s::RSA_PKCS1_2048_8192_SHA512,
        SignatureScheme::RSA_PSS_SHA256 => &s::RSA_PSS_2048_8192_SHA256,
        SignatureScheme::RSA_PSS_SHA384 => &s::RSA_PSS_2048_8192_SHA384,
        SignatureScheme::RSA_PSS_SHA512 => &s::RSA_PSS_2048_8192_SHA512,
        SignatureScheme::RSA_PKCS1_SHA1 => &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        _ => return None,
    })
}

/// Whether `cert_der` carries a valid signature by the root's key (SHA-1 or SHA-2 RSA).
fn signed_by(cert_der: &[u8], root_der: &[u8]) -> bool {
    use ring::signature as s;
    let (Ok(cert), Ok(root_key)) = (Certificate::from_der(cert_der), rsa_public_key(root_der))
    else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let alg: &'static dyn s::VerificationAlgorithm =
        match cert.signature_algorithm.oid.to_string().as_str() {
            "1.2.840.113549.1.1.5" => &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "1.2.840.113549.1.1.11" => &s::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &s::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &s::RSA_PKCS1_2048_8192_SHA512,
            _ => return false,
        };
    cert.signature
        .as_bytes()
        .is_some_and(|sig| verify_with(alg, &root_key, &tbs, sig))
}

impl ClientCertVerifier for PairedHostVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = end_entity.as_ref();
        if presented == self.host.host_cert_der.as_slice()
            || presented == self.host.root_cert_der.as_slice()
            || signed_by(presented, &self.host.root_cert_der)
        {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let alg = scheme_algorithm(dss.scheme).ok_or(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ))?;
        let key = rsa_public_key(cert.as_ref())?;
        if verify_with(alg, &key, message, dss.signature()) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// Passes reads through but never past the end of the current TLS record.
pub struct RecordBounded<S> {
    inner: S,
    header: [u8; 5],
    header_seen: usize,
    body_left: usize,
}

impl<S> RecordBounded<S> {
    pub fn new(inner: S) -> Self {
        RecordBounded {
            inner,
            header: [0; 5],
            header_seen: 0,
            body_left: 0,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordBounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let in_header = this.body_left == 0;
        let limit = if in_header {
            5 - this.header_seen
        } else {
            this.body_left
        };
        let limit = limit.min(buf.remaining());
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(limit));
        match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                if in_header {
                    this.header[this.header_seen..this.header_seen + n]
                        .copy_from_slice(sub.filled());
                    this.header_seen += n;
                    if this.header_seen == 5 {
                        this.header_seen = 0;
                        this.body_left =
                            u16::from_be_bytes([this.header[3], this.header[4]]) as usize;
                    }
                } else {
                    this.body_left -= n;
                }
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordBounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream with some bytes already read off it, served first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The PKCS#1 RSAPublicKey inside a certificate, if it parses.
pub fn certificate_public_key(cert_der: &[u8]) -> Option<Vec<u8>> {
    rsa_public_key(cert_der).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::certificate::Version;
    use x509_cert::der::asn1::BitString;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("a key")
    }

    /// An X.509 v1 certificate (no extensions) for `subject`, signed by `issuer`, as older
    /// pairing tools make them.
    fn v1_certificate(issuer: &RsaPrivateKey, subject: &RsaPrivateKey) -> Vec<u8> {
        let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(issuer.clone());
        let spki = SubjectPublicKeyInfoOwned::from_key(subject.to_public_key()).expect("spki");
        let v3 = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::new(&[1]).expect("serial"),
            Validity::from_now(std::time::Duration::from_secs(3600)).expect("validity"),
            Name::default(),
            spki,
            &signer,
        )
        .expect("builder")
        .build::<rsa::pkcs1v15::Signature>()
        .expect("certificate");
        let mut tbs = v3.tbs_certificate.clone();
        tbs.version = Version::V1;
        tbs.extensions = None;
        let signature = signer.sign(&tbs.to_der().expect("tbs")).to_vec();
        Certificate {
            tbs_certificate: tbs,
            signature_algorithm: v3.signature_algorithm,
            signature: BitString::from_bytes(&signature).expect("bits"),
        }
        .to_der()
        .expect("der")
    }

    #[test]
    fn x509_v1_host_certificates_are_accepted_like_v3_ones() {
        let (root_key, host_key, stranger_key) = (key(), key(), key());
        let root = v1_certificate(&root_key, &root_key);
        let host = v1_certificate(&root_key, &host_key);
        assert_eq!(
            Certificate::from_der(&host)
                .expect("parses")
                .tbs_certificate
                .version,
            Version::V1
        );
        let verifier = PairedHostVerifier {
            host: TrustedHost {
                host_cert_der: host.clone(),
                root_cert_der: root.clone(),
            },
        };
        let verify = |der: &[u8]| {
            verifier
                .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], UnixTime::now())
                .is_ok()
        };
        assert!(verify(&host), "the stored host certificate");
        assert!(verify(&root), "the stored root certificate");
        assert!(signed_by(&host, &root), "signed by the root, v1 or not");
        let stranger = v1_certificate(&stranger_key, &stranger_key);
        assert!(!verify(&stranger), "another host's certificate");
        // The handshake's signature check reads the key out of the v1 certificate.
        let host_public = host_key
            .to_public_key()
            .to_pkcs1_der()
            .expect("pkcs1")
            .as_bytes()
            .to_vec();
        assert_eq!(certificate_public_key(&host), Some(host_public));
    }

    #[test]
    fn a_v1_device_certificate_made_at_pairing_is_served() {
        use rsa::pkcs8::EncodePrivateKey;
        let (root_key, device_key) = (key(), key());
        let device = v1_certificate(&root_key, &device_key);
        let pkcs8 = device_key
            .to_pkcs8_der()
            .expect("pkcs8")
            .as_bytes()
            .to_vec();
        let host = TrustedHost {
            host_cert_der: v1_certificate(&root_key, &root_key),
            root_cert_der: v1_certificate(&root_key, &root_key),
        };
        assert!(
            server_config(device, pkcs8, host).is_ok(),
            "tidevice makes v1 device certificates and real iPads serve them"
        );
    }
}
