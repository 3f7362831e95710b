//! The usbmuxd server: the socket protocol of Linux usbmuxd (plist version 1, and the binary
//! version 0 for Listen and Connect), or of macOS's usbmuxd (plist only; `crate::flavour`),
//! serving the cart's virtual iPads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use plist::Dictionary;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::error::RecvError;
use usbmux::DeviceEvent;
use usbmux::frame::{self, Frame, MAX_REQUEST_LEN, VERSION_BINARY, VERSION_PLIST, message_type};
use usbmux::message::{self as msg, ClientInfo, Request, ResultCode};

use crate::cart::{Broadcast, Cart};
use crate::faults::{self, FaultAction};
use crate::lockdownd;
use crate::services;
use crate::tls::BoxStream;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A header whose length is shorter than a header: what a broken usbmuxd might send.
const MALFORMED_FRAME: [u8; 16] = [8, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0];

fn plist_frame(tag: u32, dict: &Dictionary) -> Option<Frame> {
    Frame::plist(tag, dict).ok()
}

fn binary_result(tag: u32, code: ResultCode) -> Frame {
    Frame {
        header: frame::Header {
            length: 20,
            version: VERSION_BINARY,
            message: message_type::RESULT,
            tag,
        },
        payload: code.0.to_le_bytes().to_vec(),
    }
}

/// `DEVICE_ADD` of the binary protocol: id, product id, 256-byte serial, padding, location.
fn binary_event(event: &DeviceEvent) -> Frame {
    let (message, payload) = match event {
        DeviceEvent::Attached(p) => {
            let mut b = Vec::with_capacity(268);
            b.extend_from_slice(&p.device_id.to_le_bytes());
            b.extend_from_slice(&(p.product_id.unwrap_or(0) as u16).to_le_bytes());
            let mut serial = [0u8; 256];
            let s = p.udid.as_bytes();
            let n = s.len().min(255);
            serial[..n].copy_from_slice(&s[..n]);
            b.extend_from_slice(&serial);
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&(p.location_id.unwrap_or(0) as u32).to_le_bytes());
            (message_type::DEVICE_ADD, b)
        }
        DeviceEvent::Detached { device_id } => (
            message_type::DEVICE_REMOVE,
            device_id.to_le_bytes().to_vec(),
        ),
        DeviceEvent::Paired { device_id } => (
            message_type::DEVICE_PAIRED,
            device_id.to_le_bytes().to_vec(),
        ),
    };
    Frame {
        header: frame::Header {
            length: (16 + payload.len()) as u32,
            version: VERSION_BINARY,
            message,
            tag: 0,
        },
        payload,
    }
}

/// Serves one client connection of the usbmuxd socket.
pub async fn serve_client(cart: Arc<Cart>, mut stream: BoxStream) {
    let client_id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let flavour = cart.flavour;
    // macOS's usbmuxd answers in the plist protocol only (`docs/fidelity.md` §13).
    let mut proto = if flavour.serves_binary_protocol() {
        VERSION_BINARY
    } else {
        VERSION_PLIST
    };
    loop {
        let frame = match frame::read_frame(&mut stream, MAX_REQUEST_LEN).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                // Linux usbmuxd closes a client that sends a bad length.
                tracing::debug!(client_id, "usbmuxd: closing client: {e}");
                return;
            }
        };
        let tag = frame.header.tag;
        // Like Linux usbmuxd: the header version only has to be 0 or 1; the message type picks
        // the handling, and replies use the protocol of the client's last plist message.
        let reply_in = |proto: u32, code: ResultCode| {
            if proto == VERSION_BINARY {
                Some(binary_result(tag, code))
            } else {
                plist_frame(tag, &msg::result_reply(code))
            }
        };
        if frame.header.version != VERSION_BINARY && frame.header.version != VERSION_PLIST {
            match reply_in(proto, ResultCode::BAD_VERSION) {
                Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                _ => return,
            }
        }
        let binary_message =
            frame.header.version == VERSION_BINARY || frame.header.message != message_type::PLIST;
        if binary_message && !flavour.serves_binary_protocol() {
            tracing::debug!(
                client_id,
                "usbmuxd (macos): closing a binary-protocol client"
            );
            return;
        }
        let request = match frame.header.message {
            message_type::PLIST => {
                proto = VERSION_PLIST;
                if flavour.xml_requests_only() && frame.payload.starts_with(b"bplist") {
                    // Not read as XML: no answer, as for any payload that does not parse.
                    continue;
                }
                // A payload that is not a plist dict with a MessageType string gets no answer
                // at all from Linux usbmuxd (client_command returns before replying).
                let Ok(dict) = frame.plist_dict() else {
                    continue;
                };
                if dict
                    .get("MessageType")
                    .and_then(plist::Value::as_string)
                    .is_none()
                {
                    continue;
                }
                Request::from_dict(&dict).map(|r| (r, ClientInfo::from_dict(&dict)))
            }
            _ => binary_request(&frame).map(|r| (r, ClientInfo::default())),
        };
        let binary = proto == VERSION_BINARY;
        let (request, client) = match request {
            Ok(r) => r,
            Err(code) => match reply_in(proto, code) {
                Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                _ => return,
            },
        };
        let fault = cart
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(0, request.message_type());
        match fault {
            Some(FaultAction::Drop) => return,
            Some(FaultAction::Malformed) => {
                let _ = stream.write_all(&MALFORMED_FRAME).await;
                return;
            }
            Some(FaultAction::Deep) => {
                // A success Result carrying a value no client should descend into.
                let payload = faults::deep_xml(&msg::result_reply(ResultCode::OK));
                match Frame::new(VERSION_PLIST, message_type::PLIST, tag, payload) {
                    Ok(f) if write(&mut stream, &f).await.is_ok() => continue,
                    _ => return,
                }
            }
            Some(FaultAction::Delay { ms }) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await
            }
            Some(FaultAction::Error { .. } | FaultAction::ErrorAfter { .. }) => {
                match reply_in(proto, ResultCode::BAD_COMMAND) {
                    Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                    _ => return,
                }
            }
            None => {}
        }
        let result = |code: ResultCode| {
            if binary {
                Some(binary_result(tag, code))
            } else {
                plist_frame(tag, &msg::result_reply(code))
            }
        };
        let answer = match request {
            Request::ListDevices => plist_frame(tag, &msg::device_list_reply(&cart.attached())),
            Request::ReadBuid => plist_frame(tag, &msg::buid_reply(cart.store.system_buid())),
            Request::ReadPairRecord { udid } => match cart.store.read(&udid) {
                Ok(data) => plist_frame(
                    tag,
                    &msg::pair_record_reply(flavour.served_pair_record(data)),
                ),
                Err(code) => result(code),
            },
            Request::SavePairRecord {
                udid,
                data,
                device_id,
            } => match cart.store.save(&udid, &data) {
                Ok(()) => {
                    if let Some(id) = device_id {
                        cart.announce_paired(id, &udid);
                    }
                    result(ResultCode::OK)
                }
                Err(code) => result(code),
            },
            Request::DeletePairRecord { udid } => {
                result(cart.store.delete(&udid).err().unwrap_or(ResultCode::OK))
            }
            Request::ListListeners => {
                let entries = cart
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(id, c)| msg::listener_entry(*id, c))
                    .collect();
                plist_frame(tag, &msg::listener_list_reply(entries))
            }
            Request::Listen => {
                let Some(ok) = result(ResultCode::OK) else {
                    return;
                };
                cart.listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client_id, client);
                listen(&cart, stream, ok, binary).await;
                cart.listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&client_id);
                return;
            }
            Request::Connect { device_id, port } => {
                let Some(link) = cart.link(device_id) else {
                    match result(ResultCode::BAD_DEVICE) {
                        Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                        _ => return,
                    }
                };
                link.ipad.traffic.connection();
                if link.over_network {
                    link.ipad.traffic.wifi_connection();
                }
                let service = if port == lockdownd::PORT {
                    None
                } else {
                    let pending = link.ipad.pending_services().remove(&port);
                    match pending {
                        Some(s) => Some(s),
                        None => match result(ResultCode::CONNECTION_REFUSED) {
                            Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                            _ => return,
                        },
                    }
                };
                if let Err(e) = link.ipad.keys_ready().await {
                    // A device without its key cannot serve lockdownd: refused, as a port
                    // nothing listens on is.
                    tracing::warn!(device_id, "no device key: {e}");
                    match result(ResultCode::CONNECTION_REFUSED) {
                        Some(f) if write(&mut stream, &f).await.is_ok() => continue,
                        _ => return,
                    }
                }
                let Some(ok) = result(ResultCode::OK) else {
                    return;
                };
                if write(&mut stream, &ok).await.is_err() {
                    return;
                }
                // From here the socket is the device's TCP stream.
                match service {
                    None => lockdownd::serve(link, stream).await,
                    Some(s) => services::serve(link, s, stream).await,
                }
                return;
            }
        };
        let Some(answer) = answer else { return };
        if write(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

fn binary_request(frame: &Frame) -> Result<Request, ResultCode> {
    match frame.header.message {
        message_type::LISTEN => Ok(Request::Listen),
        message_type::CONNECT => {
            let p = &frame.payload;
            if p.len() < 8 {
                return Err(ResultCode::BAD_COMMAND);
            }
            let device_id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            // The port travels in network byte order.
            let port = u16::from_be_bytes([p[4], p[5]]);
            Ok(Request::Connect { device_id, port })
        }
        _ => Err(ResultCode::BAD_COMMAND),
    }
}

async fn write(stream: &mut BoxStream, frame: &Frame) -> std::io::Result<()> {
    stream.write_all(&frame.to_bytes()).await?;
    stream.flush().await
}

async fn listen(cart: &Cart, mut stream: BoxStream, ok: Frame, binary: bool) {
    let (present, mut events) = cart.subscribe();
    if write(&mut stream, &ok).await.is_err() {
        return;
    }
    let encode = |e: &DeviceEvent| -> Option<Frame> {
        if binary {
            Some(binary_event(e))
        } else {
            plist_frame(0, &e.to_dict())
        }
    };
    for p in present {
        let Some(f) = encode(&DeviceEvent::Attached(p)) else {
            return;
        };
        if write(&mut stream, &f).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Broadcast::Event(e)) => {
                    let Some(f) = encode(&e) else { return };
                    if write(&mut stream, &f).await.is_err() {
                        return;
                    }
                }
                Ok(Broadcast::Message(_)) if binary => {}
                Ok(Broadcast::Message(m)) => {
                    let Some(f) = plist_frame(0, &m) else { return };
                    if write(&mut stream, &f).await.is_err() {
                        return;
                    }
                }
                // A client too slow for the cart: drop it; it reconnects and re-lists.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            },
            incoming = frame::read_frame(&mut stream, MAX_REQUEST_LEN) => {
                // Linux usbmuxd answers any command on a Listen socket with Result 1 and closes.
                if let Ok(Some(f)) = incoming
                    && let Some(reply) = plist_frame(f.header.tag, &msg::result_reply(ResultCode::BAD_COMMAND))
                {
                    let _ = write(&mut stream, &reply).await;
                }
                return;
            }
        }
    }
}
