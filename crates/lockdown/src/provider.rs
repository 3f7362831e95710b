//! An idevice `IdeviceProvider` that reaches the device through our usbmux client, so idevice's
//! service connectors (`IdeviceService::connect`) work with any usbmuxd address.

use std::future::Future;
use std::pin::Pin;

use idevice::pairing_file::PairingFile;
use idevice::provider::IdeviceProvider;
use idevice::{Idevice, IdeviceError, ReadWrite};
use usbmux::plist_guard::{self, PlistGuard};
use usbmux::transcript::{self, Recorded, Tap, Transcript};
use usbmux::{UsbmuxAddress, UsbmuxClient};

#[derive(Debug, Clone)]
pub struct UsbmuxProvider {
    pub addr: UsbmuxAddress,
    pub device_id: u32,
    pub label: String,
    pub pair_record: PairingFile,
    /// Where this device's traffic is recorded (off unless a transcript was asked for).
    pub transcript: Transcript,
}

/// Opens a raw tunnel to `port` on the device and wraps it for idevice.
///
/// idevice reads lockdownd replies with an unbounded length and a recursive parser, so on
/// lockdownd's port every reply is first checked within bounds by a [`PlistGuard`], until a
/// session turns TLS on (idevice then reads inside its own TLS stream, out of our reach). Other
/// services may start TLS at once, so their tunnels are left raw.
pub async fn connect_port(
    addr: &UsbmuxAddress,
    device_id: u32,
    port: u16,
    label: &str,
    transcript: &Transcript,
) -> Result<Idevice, usbmux::UsbmuxError> {
    if port == usbmux::LOCKDOWN_PORT {
        return Ok(connect_lockdown(addr, device_id, label, transcript)
            .await?
            .0);
    }
    let stream = UsbmuxClient::connect(addr)
        .await?
        .recorded(transcript)
        .connect_device(device_id, port)
        .await?;
    Ok(Idevice::new(Box::new(stream), label))
}

/// A tunnel to lockdownd, replies guarded, and its place in the transcript (recorded up to
/// StartSession here; the TLS stream above is recorded with the same tap, `session_tls`).
pub async fn connect_lockdown(
    addr: &UsbmuxAddress,
    device_id: u32,
    label: &str,
    transcript: &Transcript,
) -> Result<(Idevice, Option<Tap>), usbmux::UsbmuxError> {
    let stream = UsbmuxClient::connect(addr)
        .await?
        .recorded(transcript)
        .connect_device(device_id, usbmux::LOCKDOWN_PORT)
        .await?;
    let guarded = PlistGuard::new(stream).pass_through_after(plist_guard::lockdown_session_starts);
    let tap = transcript.tap(transcript::LOCKDOWND);
    let idevice = match &tap {
        Some(t) => Idevice::new(
            Box::new(
                Recorded::new(guarded, t.clone()).stop_after(plist_guard::lockdown_session_starts),
            ),
            label,
        ),
        None => Idevice::new(Box::new(guarded), label),
    };
    Ok((idevice, tap))
}

/// A plist service's stream (after TLS, if any), replies guarded, recorded under `tap`.
pub fn guarded_service<S: ReadWrite + 'static>(
    stream: S,
    tap: Option<Tap>,
    label: &str,
) -> Idevice {
    let guarded = PlistGuard::new(stream);
    match tap {
        Some(t) => Idevice::new(Box::new(Recorded::new(guarded, t)), label),
        None => Idevice::new(Box::new(guarded), label),
    }
}

impl IdeviceProvider for UsbmuxProvider {
    fn connect(
        &self,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Idevice, IdeviceError>> + Send>> {
        let (addr, id, label, transcript) = (
            self.addr.clone(),
            self.device_id,
            self.label.clone(),
            self.transcript.clone(),
        );
        Box::pin(async move {
            connect_port(&addr, id, port, &label, &transcript)
                .await
                .map_err(|e| IdeviceError::Socket(std::io::Error::other(e.to_string())))
        })
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn get_pairing_file(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<PairingFile, IdeviceError>> + Send>> {
        let record = self.pair_record.clone();
        Box::pin(async move { Ok(record) })
    }
}
