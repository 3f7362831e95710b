//! usbmuxd plist requests and replies.
//!
//! Both sides live here: the client encodes [`Request`]s and decodes replies; the simulator decodes
//! requests with [`Request::from_dict`] (which yields the Linux usbmuxd Result number on a bad
//! request) and encodes replies with the `*_reply` functions.

use std::fmt;

use plist::{Dictionary, Value};

use crate::device::DeviceProperties;

/// `Number` of a `Result` message. Pair-record commands put Linux errno values here, so the
/// same number can mean two things (ENOENT = BADDEV = 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCode(pub u32);

impl ResultCode {
    pub const OK: ResultCode = ResultCode(0);
    pub const BAD_COMMAND: ResultCode = ResultCode(1);
    pub const BAD_DEVICE: ResultCode = ResultCode(2);
    pub const CONNECTION_REFUSED: ResultCode = ResultCode(3);
    pub const BAD_VERSION: ResultCode = ResultCode(6);
    /// errno ENOENT: no such pair record.
    pub const ENOENT: ResultCode = ResultCode(2);
    /// errno EINVAL: a pair-record request lacks its ID or data.
    pub const EINVAL: ResultCode = ResultCode(22);
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "OK",
            1 => "bad command",
            2 => "bad device / no such entry",
            3 => "connection refused",
            4 => "no such service",
            6 => "bad protocol version",
            22 => "invalid argument",
            _ => "error",
        };
        write!(f, "{} ({name})", self.0)
    }
}

/// The usbmuxd port number is the TCP port byte-swapped as a u16 (`htons` on a little-endian
/// host): lockdownd's 62078 travels as 32498.
pub fn port_to_wire(port: u16) -> u16 {
    port.swap_bytes()
}

/// Inverse of [`port_to_wire`].
pub fn port_from_wire(wire: u16) -> u16 {
    wire.swap_bytes()
}

/// The boilerplate identity clients put in every request; kept for `ListListeners`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub prog_name: Option<String>,
    pub client_version: Option<String>,
    pub bundle_id: Option<String>,
    pub lib_usbmux_version: Option<u64>,
}

impl ClientInfo {
    pub fn from_dict(dict: &Dictionary) -> Self {
        let s = |k: &str| dict.get(k).and_then(Value::as_string).map(str::to_owned);
        ClientInfo {
            prog_name: s("ProgName"),
            client_version: s("ClientVersionString"),
            bundle_id: s("BundleID"),
            lib_usbmux_version: dict
                .get("kLibUSBMuxVersion")
                .and_then(Value::as_unsigned_integer),
        }
    }

    /// What cartprep sends.
    pub fn cartprep() -> Self {
        ClientInfo {
            prog_name: Some("cartprep".into()),
            client_version: Some(concat!("cartprep ", env!("CARGO_PKG_VERSION")).into()),
            bundle_id: None,
            lib_usbmux_version: Some(3),
        }
    }

    fn write_into(&self, dict: &mut Dictionary) {
        if let Some(v) = &self.prog_name {
            dict.insert("ProgName".into(), v.clone().into());
        }
        if let Some(v) = &self.client_version {
            dict.insert("ClientVersionString".into(), v.clone().into());
        }
        if let Some(v) = &self.bundle_id {
            dict.insert("BundleID".into(), v.clone().into());
        }
        if let Some(v) = self.lib_usbmux_version {
            dict.insert("kLibUSBMuxVersion".into(), v.into());
        }
    }
}

/// A request on the usbmuxd socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ListDevices,
    Listen,
    /// `port` is the real TCP port (host order); the wire carries it swapped.
    Connect {
        device_id: u32,
        port: u16,
    },
    ReadBuid,
    ReadPairRecord {
        udid: String,
    },
    SavePairRecord {
        udid: String,
        data: Vec<u8>,
        device_id: Option<u32>,
    },
    DeletePairRecord {
        udid: String,
    },
    ListListeners,
}

impl Request {
    pub fn message_type(&self) -> &'static str {
        match self {
            Request::ListDevices => "ListDevices",
            Request::Listen => "Listen",
            Request::Connect { .. } => "Connect",
            Request::ReadBuid => "ReadBUID",
            Request::ReadPairRecord { .. } => "ReadPairRecord",
            Request::SavePairRecord { .. } => "SavePairRecord",
            Request::DeletePairRecord { .. } => "DeletePairRecord",
            Request::ListListeners => "ListListeners",
        }
    }

    /// Encodes the request as clients send it.
    pub fn to_dict(&self, client: &ClientInfo) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), self.message_type().into());
        client.write_into(&mut d);
        match self {
            Request::Connect { device_id, port } => {
                d.insert("DeviceID".into(), (*device_id as u64).into());
                d.insert("PortNumber".into(), (port_to_wire(*port) as u64).into());
            }
            Request::ReadPairRecord { udid } | Request::DeletePairRecord { udid } => {
                d.insert("PairRecordID".into(), udid.clone().into());
            }
            Request::SavePairRecord {
                udid,
                data,
                device_id,
            } => {
                d.insert("PairRecordID".into(), udid.clone().into());
                d.insert("PairRecordData".into(), Value::Data(data.clone()));
                if let Some(id) = device_id {
                    d.insert("DeviceID".into(), (*id as u64).into());
                }
            }
            _ => {}
        }
        d
    }

    /// Decodes a request as Linux usbmuxd does; a bad request yields the Result number it answers.
    pub fn from_dict(dict: &Dictionary) -> Result<Request, ResultCode> {
        let message_type = dict
            .get("MessageType")
            .and_then(Value::as_string)
            .ok_or(ResultCode::BAD_COMMAND)?;
        let udid = || {
            dict.get("PairRecordID")
                .and_then(Value::as_string)
                .map(str::to_owned)
                .ok_or(ResultCode::EINVAL)
        };
        let u32_key = |k: &str| {
            dict.get(k)
                .and_then(Value::as_unsigned_integer)
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(match message_type {
            "ListDevices" => Request::ListDevices,
            "Listen" => Request::Listen,
            "ReadBUID" => Request::ReadBuid,
            "ListListeners" => Request::ListListeners,
            "Connect" => {
                let device_id = u32_key("DeviceID").ok_or(ResultCode::BAD_DEVICE)?;
                let wire = dict
                    .get("PortNumber")
                    .and_then(Value::as_unsigned_integer)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or(ResultCode::BAD_COMMAND)?;
                Request::Connect {
                    device_id,
                    port: port_from_wire(wire),
                }
            }
            "ReadPairRecord" => Request::ReadPairRecord { udid: udid()? },
            "DeletePairRecord" => Request::DeletePairRecord { udid: udid()? },
            "SavePairRecord" => {
                let udid = udid()?;
                let data = dict
                    .get("PairRecordData")
                    .and_then(Value::as_data)
                    .ok_or(ResultCode::EINVAL)?
                    .to_vec();
                Request::SavePairRecord {
                    udid,
                    data,
                    device_id: u32_key("DeviceID"),
                }
            }
            _ => return Err(ResultCode::BAD_COMMAND),
        })
    }
}

/// `{"MessageType":"Result","Number":n}`.
pub fn result_reply(code: ResultCode) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), "Result".into());
    d.insert("Number".into(), (code.0 as u64).into());
    d
}

/// `{"DeviceList":[Attached…]}`, with no top-level MessageType (libusbmuxd rejects one).
pub fn device_list_reply(devices: &[DeviceProperties]) -> Dictionary {
    let list = devices
        .iter()
        .map(|d| Value::Dictionary(d.attached_dict()))
        .collect();
    let mut d = Dictionary::new();
    d.insert("DeviceList".into(), Value::Array(list));
    d
}

pub fn buid_reply(buid: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("BUID".into(), buid.into());
    d
}

pub fn pair_record_reply(data: Vec<u8>) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PairRecordData".into(), Value::Data(data));
    d
}

/// One `ListListeners` entry as Linux usbmuxd builds it.
pub fn listener_entry(id: u64, client: &ClientInfo) -> Dictionary {
    let prog = client.prog_name.clone().unwrap_or_default();
    let mut d = Dictionary::new();
    d.insert("Blacklisted".into(), false.into());
    if let Some(b) = &client.bundle_id {
        d.insert("BundleID".into(), b.clone().into());
    }
    d.insert("ConnType".into(), 0u64.into());
    d.insert("ID String".into(), format!("{id}-{prog}").into());
    d.insert("ProgName".into(), prog.into());
    if let Some(v) = client.lib_usbmux_version {
        d.insert("kLibUSBMuxVersion".into(), v.into());
    }
    d
}

pub fn listener_list_reply(entries: Vec<Dictionary>) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(
        "ListenerList".into(),
        Value::Array(entries.into_iter().map(Value::Dictionary).collect()),
    );
    d
}

/// Reads the `Number` of a Result reply, if the dict is one.
pub fn result_number(dict: &Dictionary) -> Option<ResultCode> {
    if dict.get("MessageType").and_then(Value::as_string) != Some("Result") {
        return None;
    }
    dict.get("Number")
        .and_then(Value::as_unsigned_integer)
        .and_then(|n| u32::try_from(n).ok())
        .map(ResultCode)
}
