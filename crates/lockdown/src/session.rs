//! A lockdownd connection to one device, on top of idevice's `LockdownClient`, with a timeout on
//! every exchange.

use std::future::Future;
use std::time::Duration;

use idevice::pairing_file::PairingFile;
use idevice::services::lockdown::LockdownClient;
use plist::Value;
use usbmux::transcript::{Tap, Transcript};
use usbmux::{DeviceProperties, UsbmuxAddress};

use crate::error::LockdownError;
use crate::provider::{UsbmuxProvider, connect_lockdown, connect_port, guarded_service};

/// Default wait for one lockdownd reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Label sent with every request.
pub const LABEL: &str = "cartprep";

/// Runs `fut` with a deadline, mapping idevice errors.
pub async fn timed<T>(
    operation: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, idevice::IdeviceError>>,
) -> Result<T, LockdownError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(|e| LockdownError::from_idevice(operation, e)),
        Err(_) => Err(LockdownError::Timeout { operation, after }),
    }
}

/// Which device a session talks to.
#[derive(Debug, Clone)]
pub struct DeviceRef {
    pub addr: UsbmuxAddress,
    pub device_id: u32,
    pub udid: String,
    /// Where the device's traffic is recorded; off unless asked for (`with_transcript`).
    pub transcript: Transcript,
}

/// The same device, whether or not its traffic is recorded.
impl PartialEq for DeviceRef {
    fn eq(&self, other: &Self) -> bool {
        (&self.addr, self.device_id, &self.udid) == (&other.addr, other.device_id, &other.udid)
    }
}

impl Eq for DeviceRef {}

impl DeviceRef {
    pub fn new(addr: UsbmuxAddress, device: &DeviceProperties) -> Self {
        DeviceRef {
            addr,
            device_id: device.device_id,
            udid: device.udid.clone(),
            transcript: Transcript::off(),
        }
    }

    /// Records every request and reply to this device in `transcript`.
    pub fn with_transcript(mut self, transcript: Transcript) -> Self {
        self.transcript = transcript;
        self
    }
}

pub struct DeviceSession {
    pub device: DeviceRef,
    client: LockdownClient,
    timeout: Duration,
    in_session: bool,
    /// This connection's place in the transcript, kept for the TLS stream StartSession makes.
    tap: Option<Tap>,
}

impl std::fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("device", &self.device)
            .field("in_session", &self.in_session)
            .finish()
    }
}

impl DeviceSession {
    /// Opens a usbmuxd tunnel to lockdownd (port 62078) on the device.
    pub async fn connect(device: DeviceRef) -> Result<Self, LockdownError> {
        Self::connect_with_timeout(device, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        device: DeviceRef,
        timeout: Duration,
    ) -> Result<Self, LockdownError> {
        let (idevice, tap) = tokio::time::timeout(
            timeout,
            connect_lockdown(&device.addr, device.device_id, LABEL, &device.transcript),
        )
        .await
        .map_err(|_| LockdownError::Timeout {
            operation: "Connect",
            after: timeout,
        })??;
        Ok(DeviceSession {
            device,
            client: LockdownClient::new(idevice),
            timeout,
            in_session: false,
            tap,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn in_session(&self) -> bool {
        self.in_session
    }

    /// The underlying idevice client, for requests this type does not wrap (raw framing).
    pub fn client(&mut self) -> &mut LockdownClient {
        &mut self.client
    }

    /// `QueryType`: `com.apple.mobile.lockdown` in normal mode.
    pub async fn query_type(&mut self) -> Result<String, LockdownError> {
        timed("QueryType", self.timeout, self.client.idevice.get_type()).await
    }

    pub async fn get_value(
        &mut self,
        key: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Value, LockdownError> {
        timed("GetValue", self.timeout, self.client.get_value(key, domain)).await
    }

    /// A string value of the default domain.
    pub async fn get_string(&mut self, key: &str) -> Result<String, LockdownError> {
        match self.get_value(Some(key), None).await? {
            Value::String(s) => Ok(s),
            other => Err(LockdownError::MalformedReply(format!(
                "{key} is {other:?}, not a string"
            ))),
        }
    }

    pub async fn set_value(
        &mut self,
        key: &str,
        value: Value,
        domain: Option<&str>,
    ) -> Result<(), LockdownError> {
        timed(
            "SetValue",
            self.timeout,
            self.client.set_value(key, value, domain),
        )
        .await
    }

    pub async fn remove_value(
        &mut self,
        key: &str,
        domain: Option<&str>,
    ) -> Result<(), LockdownError> {
        timed(
            "RemoveValue",
            self.timeout,
            self.client.remove_value(key, domain),
        )
        .await
    }

    /// StartSession with the record's HostID, then TLS with its host certificate; every reply
    /// of the session is checked within bounds before idevice parses it.
    pub async fn start_session(&mut self, record: &PairingFile) -> Result<(), LockdownError> {
        crate::session_tls::start(
            &mut self.client,
            record,
            LABEL,
            self.timeout,
            self.tap.as_ref(),
        )
        .await?;
        self.in_session = true;
        Ok(())
    }

    /// StopSession, then closes the connection. (idevice keeps TLS on the socket after
    /// StopSession, while the device expects close_notify and plaintext, so the connection
    /// cannot be reused: open a new one.)
    pub async fn stop_session(mut self) -> Result<(), LockdownError> {
        timed("StopSession", self.timeout, self.client.stop_session()).await
    }

    /// StartService: the port to connect to and whether it wants TLS.
    pub async fn start_service(&mut self, service: &str) -> Result<(u16, bool), LockdownError> {
        timed(
            "StartService",
            self.timeout,
            self.client.start_service(service),
        )
        .await
    }

    /// StartService in this session, then the service's own connection (TLS with `record`
    /// when the device asks for it): one reply and one usbmux connection, where idevice's
    /// `IdeviceService::connect` opens a new lockdown connection and session (and reads the
    /// UDID) for every service.
    pub async fn open_service(
        &mut self,
        service: &str,
        record: &PairingFile,
    ) -> Result<idevice::Idevice, LockdownError> {
        let (port, ssl) = self.start_service(service).await?;
        let idevice = tokio::time::timeout(
            self.timeout,
            connect_port(
                &self.device.addr,
                self.device.device_id,
                port,
                LABEL,
                &self.device.transcript,
            ),
        )
        .await
        .map_err(|_| LockdownError::Timeout {
            operation: "Connect",
            after: self.timeout,
        })??;
        // Replies are checked within bounds before idevice parses them, as on every other
        // connection (`crate::services`).
        let socket = idevice
            .get_socket()
            .ok_or_else(|| LockdownError::Idevice("the service connection is gone".into()))?;
        let tap = self.device.transcript.tap(service);
        Ok(if ssl {
            let stream = crate::session_tls::connect(socket, record, self.timeout).await?;
            guarded_service(stream, tap, LABEL)
        } else {
            guarded_service(socket, tap, LABEL)
        })
    }

    /// Every value of the default domain in one GetValue (no key): the public subset before a
    /// session, all of them in one.
    pub async fn get_all_values(&mut self) -> Result<plist::Dictionary, LockdownError> {
        match self.get_value(None, None).await? {
            Value::Dictionary(d) => Ok(d),
            _ => Err(LockdownError::MalformedReply(
                "GetValue with no key did not answer a dictionary".into(),
            )),
        }
    }

    /// A provider for idevice's service clients, bound to this device and record.
    pub fn provider(&self, record: PairingFile) -> UsbmuxProvider {
        UsbmuxProvider {
            addr: self.device.addr.clone(),
            device_id: self.device.device_id,
            label: LABEL.into(),
            pair_record: record,
            transcript: self.device.transcript.clone(),
        }
    }
}
