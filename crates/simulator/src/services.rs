//! Lockdown services a virtual iPad offers through StartService, and the connection to one.

use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use crate::ipad::PendingService;
use crate::lockdownd::Link;
use crate::tls::{self, BoxStream, TrustedHost};

/// How a service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Whether StartService answers `EnableServiceSSL: true` (TLS right after Connect).
    pub ssl: bool,
}

pub const MCINSTALL: &str = "com.apple.mobile.MCInstall";
pub const MOBILEACTIVATIOND: &str = "com.apple.mobileactivationd";

/// The services this simulator implements.
pub fn lookup(name: &str) -> Option<ServiceInfo> {
    match name {
        MCINSTALL | MOBILEACTIVATIOND => Some(ServiceInfo { ssl: true }),
        _ => None,
    }
}

/// Serves a service connection that arrived on a port StartService handed out.
pub async fn serve(link: Link, pending: PendingService, stream: BoxStream) {
    let ipad = &link.ipad;
    let stream: BoxStream = if pending.ssl {
        let Some(host) = ipad.state().hosts.get(&pending.host_id).cloned() else {
            return;
        };
        let config = match tls::server_config(
            host.device_cert_der,
            ipad.key_pkcs8_der(),
            TrustedHost {
                host_cert_der: host.host_cert_der,
                root_cert_der: host.root_cert_der,
            },
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(slot = ipad.spec.slot, "service TLS setup failed: {e}");
                return;
            }
        };
        match tokio::time::timeout(
            Duration::from_secs(15),
            TlsAcceptor::from(config).accept(stream),
        )
        .await
        {
            Ok(Ok(tls)) => Box::new(tls),
            _ => return,
        }
    } else {
        stream
    };
    match pending.service.as_str() {
        MCINSTALL => crate::mcinstall::serve(link, stream).await,
        MOBILEACTIVATIOND => crate::activation::serve(link, stream).await,
        other => tracing::warn!("no handler for service {other}"),
    }
}
