//! Device properties as usbmuxd reports them, and Listen events.

use plist::{Dictionary, Value};

use crate::error::UsbmuxError;

/// Every property of an attached device, as in an `Attached` message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProperties {
    pub device_id: u32,
    /// The UDID, which usbmuxd calls `SerialNumber` (it inserts a hyphen after 8 characters
    /// for 24-digit UDIDs). Not the Apple serial number, which only lockdownd gives.
    pub udid: String,
    /// `(bus << 16) | address` on Linux; the port chain on macOS.
    pub location_id: Option<u64>,
    pub product_id: Option<u64>,
    /// Bits per second.
    pub connection_speed: Option<u64>,
    /// `USB` or `Network`; `None` when the daemon did not say (usbmuxd builds vary).
    pub connection_type: Option<String>,
    /// macOS only: the UDID without hyphen.
    pub usb_serial_number: Option<String>,
    /// Anything else the daemon sent (Network devices' addresses, future keys).
    pub extra: Dictionary,
}

const KNOWN: [&str; 7] = [
    "DeviceID",
    "SerialNumber",
    "LocationID",
    "ProductID",
    "ConnectionSpeed",
    "ConnectionType",
    "USBSerialNumber",
];

impl DeviceProperties {
    /// Connected by cable: `ConnectionType` is `USB`, or absent (a usbmuxd that knows only USB;
    /// every build that lists network devices says which is which).
    pub fn over_usb(&self) -> bool {
        self.connection_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("USB"))
    }

    /// A USB device as Linux usbmuxd reports it.
    pub fn usb(device_id: u32, udid: impl Into<String>) -> Self {
        DeviceProperties {
            device_id,
            udid: udid.into(),
            location_id: None,
            product_id: None,
            connection_speed: Some(480_000_000),
            connection_type: Some("USB".into()),
            usb_serial_number: None,
            extra: Dictionary::new(),
        }
    }

    /// The `Properties` dict.
    pub fn properties_dict(&self) -> Dictionary {
        let mut p = Dictionary::new();
        if let Some(v) = self.connection_speed {
            p.insert("ConnectionSpeed".into(), v.into());
        }
        if let Some(v) = &self.connection_type {
            p.insert("ConnectionType".into(), v.clone().into());
        }
        p.insert("DeviceID".into(), (self.device_id as u64).into());
        if let Some(v) = self.location_id {
            p.insert("LocationID".into(), v.into());
        }
        if let Some(v) = self.product_id {
            p.insert("ProductID".into(), v.into());
        }
        p.insert("SerialNumber".into(), self.udid.clone().into());
        if let Some(v) = &self.usb_serial_number {
            p.insert("USBSerialNumber".into(), v.clone().into());
        }
        for (k, v) in &self.extra {
            p.insert(k.clone(), v.clone());
        }
        p
    }

    /// The whole `Attached` message (also a `DeviceList` entry).
    pub fn attached_dict(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("DeviceID".into(), (self.device_id as u64).into());
        d.insert("MessageType".into(), "Attached".into());
        d.insert(
            "Properties".into(),
            Value::Dictionary(self.properties_dict()),
        );
        d
    }

    /// Parses an `Attached` message or `DeviceList` entry. Requires only what identifies the
    /// device: a DeviceID and `Properties.SerialNumber`; every other property is optional.
    pub fn from_attached(dict: &Dictionary) -> Result<Self, UsbmuxError> {
        let props = dict
            .get("Properties")
            .and_then(Value::as_dictionary)
            .ok_or(UsbmuxError::MissingKey("Properties"))?;
        let uint = |d: &Dictionary, k: &str| d.get(k).and_then(Value::as_unsigned_integer);
        let device_id = uint(dict, "DeviceID")
            .or_else(|| uint(props, "DeviceID"))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(UsbmuxError::MissingKey("DeviceID"))?;
        let string = |k: &str| props.get(k).and_then(Value::as_string).map(str::to_owned);
        let extra = props
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(DeviceProperties {
            device_id,
            udid: string("SerialNumber")
                .ok_or(UsbmuxError::MissingKey("Properties.SerialNumber"))?,
            location_id: uint(props, "LocationID"),
            product_id: uint(props, "ProductID"),
            connection_speed: uint(props, "ConnectionSpeed"),
            connection_type: string("ConnectionType"),
            usb_serial_number: string("USBSerialNumber"),
            extra,
        })
    }
}

/// An event on a Listen connection.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    Attached(DeviceProperties),
    Detached { device_id: u32 },
    Paired { device_id: u32 },
}

impl DeviceEvent {
    pub fn from_dict(dict: &Dictionary) -> Result<Self, UsbmuxError> {
        let kind = dict
            .get("MessageType")
            .and_then(Value::as_string)
            .ok_or(UsbmuxError::MissingKey("MessageType"))?;
        let id = || {
            dict.get("DeviceID")
                .and_then(Value::as_unsigned_integer)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(UsbmuxError::MissingKey("DeviceID"))
        };
        match kind {
            "Attached" => Ok(DeviceEvent::Attached(DeviceProperties::from_attached(
                dict,
            )?)),
            "Detached" => Ok(DeviceEvent::Detached { device_id: id()? }),
            "Paired" => Ok(DeviceEvent::Paired { device_id: id()? }),
            other => Err(UsbmuxError::UnexpectedReply(format!(
                "Listen event {other:?}"
            ))),
        }
    }

    pub fn to_dict(&self) -> Dictionary {
        let simple = |kind: &str, id: u32| {
            let mut d = Dictionary::new();
            d.insert("DeviceID".into(), (id as u64).into());
            d.insert("MessageType".into(), kind.into());
            d
        };
        match self {
            DeviceEvent::Attached(p) => p.attached_dict(),
            DeviceEvent::Detached { device_id } => simple("Detached", *device_id),
            DeviceEvent::Paired { device_id } => simple("Paired", *device_id),
        }
    }

    pub fn device_id(&self) -> u32 {
        match self {
            DeviceEvent::Attached(p) => p.device_id,
            DeviceEvent::Detached { device_id } | DeviceEvent::Paired { device_id } => *device_id,
        }
    }
}
