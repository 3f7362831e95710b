//! StartSession and the TLS that follows, done here rather than by idevice: idevice would wrap
//! the socket in its own TLS stream and read every later reply (values, StartService,
//! StopSession) with an unbounded length and a recursive parser. Here the TLS stream is made
//! by us and wrapped in a [`PlistGuard`] before idevice gets it back, so every lockdownd reply
//! of the session is checked within bounds first.
//!
//! The TLS parameters are idevice's: the pair record's host certificate and key as the client
//! identity, and no check of the device certificate's name or chain (the device issues it
//! itself); handshake signatures are verified.

use std::sync::Arc;
use std::time::Duration;

use idevice::pairing_file::PairingFile;
use idevice::services::lockdown::LockdownClient;
use idevice::{Idevice, ReadWrite};
use plist::{Dictionary, Value};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::client::TlsStream;
use usbmux::transcript::Tap;

use crate::error::LockdownError;
use crate::supervised_pairing::{lockdown_error, read_plist, send_plist};

const OPERATION: &str = "StartSession";

/// Sends StartSession for `record`, then turns TLS on; `client` then talks through a guarded
/// TLS stream and knows the SessionID (for idevice's `stop_session`).
pub(crate) async fn start(
    client: &mut LockdownClient,
    record: &PairingFile,
    label: &str,
    after: Duration,
    tap: Option<&Tap>,
) -> Result<(), LockdownError> {
    let mut request = Dictionary::new();
    request.insert("Label".into(), label.into());
    request.insert("Request".into(), OPERATION.into());
    request.insert("HostID".into(), record.host_id.clone().into());
    request.insert("SystemBUID".into(), record.system_buid.clone().into());
    send_plist(&mut client.idevice, OPERATION, &request, after).await?;
    let reply = read_plist(&mut client.idevice, OPERATION, after).await?;
    let session_id = session_of(&reply)?;

    // idevice holds the socket; an unconnected stand-in takes its place while TLS starts.
    let stand_in = Idevice::new(Box::new(tokio::io::duplex(1).0), label);
    let plain = std::mem::replace(&mut client.idevice, stand_in)
        .get_socket()
        .ok_or_else(|| LockdownError::Idevice("the lockdownd connection is gone".into()))?;
    let tls = connect(plain, record, after).await?;
    client.idevice = crate::provider::guarded_service(tls, tap.cloned(), label);
    client.session_id = session_id;
    Ok(())
}

/// TLS as the pair record's host, over `socket` (lockdownd after StartSession, or a service
/// that asked for it).
pub(crate) async fn connect(
    socket: Box<dyn ReadWrite>,
    record: &PairingFile,
    after: Duration,
) -> Result<TlsStream<Box<dyn ReadWrite>>, LockdownError> {
    let config = client_config(record)?;
    let server = ServerName::try_from("Device").map_err(|e| tls_error(e.to_string()))?;
    match tokio::time::timeout(
        after,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, socket),
    )
    .await
    {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(LockdownError::Io(e)),
        Err(_) => Err(LockdownError::Timeout {
            operation: "TLS handshake",
            after,
        }),
    }
}

/// The SessionID of a StartSession reply that turns TLS on, or the error it carries.
fn session_of(reply: &Dictionary) -> Result<Option<String>, LockdownError> {
    if let Some(name) = reply.get("Error").and_then(Value::as_string) {
        return Err(lockdown_error(OPERATION, name));
    }
    if reply.get("EnableSessionSSL").and_then(Value::as_boolean) != Some(true) {
        return Err(LockdownError::MalformedReply(
            "StartSession: the reply does not turn TLS on (EnableSessionSSL)".into(),
        ));
    }
    Ok(reply
        .get("SessionID")
        .and_then(Value::as_string)
        .map(str::to_owned))
}

fn tls_error(reason: String) -> LockdownError {
    LockdownError::PairRecord(format!("cannot use the pair record for TLS: {reason}"))
}

fn client_config(record: &PairingFile) -> Result<rustls::ClientConfig, LockdownError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(&record.host_private_key)
        .map_err(|e| tls_error(format!("host private key: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DeviceCertificate { provider }))
        .with_client_auth_cert(vec![record.host_certificate.clone()], key)
        .map_err(|e| tls_error(e.to_string()))?;
    Ok(config)
}

/// Accepts the device's self-issued certificate as idevice does, but checks that the handshake
/// is signed with its key.
#[derive(Debug)]
struct DeviceCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DeviceCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn start_session_replies_are_classified() {
        let ok = reply(&[
            ("Request", "StartSession".into()),
            ("EnableSessionSSL", true.into()),
            ("SessionID", "S1".into()),
        ]);
        assert_eq!(session_of(&ok).unwrap(), Some("S1".to_owned()));
        let no_id = reply(&[("EnableSessionSSL", true.into())]);
        assert_eq!(session_of(&no_id).unwrap(), None);
        assert!(matches!(
            session_of(&reply(&[("Error", "InvalidHostID".into())])),
            Err(LockdownError::InvalidHostId)
        ));
        assert!(matches!(
            session_of(&reply(&[("EnableSessionSSL", false.into())])),
            Err(LockdownError::MalformedReply(_))
        ));
        assert!(matches!(
            session_of(&reply(&[])),
            Err(LockdownError::MalformedReply(_))
        ));
    }
}
