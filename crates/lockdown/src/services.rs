//! Connecting to a plist service (MCInstall, mobileactivationd) the way idevice's
//! `IdeviceService::connect` does — lockdown session, StartService, usbmuxd Connect, TLS when
//! the device asks — but with every lockdownd and service reply checked within bounds before
//! anyone parses it (see `session_tls`).

use std::time::Duration;

use idevice::Idevice;
use idevice::provider::IdeviceProvider;
use idevice::services::lockdown::LockdownClient;
use usbmux::plist_guard::PlistGuard;

use crate::error::LockdownError;
use crate::session::timed;
use crate::session_tls;

/// A lockdownd client in a TLS session, replies guarded.
pub async fn lockdown_session(
    provider: &dyn IdeviceProvider,
    after: Duration,
) -> Result<LockdownClient, LockdownError> {
    let record = timed("PairRecord", after, provider.get_pairing_file()).await?;
    let idevice = timed("Connect", after, provider.connect(usbmux::LOCKDOWN_PORT)).await?;
    let mut client = LockdownClient::new(idevice);
    session_tls::start(&mut client, &record, provider.label(), after).await?;
    Ok(client)
}

/// A connection to the plist service `name` (4-byte-framed plists both ways).
pub async fn connect_plist_service(
    provider: &dyn IdeviceProvider,
    name: &str,
    after: Duration,
) -> Result<Idevice, LockdownError> {
    let mut lockdown = lockdown_session(provider, after).await?;
    // Best effort, as idevice does: some services default identifiers to the UDID.
    let udid = timed(
        "GetValue",
        after,
        lockdown.get_value(Some("UniqueDeviceID"), None),
    )
    .await
    .ok()
    .and_then(|v| v.as_string().map(str::to_owned));
    let (port, tls) = timed("StartService", after, lockdown.start_service(name)).await?;
    let service = timed("Connect", after, provider.connect(port)).await?;
    let socket = service
        .get_socket()
        .ok_or_else(|| LockdownError::Idevice("the service connection is gone".into()))?;
    let mut idevice = if tls {
        let record = timed("PairRecord", after, provider.get_pairing_file()).await?;
        let stream = session_tls::connect(socket, &record, after).await?;
        Idevice::new(Box::new(PlistGuard::new(stream)), provider.label())
    } else {
        Idevice::new(Box::new(PlistGuard::new(socket)), provider.label())
    };
    if let Some(udid) = udid {
        idevice.set_udid(udid);
    }
    Ok(idevice)
}
