//! Connecting to a plist service (MCInstall, mobileactivationd) the way idevice's
//! `IdeviceService::connect` does — lockdown session, StartService, usbmuxd Connect, TLS when
//! the device asks — but with every lockdownd and service reply checked within bounds before
//! anyone parses it (see `session_tls`).

use std::time::Duration;

use idevice::Idevice;
use idevice::provider::IdeviceProvider;
use idevice::services::lockdown::LockdownClient;

use crate::provider::{UsbmuxProvider, connect_lockdown, connect_port, guarded_service};

use crate::error::LockdownError;
use crate::session::timed;
use crate::session_tls;

/// A lockdownd client in a TLS session, replies guarded.
pub async fn lockdown_session(
    provider: &UsbmuxProvider,
    after: Duration,
) -> Result<LockdownClient, LockdownError> {
    let record = &provider.pair_record;
    let (idevice, tap) = tokio::time::timeout(
        after,
        connect_lockdown(
            &provider.addr,
            provider.device_id,
            provider.label(),
            &provider.transcript,
        ),
    )
    .await
    .map_err(|_| LockdownError::Timeout {
        operation: "Connect",
        after,
    })??;
    let mut client = LockdownClient::new(idevice);
    session_tls::start(&mut client, record, provider.label(), after, tap.as_ref()).await?;
    Ok(client)
}

/// A connection to the plist service `name` (4-byte-framed plists both ways).
pub async fn connect_plist_service(
    provider: &UsbmuxProvider,
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
    let service: Idevice = tokio::time::timeout(
        after,
        connect_port(
            &provider.addr,
            provider.device_id,
            port,
            provider.label(),
            &provider.transcript,
        ),
    )
    .await
    .map_err(|_| LockdownError::Timeout {
        operation: "Connect",
        after,
    })??;
    let socket = service
        .get_socket()
        .ok_or_else(|| LockdownError::Idevice("the service connection is gone".into()))?;
    let tap = provider.transcript.tap(name);
    let mut idevice = if tls {
        let stream = session_tls::connect(socket, &provider.pair_record, after).await?;
        guarded_service(stream, tap, provider.label())
    } else {
        guarded_service(socket, tap, provider.label())
    };
    if let Some(udid) = udid {
        idevice.set_udid(udid);
    }
    Ok(idevice)
}
