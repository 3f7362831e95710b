//! What lockdownd's GetValue answers: the public subset before a session, the full set and the
//! other domains inside one, with the plist types a real device uses.

use std::time::{SystemTime, UNIX_EPOCH};

use plist::{Dictionary, Value};

use crate::ipad::{DeviceState, VirtualIpad};

/// The international domain.
pub const INTERNATIONAL: &str = "com.apple.international";

/// Keys visible to anyone before pairing (observed `ideviceinfo -s` set, minus baseband keys a
/// Wi-Fi iPad lacks).
const PUBLIC_KEYS: &[&str] = &[
    "BoardId",
    "BuildVersion",
    "CPUArchitecture",
    "ChipID",
    "DeviceClass",
    "DeviceColor",
    "DeviceName",
    "DieID",
    "HardwareModel",
    "HasSiDP",
    "PartitionType",
    "ProductName",
    "ProductType",
    "ProductVersion",
    "ProductionSOC",
    "ProtocolVersion",
    "SupportedDeviceFamilies",
    "TelephonyCapability",
    "UniqueChipID",
    "UniqueDeviceID",
    "UntrustedHostBUID",
    "WiFiAddress",
];

/// Keys that can also be read one by one without a session (pairing needs them).
const PUBLIC_BY_KEY: &[&str] = &["DevicePublicKey", "WiFiAddress", "ActivationState"];

/// Keys a host may set in the default domain.
pub const WRITABLE_DEFAULT: &[&str] = &[
    "DeviceName",
    "TimeZone",
    "Uses24HourClock",
    "TimeIntervalSince1970",
];
/// Keys a host may set in the international domain.
pub const WRITABLE_INTERNATIONAL: &[&str] = &["Language", "Locale", "Keyboard"];
/// Further domains a host may write to (wireless pairing switches and the like).
pub const WRITABLE_DOMAINS: &[&str] = &["com.apple.mobile.wireless_lockdown"];

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The whole default domain as a trusted host sees it.
pub fn default_domain(ipad: &VirtualIpad, state: &DeviceState) -> Dictionary {
    let spec = &ipad.spec;
    let id = &spec.identity;
    let m = spec.model;
    let mut d = Dictionary::new();
    let mut s = |k: &str, v: &str| {
        d.insert(k.into(), Value::String(v.into()));
    };
    s(
        "ActivationState",
        if state.activated {
            "Activated"
        } else {
            "Unactivated"
        },
    );
    s("BasebandStatus", "NoTelephonyCapabilty");
    s("BluetoothAddress", &id.bluetooth_address);
    s("BuildVersion", spec.release.build);
    s("CPUArchitecture", m.cpu_architecture);
    s("DeviceClass", "iPad");
    s("DeviceColor", "1");
    s("DeviceName", &state.device_name);
    s("FirmwareVersion", "iBoot-10151.140.19");
    s("HardwareModel", m.hardware_model);
    s("HardwarePlatform", m.hardware_platform);
    s("MLBSerialNumber", &id.mlb_serial_number);
    s("ModelNumber", &id.model_number);
    s("PartitionType", "GUID_partition_scheme");
    s("ProductName", "iPhone OS");
    s("ProductType", m.product_type);
    s("ProductVersion", spec.release.version);
    s("ProtocolVersion", "2");
    s("RegionInfo", "LL/A");
    s("SerialNumber", &id.serial_number);
    s("SoftwareBundleVersion", "");
    s("TimeZone", &state.time_zone);
    s("UniqueDeviceID", &id.udid);
    s("WiFiAddress", &id.wifi_address);
    if let Some(buid) = &state.untrusted_host_buid {
        s("UntrustedHostBUID", buid);
    }
    let mut u = |k: &str, v: u64| {
        d.insert(k.into(), Value::Integer(v.into()));
    };
    u("BoardId", u64::from(m.board_id));
    u("ChipID", u64::from(m.chip_id));
    u("DieID", id.die_id);
    u("UniqueChipID", id.ecid);
    u("PairRecordProtectionClass", 4);
    let mut b = |k: &str, v: bool| {
        d.insert(k.into(), Value::Boolean(v));
    };
    b("ActivationStateAcknowledged", state.activated);
    b("BrickState", !state.activated);
    b("HasSiDP", true);
    b("HostAttached", true);
    b("PasswordProtected", state.passcode);
    b("ProductionSOC", true);
    b("TelephonyCapability", false);
    b("TrustedHostAttached", !state.hosts.is_empty());
    b("UseRaptorCerts", true);
    b("Uses24HourClock", state.uses_24h_clock);
    d.insert("DevicePublicKey".into(), Value::Data(ipad.public_key_pem()));
    d.insert(
        "SupportedDeviceFamilies".into(),
        Value::Array(vec![Value::Integer(1.into()), Value::Integer(2.into())]),
    );
    let clock = now() + state.clock_offset;
    d.insert("TimeIntervalSince1970".into(), Value::Real(clock));
    // Follows the zone (and its summer time) at the device's clock.
    let offset = crate::value_rules::offset_from_utc(&state.time_zone, clock as i64).unwrap_or(0.0);
    d.insert("TimeZoneOffsetFromUTC".into(), Value::Real(offset));
    d
}

/// The subset answered to `GetValue` with no key before a session.
pub fn public_subset(ipad: &VirtualIpad, state: &DeviceState) -> Dictionary {
    default_domain(ipad, state)
        .into_iter()
        .filter(|(k, _)| PUBLIC_KEYS.contains(&k.as_str()))
        .collect()
}

/// Whether `key` of the default domain may be read without a session.
pub fn readable_untrusted(key: &str) -> bool {
    PUBLIC_KEYS.contains(&key) || PUBLIC_BY_KEY.contains(&key)
}

/// A named domain, if the device has it.
pub fn domain(ipad: &VirtualIpad, state: &DeviceState, name: &str) -> Option<Dictionary> {
    let mut d = Dictionary::new();
    match name {
        INTERNATIONAL => {
            d.insert("Language".into(), state.language.clone().into());
            d.insert("Locale".into(), state.locale.clone().into());
            d.insert(
                "Keyboard".into(),
                format!("{}@sw=QWERTY;hw=Automatic", state.locale).into(),
            );
            let langs = ["en", "fr", "de", "es", "it", "ja", "nl", "pt-BR", "zh-Hans"];
            d.insert(
                "SupportedLanguages".into(),
                Value::Array(langs.iter().map(|l| Value::String((*l).into())).collect()),
            );
            let locales = [
                "en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "ja_JP",
            ];
            d.insert(
                "SupportedLocales".into(),
                Value::Array(locales.iter().map(|l| Value::String((*l).into())).collect()),
            );
        }
        "com.apple.mobile.battery" => {
            d.insert("BatteryCurrentCapacity".into(), 87u64.into());
            d.insert("BatteryIsCharging".into(), true.into());
            d.insert("ExternalChargeCapable".into(), true.into());
            d.insert("ExternalConnected".into(), true.into());
            d.insert("FullyCharged".into(), false.into());
            d.insert("GasGaugeCapability".into(), true.into());
            d.insert("HasBattery".into(), true.into());
        }
        "com.apple.disk_usage" => {
            let total: u64 = 64_000_000_000;
            d.insert("TotalDiskCapacity".into(), total.into());
            d.insert("TotalDataCapacity".into(), (total - 8_000_000_000).into());
            d.insert("TotalDataAvailable".into(), (total - 14_000_000_000).into());
            d.insert(
                "AmountDataAvailable".into(),
                (total - 14_000_000_000).into(),
            );
        }
        "com.apple.xcode.developerdomain" => {
            d.insert("DeveloperStatus".into(), "Disabled".into());
        }
        "com.apple.mobile.wireless_lockdown" => {
            d.insert("EnableWifiConnections".into(), false.into());
            if let Some(extra) = state.extra_domains.get(name) {
                d.extend(extra.clone());
            }
        }
        _ => {
            let extra = state.extra_domains.get(name)?;
            d.extend(extra.clone());
        }
    }
    let _ = ipad;
    Some(d)
}
