//! The MCInstall connection: `lockdown::services` for the transport (lockdown session,
//! StartService, usbmuxd Connect, service TLS, every reply checked within bounds), our own
//! framing on top (idevice's plist functions are private), one typed method per request.

use std::time::Duration;

use idevice::{Idevice, IdeviceError, IdeviceService};
use lockdown::ChallengeSigner;
use plist::{Dictionary, Value};

use crate::error::{McInstallError, check_reply, is_wait_reply};
use crate::profile_list::{self, ProfileList};

/// The lockdown service name.
pub const SERVICE_NAME: &str = "com.apple.mobile.MCInstall";
/// `StoreProfile` / `GetStoredProfile` purpose (the only one the device accepts).
pub const POST_SETUP_INSTALLATION: &str = "PostSetupInstallation";

/// Deadlines. Every read from the device has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Lockdown session, StartService, Connect and TLS, together.
    pub connect: Duration,
    /// Writing a request, and reading an ordinary reply.
    pub reply: Duration,
    /// The reply to `ProceedWithKeybagMigration` (the device waits up to 300 s for the keybag).
    pub keybag_migration: Duration,
    /// The reply to `DownloadAndApplyCloudConfiguration`: the device fetches its configuration
    /// from Apple and then from the MDM (SCEP included) before answering, which takes seconds
    /// to minutes (`docs/protocol.md` §3.3).
    pub cloud_configuration_download: Duration,
    /// How long a request is sent again while the device answers "wait" (a data migration
    /// pending since boot, [`crate::error::is_wait_reply`]).
    pub migration_wait: Duration,
}

/// The pause between a "wait" reply and sending the request again.
pub const WAIT_PAUSE: Duration = Duration::from_millis(500);

/// The least [`Timeouts::cloud_configuration_download`] worth using: a shorter deadline would
/// give up on a device that is still fetching (issue 8: at least 180 s).
pub const MIN_CLOUD_CONFIGURATION_DOWNLOAD: Duration = Duration::from_secs(180);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            reply: Duration::from_secs(30),
            keybag_migration: Duration::from_secs(330),
            cloud_configuration_download: Duration::from_secs(300),
            migration_wait: Duration::from_secs(120),
        }
    }
}

/// How `EraseDevice` ended; both are success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseOutcome {
    /// The device acknowledged before resetting.
    Acknowledged,
    /// The link dropped instead of the acknowledgement (the reset had begun).
    ConnectionClosed,
}

/// A `com.apple.mobile.MCInstall` connection. State (escalation) belongs to the connection:
/// `Escalate` … `InstallProfileSilent` must use the same one.
pub struct McInstallClient {
    idevice: Idevice,
    timeouts: Timeouts,
    escalated: bool,
    /// Set when the stream may be out of step (a reply not read to its end, a late reply still
    /// on its way): later requests fail at once instead of reading a stale reply.
    broken: Option<&'static str>,
}

impl std::fmt::Debug for McInstallClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McInstallClient")
            .field("timeouts", &self.timeouts)
            .field("escalated", &self.escalated)
            .field("broken", &self.broken)
            .finish()
    }
}

impl IdeviceService for McInstallClient {
    fn service_name() -> std::borrow::Cow<'static, str> {
        SERVICE_NAME.into()
    }

    async fn from_stream(idevice: Idevice) -> Result<Self, IdeviceError> {
        Ok(McInstallClient::from_idevice(idevice))
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
    )
}

fn map_io(request: &'static str, e: IdeviceError) -> McInstallError {
    match e {
        IdeviceError::Socket(io) if is_closed(&io) => McInstallError::ConnectionClosed { request },
        IdeviceError::NoEstablishedConnection => McInstallError::ConnectionClosed { request },
        other => McInstallError::Connection {
            request,
            reason: other.to_string(),
        },
    }
}

fn request_dict(kind: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("RequestType".into(), kind.into());
    d
}

impl McInstallClient {
    /// Wraps a connection that is already at the service (after TLS, if any).
    pub fn from_idevice(idevice: Idevice) -> Self {
        McInstallClient {
            idevice,
            timeouts: Timeouts::default(),
            escalated: false,
            broken: None,
        }
    }

    /// Lockdown StartSession → StartService → usbmuxd Connect → TLS when `EnableServiceSSL`,
    /// within the default connect deadline, every reply checked within bounds
    /// (`lockdown::services`). (This inherent method shadows `IdeviceService::connect`, adding
    /// the deadline, the bounds and typed errors.)
    pub async fn connect(provider: &lockdown::UsbmuxProvider) -> Result<Self, McInstallError> {
        Self::connect_with_timeouts(provider, Timeouts::default()).await
    }

    pub async fn connect_with_timeouts(
        provider: &lockdown::UsbmuxProvider,
        timeouts: Timeouts,
    ) -> Result<Self, McInstallError> {
        let connect =
            lockdown::services::connect_plist_service(provider, SERVICE_NAME, timeouts.connect);
        match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(idevice)) => Ok(McInstallClient::from_idevice(idevice).with_timeouts(timeouts)),
            Ok(Err(e)) => Err(McInstallError::Lockdown(e)),
            Err(_) => Err(McInstallError::Timeout {
                request: "Connect",
                after: timeouts.connect,
            }),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Whether `EscalateResponse` succeeded on this connection.
    pub fn is_escalated(&self) -> bool {
        self.escalated
    }

    pub fn into_idevice(self) -> Idevice {
        self.idevice
    }

    // -----------------------------------------------------------------------------------------
    // Framing

    /// Writes one request: 4-byte big-endian length, XML plist.
    pub async fn send_message(
        &mut self,
        request: &'static str,
        message: &Dictionary,
    ) -> Result<(), McInstallError> {
        let frame =
            usbmux::plist_service::encode(message).map_err(|e| McInstallError::MalformedReply {
                request,
                reason: format!("cannot encode the request: {e}"),
            })?;
        self.usable(request)?;
        let after = self.timeouts.reply;
        let result = match tokio::time::timeout(after, self.idevice.send_raw(&frame)).await {
            Ok(r) => r.map_err(|e| map_io(request, e)),
            Err(_) => Err(McInstallError::Timeout { request, after }),
        };
        if result.is_err() {
            self.broken = Some(request);
        }
        result
    }

    /// Whether earlier failures left the stream usable.
    pub fn is_usable(&self) -> bool {
        self.broken.is_none()
    }

    fn usable(&self, request: &'static str) -> Result<(), McInstallError> {
        match self.broken {
            None => Ok(()),
            Some(earlier) => Err(McInstallError::Connection {
                request,
                reason: format!(
                    "the connection is out of step since {earlier} failed; open a new one"
                ),
            }),
        }
    }

    /// Reads one reply (XML or binary plist dictionary) within `after`. Lengths of 0 or above
    /// 16 MiB are refused before allocating.
    pub async fn read_message(
        &mut self,
        request: &'static str,
        after: Duration,
    ) -> Result<Dictionary, McInstallError> {
        self.usable(request)?;
        let idevice = &mut self.idevice;
        let read = async move {
            let head = idevice.read_raw(4).await.map_err(|e| map_io(request, e))?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if len == 0 || len > usbmux::plist_service::MAX_MESSAGE_LEN {
                return Err(McInstallError::MalformedReply {
                    request,
                    reason: format!("reply length {len} out of range"),
                });
            }
            let body = idevice
                .read_raw(len as usize)
                .await
                .map_err(|e| map_io(request, e))?;
            // The frame was read whole: a bad body leaves the stream in step.
            Ok(usbmux::plist_service::decode_body(&body).map_err(|e| {
                McInstallError::MalformedReply {
                    request,
                    reason: e.to_string(),
                }
            }))
        };
        match tokio::time::timeout(after, read).await {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(e)) => {
                self.broken = Some(request);
                Err(e)
            }
            Err(_) => {
                self.broken = Some(request);
                Err(McInstallError::Timeout { request, after })
            }
        }
    }

    /// Sends `message` and returns the reply as it is, unchecked (for requests this type does
    /// not wrap).
    pub async fn exchange(
        &mut self,
        request: &'static str,
        message: &Dictionary,
        after: Duration,
    ) -> Result<Dictionary, McInstallError> {
        tracing::debug!(request, "MCInstall request");
        self.send_message(request, message).await?;
        self.read_message(request, after).await
    }

    /// `{RequestType: kind, …fields}` → checked reply.
    async fn request(
        &mut self,
        kind: &'static str,
        fields: Dictionary,
    ) -> Result<Dictionary, McInstallError> {
        let after = self.timeouts.reply;
        self.request_within(kind, fields, after).await
    }

    async fn request_within(
        &mut self,
        kind: &'static str,
        fields: Dictionary,
        after: Duration,
    ) -> Result<Dictionary, McInstallError> {
        let mut message = request_dict(kind);
        for (k, v) in fields {
            message.insert(k, v);
        }
        let mut waited = Duration::ZERO;
        loop {
            let reply = self.exchange(kind, &message, after).await?;
            if !is_wait_reply(&reply) {
                check_reply(kind, &reply)?;
                return Ok(reply);
            }
            // The device did not run the request: send it again once it is ready.
            if waited >= self.timeouts.migration_wait {
                return Err(McInstallError::StillWaiting {
                    request: kind,
                    waited,
                });
            }
            tracing::info!(
                request = kind,
                "the device asks to wait (data migration pending)"
            );
            tokio::time::sleep(WAIT_PAUSE).await;
            waited += WAIT_PAUSE;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    /// `HelloHostIdentifier`: a no-op ping.
    pub async fn hello_host_identifier(&mut self) -> Result<(), McInstallError> {
        self.request("HelloHostIdentifier", Dictionary::new())
            .await
            .map(drop)
    }

    /// `Flush`: flushes the command queue.
    pub async fn flush(&mut self) -> Result<(), McInstallError> {
        self.request("Flush", Dictionary::new()).await.map(drop)
    }

    /// `GetProfileList`.
    pub async fn get_profile_list(&mut self) -> Result<ProfileList, McInstallError> {
        let reply = self.request("GetProfileList", Dictionary::new()).await?;
        profile_list::parse(&reply)
    }

    fn payload(bytes: &[u8]) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Payload".into(), Value::Data(bytes.to_vec()));
        d
    }

    /// `InstallProfile`: raw or CMS-signed `.mobileconfig`. Interactive on a set-up,
    /// unsupervised device (the user finishes it in Settings).
    pub async fn install_profile(&mut self, profile: &[u8]) -> Result<(), McInstallError> {
        self.request("InstallProfile", Self::payload(profile))
            .await
            .map(drop)
    }

    /// `InstallProfileSilent`: needs an escalated connection ([`Self::escalate`]).
    pub async fn install_profile_silent(&mut self, profile: &[u8]) -> Result<(), McInstallError> {
        self.request("InstallProfileSilent", Self::payload(profile))
            .await
            .map(drop)
    }

    /// `RemoveProfile` by identifier (the string form). A missing identifier is acknowledged.
    pub async fn remove_profile(&mut self, identifier: &str) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        d.insert("ProfileIdentifier".into(), identifier.into());
        self.request("RemoveProfile", d).await.map(drop)
    }

    /// `GetCloudConfiguration`: `None` when the device has none (the key is absent).
    pub async fn get_cloud_configuration(&mut self) -> Result<Option<Dictionary>, McInstallError> {
        let mut reply = self
            .request("GetCloudConfiguration", Dictionary::new())
            .await?;
        match reply.remove("CloudConfiguration") {
            None => Ok(None),
            Some(Value::Dictionary(d)) => Ok(Some(d)),
            Some(_) => Err(McInstallError::MalformedReply {
                request: "GetCloudConfiguration",
                reason: "CloudConfiguration is not a dictionary".into(),
            }),
        }
    }

    /// `SetCloudConfiguration`. Fails with [`McInstallError::AlreadyConfigured`] when one
    /// exists, [`McInstallError::NotActivated`], [`McInstallError::MustUseAde`],
    /// [`McInstallError::CloudConfigInvalid`].
    pub async fn set_cloud_configuration(
        &mut self,
        configuration: &Dictionary,
    ) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        d.insert(
            "CloudConfiguration".into(),
            Value::Dictionary(configuration.clone()),
        );
        self.request("SetCloudConfiguration", d).await.map(drop)
    }

    /// `DownloadAndApplyCloudConfiguration` (the ADE path), with optional MDM credentials,
    /// within [`Timeouts::cloud_configuration_download`]. Not worth re-sending blindly after a
    /// timeout: the device may still be applying it (read `GetCloudConfiguration` first).
    pub async fn download_and_apply_cloud_configuration(
        &mut self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        if let Some(u) = username {
            d.insert("MDMUsername".into(), u.into());
        }
        if let Some(p) = password {
            d.insert("MDMPassword".into(), p.into());
        }
        let after = self.timeouts.cloud_configuration_download;
        self.request_within("DownloadAndApplyCloudConfiguration", d, after)
            .await
            .map(drop)
    }

    /// `Escalate` only: the 8-byte challenge to sign.
    pub async fn escalate_request(
        &mut self,
        certificate_der: &[u8],
    ) -> Result<Vec<u8>, McInstallError> {
        let mut d = Dictionary::new();
        d.insert(
            "SupervisorCertificate".into(),
            Value::Data(certificate_der.to_vec()),
        );
        let reply = self.request("Escalate", d).await?;
        match reply.get("Challenge") {
            Some(Value::Data(c)) if !c.is_empty() => {
                if c.len() != 8 {
                    tracing::warn!(len = c.len(), "Escalate challenge is not 8 bytes");
                }
                Ok(c.clone())
            }
            _ => Err(McInstallError::MalformedReply {
                request: "Escalate",
                reason: "no Challenge data".into(),
            }),
        }
    }

    /// `EscalateResponse` only, with the CMS SignedData over the challenge.
    pub async fn escalate_response(&mut self, signed_request: &[u8]) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        d.insert("SignedRequest".into(), Value::Data(signed_request.to_vec()));
        self.request("EscalateResponse", d).await?;
        self.escalated = true;
        Ok(())
    }

    /// `ProceedWithKeybagMigration`, with its own long deadline.
    pub async fn proceed_with_keybag_migration(&mut self) -> Result<(), McInstallError> {
        let after = self.timeouts.keybag_migration;
        self.request_within("ProceedWithKeybagMigration", Dictionary::new(), after)
            .await
            .map(drop)
    }

    /// The whole handshake on this connection: `Escalate` with `certificate_der` → sign the
    /// challenge → `EscalateResponse` → `ProceedWithKeybagMigration`. Supervised requests
    /// (`InstallProfileSilent`) then work on this connection.
    pub async fn escalate(
        &mut self,
        certificate_der: &[u8],
        signer: &dyn ChallengeSigner,
    ) -> Result<(), McInstallError> {
        let challenge = self.escalate_request(certificate_der).await?;
        let signed = signer.sign(&challenge).map_err(McInstallError::Signer)?;
        self.escalate_response(&signed).await?;
        self.proceed_with_keybag_migration().await
    }

    /// [`Self::escalate`] with the signer's own certificate.
    pub async fn escalate_with(
        &mut self,
        signer: &dyn ChallengeSigner,
    ) -> Result<(), McInstallError> {
        let certificate = signer.certificate_der().to_vec();
        self.escalate(&certificate, signer).await
    }

    /// `StoreProfile` (purpose `PostSetupInstallation`): installed later by Setup Assistant.
    pub async fn store_profile(&mut self, profile: &[u8]) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        d.insert("ProfileData".into(), Value::Data(profile.to_vec()));
        d.insert("Purpose".into(), POST_SETUP_INSTALLATION.into());
        self.request("StoreProfile", d).await.map(drop)
    }

    /// `GetStoredProfile`: the stored profile, if any.
    pub async fn get_stored_profile(&mut self) -> Result<Option<Vec<u8>>, McInstallError> {
        let mut d = Dictionary::new();
        d.insert("Purpose".into(), POST_SETUP_INSTALLATION.into());
        let mut reply = self.request("GetStoredProfile", d).await?;
        match reply.remove("ProfileData") {
            None => Ok(None),
            Some(Value::Data(b)) => Ok(Some(b)),
            Some(_) => Err(McInstallError::MalformedReply {
                request: "GetStoredProfile",
                reason: "ProfileData is not data".into(),
            }),
        }
    }

    /// `EraseDevice`. The device acknowledges and then resets, dropping the link; a dropped
    /// link instead of the acknowledgement also counts as success (as in pymobiledevice3 and
    /// go-ios). The connection is consumed.
    pub async fn erase_device(
        mut self,
        preserve_data_plan: bool,
        disallow_proximity_setup: bool,
    ) -> Result<EraseOutcome, McInstallError> {
        const R: &str = "EraseDevice";
        let mut message = request_dict(R);
        message.insert("PreserveDataPlan".into(), preserve_data_plan.into());
        message.insert(
            "DisallowProximitySetup".into(),
            disallow_proximity_setup.into(),
        );
        tracing::debug!(request = R, "MCInstall request");
        self.send_message(R, &message).await?;
        let after = self.timeouts.reply;
        match self.read_message(R, after).await {
            Ok(reply) => check_reply(R, &reply).map(|()| EraseOutcome::Acknowledged),
            Err(McInstallError::ConnectionClosed { .. }) => Ok(EraseOutcome::ConnectionClosed),
            Err(e) => Err(e),
        }
    }

    /// `SetWiFiPowerState`.
    pub async fn set_wifi_power_state(&mut self, on: bool) -> Result<(), McInstallError> {
        let mut d = Dictionary::new();
        d.insert("PowerState".into(), on.into());
        self.request("SetWiFiPowerState", d).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    //! Framing and requests against a fake peer on an in-memory stream.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use usbmux::plist_service;

    fn connected() -> (McInstallClient, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let client = McInstallClient::from_idevice(Idevice::new(Box::new(ours), "test"));
        (client, theirs)
    }

    async fn next(peer: &mut DuplexStream) -> Dictionary {
        plist_service::read(peer)
            .await
            .expect("a well-formed request")
            .expect("a request, not EOF")
    }

    fn ack() -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Status".into(), "Acknowledged".into());
        d
    }

    async fn answer(peer: &mut DuplexStream, d: &Dictionary) {
        plist_service::write(peer, d).await.unwrap();
    }

    /// Answers in binary plist, which the client must accept too.
    async fn answer_binary(peer: &mut DuplexStream, d: &Dictionary) {
        let mut body = Vec::new();
        plist::to_writer_binary(&mut body, d).unwrap();
        peer.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        peer.write_all(&body).await.unwrap();
    }

    struct FakeSigner;
    impl ChallengeSigner for FakeSigner {
        fn certificate_der(&self) -> &[u8] {
            b"CERT"
        }
        fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
            Ok([b"SIGNED:".as_slice(), content].concat())
        }
    }

    #[tokio::test]
    async fn requests_carry_their_fields_and_binary_replies_are_read() {
        let (mut mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("RemoveProfile"));
            assert_eq!(r["ProfileIdentifier"].as_string(), Some("org.example.wifi"));
            answer_binary(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(
                r["RequestType"].as_string(),
                Some("DownloadAndApplyCloudConfiguration")
            );
            assert_eq!(r["MDMUsername"].as_string(), Some("u"));
            assert_eq!(r["MDMPassword"].as_string(), Some("p"));
            answer(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("SetWiFiPowerState"));
            assert_eq!(r["PowerState"].as_boolean(), Some(false));
            answer(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("StoreProfile"));
            assert_eq!(r["Purpose"].as_string(), Some("PostSetupInstallation"));
            assert_eq!(r["ProfileData"].as_data(), Some(&b"<plist/>"[..]));
            answer(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("GetStoredProfile"));
            assert_eq!(r["Purpose"].as_string(), Some("PostSetupInstallation"));
            let mut d = ack();
            d.insert("ProfileData".into(), Value::Data(b"<plist/>".to_vec()));
            answer(&mut peer, &d).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("GetCloudConfiguration"));
            answer(&mut peer, &ack()).await;
        });
        mc.remove_profile("org.example.wifi").await.unwrap();
        mc.download_and_apply_cloud_configuration(Some("u"), Some("p"))
            .await
            .unwrap();
        mc.set_wifi_power_state(false).await.unwrap();
        mc.store_profile(b"<plist/>").await.unwrap();
        assert_eq!(
            mc.get_stored_profile().await.unwrap().as_deref(),
            Some(&b"<plist/>"[..])
        );
        assert_eq!(mc.get_cloud_configuration().await.unwrap(), None);
        device.await.unwrap();
    }

    #[tokio::test]
    async fn lengths_out_of_range_are_refused() {
        for len in [0u32, 16 * 1024 * 1024 + 1, u32::MAX] {
            let (mut mc, mut peer) = connected();
            let device = tokio::spawn(async move {
                let _ = next(&mut peer).await;
                peer.write_all(&len.to_be_bytes()).await.unwrap();
                peer
            });
            let e = mc.flush().await.unwrap_err();
            assert!(
                matches!(
                    e,
                    McInstallError::MalformedReply {
                        request: "Flush",
                        ..
                    }
                ),
                "{len}: {e:?}"
            );
            drop(device.await.unwrap());
        }
    }

    #[tokio::test]
    async fn non_dictionary_and_garbage_replies_are_malformed() {
        let (mut mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let _ = next(&mut peer).await;
            let mut body = Vec::new();
            plist::to_writer_xml(&mut body, &Value::Array(vec![])).unwrap();
            peer.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            peer.write_all(&body).await.unwrap();
            let _ = next(&mut peer).await;
            peer.write_all(&5u32.to_be_bytes()).await.unwrap();
            peer.write_all(b"\x00\x01junk").await.unwrap();
            peer
        });
        assert!(matches!(
            mc.hello_host_identifier().await,
            Err(McInstallError::MalformedReply { .. })
        ));
        assert!(matches!(
            mc.hello_host_identifier().await,
            Err(McInstallError::MalformedReply { .. })
        ));
        drop(device.await.unwrap());
    }

    #[tokio::test]
    async fn a_reply_nested_ten_thousand_levels_is_malformed_and_the_stream_stays_in_step() {
        use usbmux::test_support::{Format, dict_with_deep_array};
        let (mut mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            for format in [Format::Binary, Format::Xml] {
                let _ = next(&mut peer).await;
                // Acknowledged, but with a value no reader should descend into.
                let body = dict_with_deep_array(format, &[("Status", "Acknowledged")], 10_000);
                peer.write_all(&(body.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                peer.write_all(&body).await.unwrap();
            }
            let _ = next(&mut peer).await;
            answer(&mut peer, &ack()).await;
            peer
        });
        for format in ["binary", "xml"] {
            match mc.hello_host_identifier().await {
                Err(McInstallError::MalformedReply { reason, .. }) => {
                    assert!(reason.contains("nests deeper than"), "{format}: {reason}")
                }
                other => panic!("{format}: expected MalformedReply, got {other:?}"),
            }
        }
        mc.flush().await.expect("the next request is answered");
        drop(device.await.unwrap());
    }

    #[tokio::test]
    async fn a_silent_device_is_a_timeout_and_eof_is_a_closed_connection() {
        let (mc, mut peer) = connected();
        let mut mc = mc.with_timeouts(Timeouts {
            reply: Duration::from_millis(200),
            ..Timeouts::default()
        });
        let device = tokio::spawn(async move {
            let _ = next(&mut peer).await;
            // Half a length prefix, then nothing.
            peer.write_all(&[0, 0]).await.unwrap();
            // Nothing more arrives: the client closes.
            let mut rest = Vec::new();
            let _ = peer.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "no request after the timeout");
        });
        match mc.get_profile_list().await {
            Err(McInstallError::Timeout { request, after }) => {
                assert_eq!(request, "GetProfileList");
                assert_eq!(after, Duration::from_millis(200));
            }
            other => panic!("{other:?}"),
        }
        // The half-read prefix leaves the stream out of step: later requests fail at once,
        // without reading a late reply as theirs.
        assert!(!mc.is_usable());
        match mc.flush().await {
            Err(McInstallError::Connection { request, reason }) => {
                assert_eq!(request, "Flush");
                assert!(reason.contains("GetProfileList"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        drop(mc);
        device.await.unwrap();

        let (mut mc, peer) = connected();
        drop(peer);
        let e = mc.flush().await.unwrap_err();
        assert!(
            matches!(e, McInstallError::ConnectionClosed { .. }),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn escalation_signs_the_challenge_and_waits_longer_for_the_keybag() {
        let (mc, mut peer) = connected();
        let mut mc = mc.with_timeouts(Timeouts {
            reply: Duration::from_millis(300),
            keybag_migration: Duration::from_secs(5),
            ..Timeouts::default()
        });
        let device = tokio::spawn(async move {
            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("Escalate"));
            assert_eq!(r["SupervisorCertificate"].as_data(), Some(&b"CERT"[..]));
            let mut d = ack();
            d.insert("Challenge".into(), Value::Data(b"\n1234567".to_vec()));
            answer(&mut peer, &d).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("EscalateResponse"));
            assert_eq!(
                r["SignedRequest"].as_data(),
                Some(&b"SIGNED:\n1234567"[..]),
                "the raw challenge bytes are signed"
            );
            answer(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(
                r["RequestType"].as_string(),
                Some("ProceedWithKeybagMigration")
            );
            // Longer than an ordinary reply may take.
            tokio::time::sleep(Duration::from_millis(800)).await;
            answer(&mut peer, &ack()).await;

            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("InstallProfileSilent"));
            assert_eq!(r["Payload"].as_data(), Some(&b"profile"[..]));
            answer(&mut peer, &ack()).await;
        });
        mc.escalate_with(&FakeSigner).await.unwrap();
        assert!(mc.is_escalated());
        mc.install_profile_silent(b"profile").await.unwrap();
        device.await.unwrap();
    }

    #[tokio::test]
    async fn a_keybag_failure_is_typed() {
        let (mut mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let _ = next(&mut peer).await;
            let mut entry = Dictionary::new();
            entry.insert("ErrorCode".into(), 37001.into());
            entry.insert("ErrorDomain".into(), "DMCKeybagErrorDomain".into());
            entry.insert(
                "USEnglishDescription".into(),
                "The keybag timed out.".into(),
            );
            let mut d = Dictionary::new();
            d.insert("Status".into(), "Error".into());
            d.insert(
                "ErrorChain".into(),
                Value::Array(vec![Value::Dictionary(entry)]),
            );
            answer(&mut peer, &d).await;
            peer
        });
        match mc.proceed_with_keybag_migration().await {
            Err(e @ McInstallError::KeybagMigrationFailed { code: 37001, .. }) => {
                assert!(e.to_string().contains("The keybag timed out."))
            }
            other => panic!("{other:?}"),
        }
        drop(device.await.unwrap());
    }

    #[tokio::test]
    async fn erase_succeeds_on_ack_and_on_eof_but_not_on_an_error() {
        // EOF instead of the ack.
        let (mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let r = next(&mut peer).await;
            assert_eq!(r["RequestType"].as_string(), Some("EraseDevice"));
            assert_eq!(r["PreserveDataPlan"].as_boolean(), Some(true));
            assert_eq!(r["DisallowProximitySetup"].as_boolean(), Some(false));
        });
        assert_eq!(
            mc.erase_device(true, false).await.unwrap(),
            EraseOutcome::ConnectionClosed
        );
        device.await.unwrap();

        // The ack, then the link drops.
        let (mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let _ = next(&mut peer).await;
            answer(&mut peer, &ack()).await;
        });
        assert_eq!(
            mc.erase_device(false, true).await.unwrap(),
            EraseOutcome::Acknowledged
        );
        device.await.unwrap();

        // A refusal is an error.
        let (mc, mut peer) = connected();
        let device = tokio::spawn(async move {
            let _ = next(&mut peer).await;
            let mut d = Dictionary::new();
            d.insert("Status".into(), "CommandFormatError".into());
            answer(&mut peer, &d).await;
            let mut rest = Vec::new();
            let _ = peer.read_to_end(&mut rest).await;
        });
        assert!(matches!(
            mc.erase_device(true, false).await,
            Err(McInstallError::CommandFormatError { .. })
        ));
        device.await.unwrap();
    }
}
