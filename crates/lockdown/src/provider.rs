//! An idevice `IdeviceProvider` that reaches the device through our usbmux client, so idevice's
//! service connectors (`IdeviceService::connect`) work with any usbmuxd address.

use std::future::Future;
use std::pin::Pin;

use idevice::pairing_file::PairingFile;
use idevice::provider::IdeviceProvider;
use idevice::{Idevice, IdeviceError};
use usbmux::plist_guard::{self, PlistGuard};
use usbmux::{UsbmuxAddress, UsbmuxClient};

#[derive(Debug, Clone)]
pub struct UsbmuxProvider {
    pub addr: UsbmuxAddress,
    pub device_id: u32,
    pub label: String,
    pub pair_record: PairingFile,
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
) -> Result<Idevice, usbmux::UsbmuxError> {
    let stream = UsbmuxClient::connect(addr)
        .await?
        .connect_device(device_id, port)
        .await?;
    if port == usbmux::LOCKDOWN_PORT {
        let guarded =
            PlistGuard::new(stream).pass_through_after(plist_guard::lockdown_session_starts);
        return Ok(Idevice::new(Box::new(guarded), label));
    }
    Ok(Idevice::new(Box::new(stream), label))
}

impl IdeviceProvider for UsbmuxProvider {
    fn connect(
        &self,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Idevice, IdeviceError>> + Send>> {
        let (addr, id, label) = (self.addr.clone(), self.device_id, self.label.clone());
        Box::pin(async move {
            connect_port(&addr, id, port, &label)
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
