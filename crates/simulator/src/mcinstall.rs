//! com.apple.mobile.MCInstall on a virtual iPad, with the device rules of iOS 26's
//! mc_mobile_tunnel (`docs/protocol.md` §3 and §5.3; the evidence for each rule is in
//! `docs/fidelity.md`): state per connection, escalation with a supervisor certificate and a
//! signed challenge, cloud configuration rules, profile installation (silent or only
//! "downloaded"), erase.

use plist::{Dictionary, Value};
use usbmux::plist_service;

use crate::faults::{self, FaultAction};
use crate::ipad::{DeviceState, Profile};
use crate::lockdownd::{Link, MALFORMED};
use crate::tls::BoxStream;

const TUNNEL: &str = "DMCTunnelErrorDomain";
const CLOUD: &str = "MCCloudConfigErrorDomain";
const DEP: &str = "DEPCloudConfigErrorDomain";
const PROFILE: &str = "MCProfileErrorDomain";

fn status(s: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Status".into(), s.into());
    d
}

fn acknowledged() -> Dictionary {
    status("Acknowledged")
}

/// A failure reply with one ErrorChain entry, as `MMTConnection parseErrorFromResponse:` sends it.
pub fn failure(code: i64, domain: &str, description: &str) -> Dictionary {
    let mut entry = Dictionary::new();
    entry.insert("ErrorCode".into(), code.into());
    entry.insert("ErrorDomain".into(), domain.into());
    entry.insert("LocalizedDescription".into(), description.into());
    entry.insert("USEnglishDescription".into(), description.into());
    let mut d = status("Error");
    d.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(entry)]),
    );
    d
}

/// Per-connection state: escalation swaps this connection's parser, not the device's.
#[derive(Default)]
struct Connection {
    escalated: bool,
    /// (supervisor certificate, challenge) between Escalate and EscalateResponse.
    challenge: Option<(Vec<u8>, Vec<u8>)>,
}

/// What the device must do after replying.
enum After {
    Continue,
    /// EraseDevice: the link drops and the device resets.
    Erase,
}

pub async fn serve(mut link: Link, mut stream: BoxStream) {
    use tokio::io::AsyncWriteExt;
    let mut conn = Connection::default();
    loop {
        let request = tokio::select! {
            biased;
        _ = link.gone() => return,
            r = plist_service::read(&mut stream) => r,
        };
        let request = match request {
            Ok(Some(r)) => r,
            _ => return,
        };
        let kind = request
            .get("RequestType")
            .and_then(Value::as_string)
            .unwrap_or("")
            .to_owned();
        let mut deep = false;
        match link.fault(&kind) {
            Some(FaultAction::Drop) => return,
            Some(FaultAction::Malformed) => {
                let _ = stream.write_all(MALFORMED).await;
                continue;
            }
            Some(FaultAction::Deep) => deep = true,
            Some(FaultAction::Delay { ms }) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await
            }
            Some(FaultAction::Error { name }) => {
                let _ = plist_service::write(&mut stream, &status(&name)).await;
                continue;
            }
            Some(FaultAction::ErrorAfter { name }) => {
                let _ = handle(&link, &mut conn, &kind, &request);
                let _ = plist_service::write(&mut stream, &status(&name)).await;
                continue;
            }
            None => {}
        }
        link.ipad.traffic.reply();
        if !link.ipad.spec.latency.is_zero() {
            tokio::time::sleep(link.ipad.spec.latency).await;
        }
        if take_migration_wait(&mut link.ipad.state()) {
            // Read but not run; the daemon goes on to read the next request.
            if plist_service::write(&mut stream, &migration_wait_reply())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if kind == "DownloadAndApplyCloudConfiguration" && fetches_from_apple(&link.ipad.state()) {
            // The device asks Apple, then the MDM, before it answers (docs/fidelity.md §6).
            let takes = link.ipad.spec.rules.ade_apply;
            tokio::select! {
                biased;
                _ = link.gone() => return,
                _ = tokio::time::sleep(takes) => {}
            }
        }
        let (answer, after) = handle(&link, &mut conn, &kind, &request);
        if deep {
            if stream
                .write_all(&faults::deep_message(&answer))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if plist_service::write(&mut stream, &answer).await.is_err() {
            return;
        }
        if let After::Erase = after {
            let _ = stream.shutdown().await;
            link.request_erase();
            return;
        }
    }
}

fn handle(link: &Link, conn: &mut Connection, kind: &str, req: &Dictionary) -> (Dictionary, After) {
    let ipad = &link.ipad;
    let mut state = ipad.state();
    let reply = match kind {
        "HelloHostIdentifier" | "Flush" | "Disconnect" => acknowledged(),
        "GetProfileList" => profile_list(&state),
        "InstallProfile" => install_profile(&mut state, req, false),
        "InstallProfileSilent" if conn.escalated => install_profile(&mut state, req, true),
        "RemoveProfile" => remove_profile(&mut state, req),
        "GetCloudConfiguration" => {
            let mut d = acknowledged();
            if let Some(cc) = &state.cloud_config {
                d.insert("CloudConfiguration".into(), Value::Dictionary(cc.clone()));
            }
            d
        }
        "SetCloudConfiguration" => match req
            .get("CloudConfiguration")
            .and_then(Value::as_dictionary)
        {
            Some(cc) => set_cloud_configuration(ipad.spec.ade.is_some(), &mut state, cc.clone()),
            None => status("CommandFormatError"),
        },
        "DownloadAndApplyCloudConfiguration" => download_and_apply(ipad, &mut state),
        "Escalate" => match req.get("SupervisorCertificate").and_then(Value::as_data) {
            Some(cert) if state.is_supervisor(cert) => {
                let challenge = crate::rng::random_bytes::<8>().to_vec();
                conn.challenge = Some((cert.to_vec(), challenge.clone()));
                let mut d = acknowledged();
                d.insert("Challenge".into(), Value::Data(challenge));
                d
            }
            // A missing certificate is looked up like any other and not found (IOS-tunnel
            // `_commandEscalate:completionBlock:`).
            Some(_) | None => status("CertificateRejected"),
        },
        "EscalateResponse" => {
            // The challenge is spent whatever happens.
            let pending = conn.challenge.take();
            match (pending, req.get("SignedRequest").and_then(Value::as_data)) {
                (Some((cert, challenge)), Some(signed)) => {
                    match crate::cms_verify::verify_attached(signed, &cert) {
                        Ok(content) if content == challenge => {
                            conn.escalated = true;
                            acknowledged()
                        }
                        Ok(_) => {
                            tracing::info!(
                                slot = ipad.spec.slot,
                                "EscalateResponse signs other bytes than the challenge"
                            );
                            status("SignedRequestRejected")
                        }
                        Err(why) => {
                            tracing::info!(
                                slot = ipad.spec.slot,
                                "EscalateResponse rejected: {why}"
                            );
                            status("SignedRequestRejected")
                        }
                    }
                }
                // No signature fails the CMS check like a bad one (IOS-tunnel
                // `_commandEscalateResponse:completionBlock:`).
                (_, None) | (None, Some(_)) => status("SignedRequestRejected"),
            }
        }
        "ProceedWithKeybagMigration" if conn.escalated => acknowledged(),
        "StoreProfile" => match (
            req.get("ProfileData").and_then(Value::as_data),
            req.get("Purpose").and_then(Value::as_string),
        ) {
            (Some(data), Some("PostSetupInstallation")) => match parse_profile(data) {
                Ok(_) => {
                    state.stored_profile = Some(data.to_vec());
                    acknowledged()
                }
                Err(why) => failure(1000, PROFILE, why),
            },
            _ => status("CommandFormatError"),
        },
        "GetStoredProfile" => match req.get("Purpose").and_then(Value::as_string) {
            Some("PostSetupInstallation") => {
                let mut d = acknowledged();
                if let Some(p) = &state.stored_profile {
                    d.insert("ProfileData".into(), Value::Data(p.clone()));
                }
                d
            }
            _ => status("CommandFormatError"),
        },
        "EraseDevice" => {
            let number_or_absent = |k: &str| {
                req.get(k).is_none_or(|v| {
                    matches!(v, Value::Boolean(_) | Value::Integer(_) | Value::Real(_))
                })
            };
            if !(number_or_absent("PreserveDataPlan") && number_or_absent("DisallowProximitySetup"))
            {
                status("CommandFormatError")
            } else {
                // The ack goes out before the reset starts.
                return (acknowledged(), After::Erase);
            }
        }
        "SetWiFiPowerState" => match req.get("PowerState").and_then(Value::as_boolean) {
            Some(on) => {
                state.wifi_power = on;
                acknowledged()
            }
            None => status("CommandFormatError"),
        },
        // Unknown requests, and supervised-only ones on an unescalated connection.
        _ => status("CommandFormatError"),
    };
    (reply, After::Continue)
}

fn profile_list(state: &DeviceState) -> Dictionary {
    let mut ids = Vec::new();
    let mut manifest = Dictionary::new();
    let mut metadata = Dictionary::new();
    for p in &state.profiles {
        ids.push(Value::String(p.identifier.clone()));
        let mut m = Dictionary::new();
        // A real device shows the display name here when the profile has no description.
        let description = if p.description.is_empty() {
            &p.display_name
        } else {
            &p.description
        };
        m.insert("Description".into(), description.clone().into());
        m.insert("IsActive".into(), true.into());
        manifest.insert(p.identifier.clone(), Value::Dictionary(m));
        let mut md = Dictionary::new();
        md.insert("PayloadDisplayName".into(), p.display_name.clone().into());
        if let Some(o) = &p.organization {
            md.insert("PayloadOrganization".into(), o.clone().into());
        }
        md.insert(
            "PayloadRemovalDisallowed".into(),
            p.removal_disallowed.into(),
        );
        md.insert("PayloadUUID".into(), p.uuid.clone().into());
        md.insert("PayloadVersion".into(), p.version.into());
        metadata.insert(p.identifier.clone(), Value::Dictionary(md));
    }
    let mut d = acknowledged();
    d.insert("OrderedIdentifiers".into(), Value::Array(ids));
    d.insert("ProfileManifest".into(), Value::Dictionary(manifest));
    d.insert("ProfileMetadata".into(), Value::Dictionary(metadata));
    d
}

/// Reads a .mobileconfig, plain or CMS-signed, as the device does before installing it.
pub fn parse_profile(bytes: &[u8]) -> Result<Profile, &'static str> {
    let plist_bytes = if bytes.first() == Some(&0x30) {
        signed_content(bytes).ok_or("The profile’s signature could not be read.")?
    } else {
        bytes.to_vec()
    };
    let dict =
        crate::untrusted::dictionary(&plist_bytes).map_err(|_| "The profile could not be read.")?;
    if dict.get("PayloadType").and_then(Value::as_string) != Some("Configuration") {
        return Err("The profile is not a configuration profile.");
    }
    let string = |k: &str| dict.get(k).and_then(Value::as_string).map(str::to_owned);
    let identifier = string("PayloadIdentifier").ok_or("The profile has no identifier.")?;
    let uuid = string("PayloadUUID").ok_or("The profile has no UUID.")?;
    let content = dict
        .get("PayloadContent")
        .and_then(Value::as_array)
        .ok_or("The profile has no payloads.")?;
    let payload_types = content
        .iter()
        .map(|p| {
            p.as_dictionary()
                .and_then(|d| d.get("PayloadType"))
                .and_then(Value::as_string)
                .map(str::to_owned)
                .ok_or("A payload has no type.")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Profile {
        display_name: string("PayloadDisplayName").unwrap_or_else(|| identifier.clone()),
        description: string("PayloadDescription").unwrap_or_default(),
        organization: string("PayloadOrganization"),
        version: dict
            .get("PayloadVersion")
            .and_then(Value::as_unsigned_integer)
            .unwrap_or(1),
        removal_disallowed: dict
            .get("PayloadRemovalDisallowed")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        identifier,
        uuid,
        payload_types,
        bytes: bytes.to_vec(),
    })
}

fn signed_content(der: &[u8]) -> Option<Vec<u8>> {
    use der::Decode;
    let info = cms::content_info::ContentInfo::from_der(der).ok()?;
    let signed: cms::signed_data::SignedData = info.content.decode_as().ok()?;
    let content = signed.encap_content_info.econtent?;
    Some(
        content
            .decode_as::<der::asn1::OctetString>()
            .ok()?
            .as_bytes()
            .to_vec(),
    )
}

fn install_profile(state: &mut DeviceState, req: &Dictionary, silent: bool) -> Dictionary {
    let bytes = match req.get("Payload") {
        Some(Value::Data(d)) => d.clone(),
        Some(Value::Dictionary(d)) => {
            let mut b = Vec::new();
            if plist::to_writer_xml(&mut b, d).is_err() {
                return failure(14000, TUNNEL, "The field “Payload” is invalid.");
            }
            b
        }
        _ => return failure(14000, TUNNEL, "The field “Payload” is invalid."),
    };
    let profile = match parse_profile(&bytes) {
        Ok(p) => p,
        Err(why) => return failure(1000, PROFILE, why),
    };
    // A supervised iPad still in Setup Assistant installs without asking; otherwise the
    // profile is only downloaded and waits for the user in Settings.
    let installs = silent || (state.is_supervised() && !state.setup_done);
    if installs {
        // Installing it supersedes a copy waiting for approval in Settings.
        state
            .downloaded
            .retain(|p| p.identifier != profile.identifier);
    }
    let list = if installs {
        &mut state.profiles
    } else {
        &mut state.downloaded
    };
    list.retain(|p| p.identifier != profile.identifier);
    list.push(profile);
    acknowledged()
}

fn remove_profile(state: &mut DeviceState, req: &Dictionary) -> Dictionary {
    let identifier = match req.get("ProfileIdentifier") {
        Some(Value::String(s)) => Some(s.clone()),
        // A stub profile plist: its PayloadIdentifier names the profile.
        Some(Value::Data(d)) => crate::untrusted::dictionary(d).ok().and_then(|s| {
            s.get("PayloadIdentifier")
                .and_then(Value::as_string)
                .map(str::to_owned)
        }),
        _ => return status("CommandFormatError"),
    };
    if let Some(id) = identifier {
        state.profiles.retain(|p| p.identifier != id);
    }
    // A missing identifier is acknowledged (the daemon only logs it).
    acknowledged()
}

/// Checks the types profiled checks; a wrong one is 33002.
fn valid_types(cc: &Dictionary) -> bool {
    let bools = [
        "AllowPairing",
        "IsSupervised",
        "IsMandatory",
        "IsMDMUnremovable",
        "IsMultiUser",
        "AwaitDeviceConfigured",
        "AutoAdvanceSetup",
        "CloudConfigurationUIComplete",
        "ConfigurationWasApplied",
        "PostSetupProfileWasInstalled",
    ];
    let strings = [
        "OrganizationName",
        "OrganizationMagic",
        "OrganizationDepartment",
        "OrganizationAddress",
        "OrganizationAddressLine1",
        "OrganizationAddressLine2",
        "OrganizationAddressLine3",
        "OrganizationCity",
        "OrganizationRegion",
        "OrganizationZipCode",
        "OrganizationCountry",
        "OrganizationPhone",
        "OrganizationEmail",
        "OrganizationSupportPhone",
        "OrganizationSupportEmail",
        "ConfigurationURL",
        "ConfigurationWebURL",
        "Language",
        "Region",
    ];
    let data_arrays = ["SupervisorHostCertificates", "AnchorCertificates"];
    bools
        .iter()
        .all(|k| cc.get(k).is_none_or(|v| crate::ipad::flag(v).is_some()))
        && strings
            .iter()
            .all(|k| cc.get(k).is_none_or(|v| v.as_string().is_some()))
        && data_arrays.iter().all(|k| {
            cc.get(k).is_none_or(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().all(|c| c.as_data().is_some()))
            })
        })
        && cc.get("SkipSetup").is_none_or(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|s| s.as_string().is_some()))
        })
        && cc
            .get("ConfigurationSource")
            .is_none_or(|v| v.as_unsigned_integer().is_some())
}

fn set_cloud_configuration(
    ade_assigned: bool,
    state: &mut DeviceState,
    mut cc: Dictionary,
) -> Dictionary {
    if state.cloud_config.is_some() {
        return failure(
            14002,
            TUNNEL,
            "A cloud configuration is already present on this device.",
        );
    }
    // The tunnel rewrites the dict before profiled sees it.
    cc.insert("ConfigurationSource".into(), 2u64.into());
    if !cc.contains_key("ConfigurationURL") && !cc.contains_key("ConfigurationWebURL") {
        cc.insert("CloudConfigurationUIComplete".into(), true.into());
        cc.insert("ConfigurationWasApplied".into(), true.into());
    }
    cc.insert("IsMandatory".into(), true.into());
    cc.insert("IsMDMUnremovable".into(), false.into());
    if !state.activated {
        return failure(
            33003,
            CLOUD,
            "Cannot store cloud configuration because this device is not activated.",
        );
    }
    if !valid_types(&cc) {
        return failure(33002, CLOUD, "The cloud configuration is invalid.");
    }
    if ade_assigned {
        return failure(
            33004,
            CLOUD,
            "Activation indicates device must be configured using DEP.",
        );
    }
    // profiled's rewrite (IOS-ccwriter `_updateCloudConfigDetails:`): IsMultiUser stays only on
    // a supervised iPad (iPads support Shared iPad), and AwaitDeviceConfigured is cleared only
    // when an unsupervised configuration asked for it.
    let supervised = cc.get("IsSupervised").and_then(crate::ipad::flag) == Some(true);
    if !supervised {
        if cc.get("AwaitDeviceConfigured").and_then(crate::ipad::flag) == Some(true) {
            cc.insert("AwaitDeviceConfigured".into(), false.into());
        }
        cc.remove("IsMultiUser");
    }
    if cc.get("AllowPairing").and_then(crate::ipad::flag) == Some(false) {
        // Saving such a configuration deletes every lockdown pairing record.
        state.hosts.clear();
    }
    state.cloud_config = Some(cc);
    acknowledged()
}

/// Whether this request gets the "wait until preboard is finished" reply: a data migration is
/// pending and the iPad was not unlocked since boot (iOS 26.1 decompile, `MMTConnection
/// executeNextCommand`; the scenario's `migration_wait_replies` says for how many requests).
fn take_migration_wait(state: &mut DeviceState) -> bool {
    if state.migration_waits_left == 0 {
        return false;
    }
    state.migration_waits_left -= 1;
    true
}

/// The daemon sends a fixed dictionary whose content the decompile does not show; the simulator
/// sends an empty one, which proven clients would read as neither success nor a known error.
fn migration_wait_reply() -> Dictionary {
    Dictionary::new()
}

fn has_payload(profiles: &[Profile], payload_type: &str) -> bool {
    profiles
        .iter()
        .any(|p| p.payload_types.iter().any(|t| t == payload_type))
}

/// Whether the device has a way onto the network in Setup Assistant: a Wi-Fi profile the host
/// sent, installed or (on an unsupervised iPad, in this simulator) downloaded. The simulator
/// has no other network (no tethering, no cellular iPads).
fn has_wifi(state: &DeviceState) -> bool {
    has_payload(&state.profiles, WIFI_PAYLOAD) || has_payload(&state.downloaded, WIFI_PAYLOAD)
}

const WIFI_PAYLOAD: &str = "com.apple.wifi.managed";

/// `DownloadAndApplyCloudConfiguration` goes to Apple (and takes its time) unless an MDM
/// profile is installed already or the device has no network.
fn fetches_from_apple(state: &DeviceState) -> bool {
    !has_payload(&state.profiles, "com.apple.mdm") && has_wifi(state)
}

fn download_and_apply(ipad: &crate::ipad::VirtualIpad, state: &mut DeviceState) -> Dictionary {
    if has_payload(&state.profiles, "com.apple.mdm") {
        return acknowledged();
    }
    if !has_wifi(state) {
        return failure(
            -1009,
            "NSURLErrorDomain",
            "The Internet connection appears to be offline.",
        );
    }
    let Some(ade) = &ipad.spec.ade else {
        return failure(
            33005,
            DEP,
            "The cloud configuration could not be retrieved: this device is not assigned to a device management server.",
        );
    };
    if !state.activated {
        return failure(
            33003,
            CLOUD,
            "Cannot store cloud configuration because this device is not activated.",
        );
    }
    let mut cc = Dictionary::new();
    cc.insert("AllowPairing".into(), true.into());
    cc.insert("ConfigurationSource".into(), 1u64.into());
    cc.insert(
        "ConfigurationURL".into(),
        ade.configuration_url.clone().into(),
    );
    cc.insert("IsMandatory".into(), true.into());
    cc.insert("IsMDMUnremovable".into(), false.into());
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("OrganizationName".into(), ade.organization.clone().into());
    cc.insert("SkipSetup".into(), Value::Array(vec![]));
    cc.insert("CloudConfigurationUIComplete".into(), true.into());
    cc.insert("ConfigurationWasApplied".into(), true.into());
    cc.insert("PostSetupProfileWasInstalled".into(), true.into());
    state.cloud_config = Some(cc);
    acknowledged()
}
