//! Where usbmuxd listens, and the stream to it.
//!
//! Accepts the forms every client understands: a unix socket path, `UNIX:/path` (libusbmuxd's
//! form), and `IP:PORT`. Host names are refused rather than silently falling back to the default
//! socket, which is what libusbmuxd does and what makes its errors so confusing.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use crate::error::UsbmuxError;

/// The default socket of Linux and macOS usbmuxd.
pub const DEFAULT_SOCKET: &str = "/var/run/usbmuxd";
/// The variable libusbmuxd, pymobiledevice3 and idevice read.
pub const ENV_VAR: &str = "USBMUXD_SOCKET_ADDRESS";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsbmuxAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl UsbmuxAddress {
    /// `USBMUXD_SOCKET_ADDRESS` if set, else the platform socket.
    pub fn from_env_or_default() -> Result<Self, UsbmuxError> {
        match std::env::var(ENV_VAR) {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(UsbmuxAddress::Unix(DEFAULT_SOCKET.into())),
        }
    }

    pub async fn connect(&self) -> Result<UsbmuxStream, UsbmuxError> {
        match self {
            UsbmuxAddress::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(UsbmuxStream::Tcp(s))
            }
            #[cfg(unix)]
            UsbmuxAddress::Unix(path) => Ok(UsbmuxStream::Unix(UnixStream::connect(path).await?)),
            #[cfg(not(unix))]
            UsbmuxAddress::Unix(_) => Err(UsbmuxError::BadAddress(self.to_string())),
        }
    }

    /// The value to put in `USBMUXD_SOCKET_ADDRESS` for libusbmuxd (Debian's idevice* tools).
    pub fn for_libusbmuxd(&self) -> String {
        match self {
            UsbmuxAddress::Unix(p) => format!("UNIX:{}", p.display()),
            UsbmuxAddress::Tcp(a) => a.to_string(),
        }
    }
}

impl FromStr for UsbmuxAddress {
    type Err = UsbmuxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("UNIX:") {
            if path.is_empty() {
                return Err(UsbmuxError::BadAddress(s.into()));
            }
            return Ok(UsbmuxAddress::Unix(path.into()));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(UsbmuxAddress::Tcp(addr));
        }
        if s.starts_with('/') || s.starts_with('.') || !s.contains(':') && !s.is_empty() {
            return Ok(UsbmuxAddress::Unix(s.into()));
        }
        Err(UsbmuxError::BadAddress(s.into()))
    }
}

impl fmt::Display for UsbmuxAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsbmuxAddress::Unix(p) => write!(f, "{}", p.display()),
            UsbmuxAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A connection to usbmuxd; after a successful Connect, the byte stream to the device.
#[derive(Debug)]
pub enum UsbmuxStream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl AsyncRead for UsbmuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UsbmuxStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            UsbmuxStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UsbmuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UsbmuxStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            UsbmuxStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UsbmuxStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            UsbmuxStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UsbmuxStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            UsbmuxStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
