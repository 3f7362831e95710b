//! Activation on a virtual iPad: the trust between the device and the (fake) activation server,
//! and the device's mobileactivationd service (`com.apple.mobileactivationd`).
//!
//! The real protocol is opaque FairPlay data; here the same messages carry plists signed by the
//! simulated Apple: the device signs nothing, the server signs the handshake and the activation
//! record, and the device verifies both with the server's public key before it calls itself
//! activated. A record for another device, or one not from this server, is refused.

use std::path::Path;

use plist::{Dictionary, Value};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use usbmux::plist_service;

use crate::error::SimError;
use crate::lockdownd::Link;
use crate::tls::BoxStream;

/// The simulated Apple activation authority: one RSA key signing handshakes and records (and
/// certifying the fake server's TLS certificate).
#[derive(Debug)]
pub struct ActivationAuthority {
    key: RsaPrivateKey,
    public: RsaPublicKey,
}

impl ActivationAuthority {
    /// Loads `dir/activation-authority.key` or creates it (0600).
    pub fn load_or_create(dir: &Path) -> Result<Self, SimError> {
        let path = dir.join("activation-authority.key");
        let key = match std::fs::read(&path)
            .ok()
            .and_then(|d| RsaPrivateKey::from_pkcs8_der(&d).ok())
        {
            Some(k) => k,
            None => {
                let k = RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                    .map_err(|e| SimError::Key(e.to_string()))?;
                let der = k.to_pkcs8_der().map_err(|e| SimError::Key(e.to_string()))?;
                crate::files::write_private(&path, der.as_bytes())?;
                k
            }
        };
        let public = key.to_public_key();
        Ok(ActivationAuthority { key, public })
    }

    pub fn key(&self) -> &RsaPrivateKey {
        &self.key
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        SigningKey::<Sha256>::new(self.key.clone())
            .sign(bytes)
            .to_vec()
    }

    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> bool {
        Signature::try_from(signature).is_ok_and(|s| {
            VerifyingKey::<Sha256>::new(self.public.clone())
                .verify(bytes, &s)
                .is_ok()
        })
    }
}

fn binary(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a dictionary of plain values to memory cannot fail.
    let _ = plist::to_writer_binary(&mut out, dict);
    out
}

fn xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = plist::to_writer_xml(&mut out, dict);
    out
}

/// The HandshakeRequestMessage a device with this UDID and session nonce sends.
pub fn handshake_request(udid: &str, nonce: &[u8]) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("UniqueDeviceID".into(), udid.into());
    d.insert("SessionNonce".into(), Value::Data(nonce.to_vec()));
    binary(&d)
}

fn error(text: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Error".into(), text.into());
    d
}

fn value(v: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Value".into(), v);
    d
}

/// One request per connection, as the real service.
pub async fn serve(mut link: Link, mut stream: BoxStream) {
    let request = tokio::select! {
        biased;
        _ = link.gone() => return,
        r = plist_service::read(&mut stream) => r,
    };
    let Ok(Some(request)) = request else { return };
    let command = request
        .get("Command")
        .and_then(Value::as_string)
        .unwrap_or("")
        .to_owned();
    if let Some(crate::faults::FaultAction::Drop) = link.fault(&command) {
        return;
    }
    link.ipad.traffic.reply();
    if !link.ipad.spec.latency.is_zero() {
        tokio::time::sleep(link.ipad.spec.latency).await;
    }
    let answer = handle(&link, &command, &request);
    let _ = plist_service::write(&mut stream, &answer).await;
}

fn handle(link: &Link, command: &str, req: &Dictionary) -> Dictionary {
    let ipad = &link.ipad;
    let id = &ipad.spec.identity;
    let mut state = ipad.state();
    match command {
        "GetActivationStateRequest" => value(
            if state.activated {
                "Activated"
            } else {
                "Unactivated"
            }
            .into(),
        ),
        "CreateTunnel1SessionInfoRequest" => {
            let nonce = crate::rng::random_bytes::<32>().to_vec();
            state.activation_session = Some(nonce.clone());
            let mut info = Dictionary::new();
            info.insert(
                "HandshakeRequestMessage".into(),
                Value::Data(handshake_request(&id.udid, &nonce)),
            );
            info.insert("UniqueDeviceID".into(), id.udid.clone().into());
            value(Value::Dictionary(info))
        }
        "CreateTunnel1ActivationInfoRequest" | "CreateActivationInfoRequest" => {
            let Some(nonce) = state.activation_session.clone() else {
                return error("No activation session: send CreateTunnel1SessionInfoRequest first.");
            };
            let response = req
                .get("Value")
                .and_then(Value::as_data)
                .and_then(|d| crate::untrusted::dictionary(d).ok());
            let signature = response
                .as_ref()
                .and_then(|r| r.get("HandshakeResponseMessage"))
                .and_then(Value::as_data);
            let request_bytes = handshake_request(&id.udid, &nonce);
            if !signature.is_some_and(|s| link.authority.verify(&request_bytes, s)) {
                return error("The handshake response is not valid for this session.");
            }
            let mut info = Dictionary::new();
            info.insert(
                "ActivationRandomness".into(),
                crate::rng::uuid_upper().into(),
            );
            info.insert(
                "ActivationState".into(),
                if state.activated {
                    "Activated"
                } else {
                    "Unactivated"
                }
                .into(),
            );
            info.insert("BuildVersion".into(), ipad.spec.release.build.into());
            info.insert("DeviceClass".into(), "iPad".into());
            info.insert("ProductType".into(), ipad.spec.model.product_type.into());
            info.insert("ProductVersion".into(), ipad.spec.release.version.into());
            info.insert("SerialNumber".into(), id.serial_number.clone().into());
            info.insert("SessionNonce".into(), Value::Data(nonce));
            info.insert("UniqueDeviceID".into(), id.udid.clone().into());
            let mut outer = Dictionary::new();
            outer.insert("ActivationInfoComplete".into(), true.into());
            outer.insert("ActivationInfoXML".into(), Value::Data(xml(&info)));
            outer.insert(
                "FairPlayCertChain".into(),
                Value::Data(crate::rng::random_bytes::<64>().to_vec()),
            );
            outer.insert(
                "FairPlaySignature".into(),
                Value::Data(crate::rng::random_bytes::<128>().to_vec()),
            );
            value(Value::Dictionary(outer))
        }
        "HandleActivationInfoWithSessionRequest" | "HandleActivationInfoRequest" => {
            let Some(nonce) = state.activation_session.clone() else {
                return error("No activation session.");
            };
            let record = req
                .get("Value")
                .and_then(Value::as_data)
                .and_then(|d| crate::untrusted::dictionary(d).ok());
            let record = record
                .as_ref()
                .and_then(|r| r.get("ActivationRecord"))
                .and_then(Value::as_dictionary);
            let token = record
                .and_then(|r| r.get("AccountToken"))
                .and_then(Value::as_data);
            let signature = record
                .and_then(|r| r.get("AccountTokenSignature"))
                .and_then(Value::as_data);
            let (Some(token), Some(signature)) = (token, signature) else {
                return error("The activation record is malformed.");
            };
            if !link.authority.verify(token, signature) {
                return error("The activation record signature is not valid.");
            }
            let claims = crate::untrusted::dictionary(token).unwrap_or_default();
            let for_us = claims.get("UniqueDeviceID").and_then(Value::as_string)
                == Some(id.udid.as_str())
                && claims.get("SessionNonce").and_then(Value::as_data) == Some(nonce.as_slice());
            if !for_us {
                return error("The activation record is for another device or session.");
            }
            state.activated = true;
            state.activation_session = None;
            // Activation tells the device whether it is assigned in Apple School Manager; one
            // still assigned to another organisation gets that organisation's configuration
            // (`docs/fidelity.md` §12).
            if let Some(org) = &link.ipad.spec.other_organization
                && state.cloud_config.is_none()
            {
                state.cloud_config = Some(crate::ipad::other_organization_configuration(org));
            }
            Dictionary::new()
        }
        "DeactivateRequest" => {
            state.activated = false;
            Dictionary::new()
        }
        other => error(&format!("Unknown command {other:?}.")),
    }
}
