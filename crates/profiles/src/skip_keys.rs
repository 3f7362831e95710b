//! Setup Assistant skip keys (`SkipSetup`, `docs/protocol.md` §5.5).
//!
//! The catalogue holds Apple's list (the 2024-10 `skipkeys.yaml`, versions are the iOS/iPadOS
//! introduction) and the newer keys go-ios and pymobiledevice3 send. Both spellings
//! `OSShowCase` (go-ios) and `OSShowcase` (pymobiledevice3) are kept until Apple's page settles
//! it. Keys for macOS or tvOS only are in the table, marked, and never chosen for an iPad.
//!
//! "all" is every iPad key on every version, deprecated and future ones included, as the proven
//! tools send it (go-ios `skipAllSetup`, pymobiledevice3 `supervise`: one fixed list whatever the
//! device runs): the device only type-checks the array and ignores names it does not know
//! (`docs/protocol.md` §5.5), so a key sent early or late is harmless, while a wrong guess of a
//! pane's first version would leave that pane on screen. The versions stay in the table as
//! documentation.

use std::fmt;
use std::str::FromStr;

/// An iOS/iPadOS version: `major.minor.patch` (missing parts are 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IosVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl IosVersion {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        IosVersion {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for IosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// A version string that is not `N`, `N.N` or `N.N.N`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid iOS version {0:?} (expected e.g. 17.6.1, 18.5 or 26.0)")]
pub struct InvalidVersion(pub String);

impl FromStr for IosVersion {
    type Err = InvalidVersion;

    /// Parses `17.6.1`, `18.5`, `26.0`, `18` (surrounding spaces allowed).
    fn from_str(s: &str) -> Result<Self, InvalidVersion> {
        let bad = || InvalidVersion(s.to_owned());
        let parts: Vec<&str> = s.trim().split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(bad());
        }
        let mut numbers = [0u16; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            *slot = part.parse().map_err(|_| bad())?;
        }
        Ok(IosVersion::new(numbers[0], numbers[1], numbers[2]))
    }
}

/// Platforms a key applies to (a small bit set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Platforms(u8);

impl Platforms {
    /// iOS and iPadOS.
    pub const IOS: Platforms = Platforms(1);
    pub const MACOS: Platforms = Platforms(2);
    pub const TVOS: Platforms = Platforms(4);

    /// True when every platform of `other` is in `self`.
    pub const fn contains(self, other: Platforms) -> bool {
        self.0 & other.0 == other.0
    }

    /// A readable name, for messages.
    pub fn describe(self) -> &'static str {
        match self.0 {
            1 => "iOS/iPadOS",
            2 => "macOS",
            4 => "tvOS",
            _ => "several platforms",
        }
    }
}

/// One row of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipKey {
    pub key: &'static str,
    /// First iOS version with the pane; `None` for "all versions" (or not documented).
    pub introduced: Option<IosVersion>,
    /// First iOS version without the pane.
    pub deprecated: Option<IosVersion>,
    pub platforms: Platforms,
    /// A caveat, e.g. "not always skippable"; empty when none.
    pub note: &'static str,
}

const fn v(major: u16, minor: u16, patch: u16) -> Option<IosVersion> {
    Some(IosVersion::new(major, minor, patch))
}

const fn ios(key: &'static str, introduced: Option<IosVersion>) -> SkipKey {
    SkipKey {
        key,
        introduced,
        deprecated: None,
        platforms: Platforms::IOS,
        note: "",
    }
}

const fn ios_until(
    key: &'static str,
    introduced: Option<IosVersion>,
    deprecated: Option<IosVersion>,
) -> SkipKey {
    SkipKey {
        key,
        introduced,
        deprecated,
        platforms: Platforms::IOS,
        note: "",
    }
}

const fn ios_note(
    key: &'static str,
    introduced: Option<IosVersion>,
    note: &'static str,
) -> SkipKey {
    SkipKey {
        key,
        introduced,
        deprecated: None,
        platforms: Platforms::IOS,
        note,
    }
}

const fn other(key: &'static str, platforms: Platforms) -> SkipKey {
    SkipKey {
        key,
        introduced: None,
        deprecated: None,
        platforms,
        note: "",
    }
}

/// Not documented with a version: sent on every version.
const UNDATED: &str = "added by go-ios #657, version not documented";

/// The catalogue, in the order [`expand`] returns keys.
pub static CATALOGUE: &[SkipKey] = &[
    // Apple's list (skipkeys.yaml, 2024-10).
    other("Accessibility", Platforms::MACOS),
    ios("ActionButton", v(17, 0, 0)),
    ios("Android", v(9, 0, 0)),
    ios("Appearance", v(13, 0, 0)),
    ios("AppleID", None),
    ios("AppStore", v(14, 3, 0)),
    ios("Biometric", v(8, 1, 0)),
    ios("CameraButton", v(18, 0, 0)),
    ios("DeviceToDeviceMigration", v(12, 4, 0)),
    ios("Diagnostics", None),
    ios_until("DisplayTone", v(9, 3, 2), v(15, 0, 0)),
    ios("EnableLockdownMode", v(17, 1, 0)),
    other("FileVault", Platforms::MACOS),
    ios_until("HomeButtonSensitivity", v(10, 0, 0), v(15, 0, 0)),
    other("iCloudDiagnostics", Platforms::MACOS),
    other("iCloudStorage", Platforms::MACOS),
    ios("iMessageAndFaceTime", v(12, 0, 0)),
    ios("Intelligence", v(18, 0, 0)),
    ios_note("Keyboard", v(13, 0, 0), "not always skippable"),
    ios("Location", None),
    ios("MessagingActivationUsingPhoneNumber", v(10, 0, 0)),
    ios_until("OnBoarding", v(11, 0, 0), v(14, 0, 0)),
    ios("Passcode", None),
    ios("Payment", v(8, 1, 0)),
    ios("Privacy", v(11, 3, 0)),
    ios("Restore", None),
    ios("RestoreCompleted", v(14, 0, 0)),
    ios("Safety", v(16, 0, 0)),
    other("ScreenSaver", Platforms::TVOS),
    ios("ScreenTime", v(12, 0, 0)),
    ios("SIMSetup", v(12, 0, 0)),
    ios("Siri", None),
    ios("SoftwareUpdate", v(12, 0, 0)),
    ios_note("SpokenLanguage", v(13, 0, 0), "not always skippable"),
    other("TapToSetup", Platforms::TVOS),
    ios_note("TermsOfAddress", v(16, 0, 0), "not always skippable"),
    ios("TOS", None),
    other("TVHomeScreenSync", Platforms::TVOS),
    other("TVProviderSignIn", Platforms::TVOS),
    other("TVRoom", Platforms::TVOS),
    ios("UpdateCompleted", v(14, 0, 0)),
    other("Wallpaper", Platforms::MACOS),
    ios("WatchMigration", v(11, 0, 0)),
    ios("Welcome", v(13, 0, 0)),
    ios_until("Zoom", v(8, 3, 0), v(17, 0, 0)),
    // Newer keys the tools add.
    ios_note(
        "WebContentFiltering",
        v(18, 1, 1),
        "pymobiledevice3: iOS 18.1.1; go-ios: iOS 26",
    ),
    ios("AgeAssurance", v(26, 0, 0)),
    ios("AgeBasedSafetySettings", v(26, 0, 0)),
    ios_note("OSShowCase", v(26, 0, 0), "go-ios spelling"),
    ios_note("OSShowcase", v(26, 0, 0), "pymobiledevice3 spelling"),
    ios("SafetyAndHandling", v(26, 0, 0)),
    ios("Tips", v(26, 0, 0)),
    ios("AdditionalPrivacySettings", v(26, 0, 0)),
    ios("LiquidGlass", v(27, 0, 0)),
    ios_note("AccessibilityAppearance", None, UNDATED),
    ios_note("Avatar", None, UNDATED),
    ios_note("CloudStorage", None, UNDATED),
    ios_note("DeviceProtection", None, UNDATED),
    ios_note("Display", None, UNDATED),
    ios_note("ExpressLanguage", None, UNDATED),
    ios_note("IntendedUser", None, UNDATED),
    ios_note("Language", None, UNDATED),
    ios_note("LanguageAndLocale", None, UNDATED),
    ios_note("LockdownMode", None, UNDATED),
    ios_note("Multitasking", None, UNDATED),
    ios_note("PreferredLanguage", None, UNDATED),
    ios_note("Region", None, UNDATED),
    ios_note("Registration", None, UNDATED),
    ios_note("Tone", None, UNDATED),
    ios_note("TouchID", None, UNDATED),
    ios_note("TrueToneDisplay", None, UNDATED),
    ios_note("UnlockWithWatch", None, UNDATED),
    ios_note(
        "WiFi",
        None,
        "added by go-ios #657; the device then needs a Wi-Fi profile or cellular to get online",
    ),
];

/// The catalogue row of a key (exact, case-sensitive name).
pub fn lookup(key: &str) -> Option<&'static SkipKey> {
    CATALOGUE.iter().find(|k| k.key == key)
}

/// Which keys to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipSelection {
    /// Every iPad key applicable to the device's version.
    All,
    /// These keys, validated against the catalogue.
    List(Vec<String>),
}

impl FromStr for SkipSelection {
    type Err = std::convert::Infallible;

    /// `all` (any case), or keys separated by commas (an empty string is an empty list).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(SkipSelection::All);
        }
        Ok(SkipSelection::List(
            s.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl<'de> serde::Deserialize<'de> for SkipSelection {
    /// `"all"` or a list of key names.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) if s.trim().eq_ignore_ascii_case("all") => Ok(SkipSelection::All),
            Raw::One(s) => Err(serde::de::Error::custom(format!(
                "expected \"all\" or a list of skip keys, got {s:?}"
            ))),
            Raw::Many(keys) => Ok(SkipSelection::List(keys)),
        }
    }
}

/// Why a listed key was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// Not in the catalogue.
    NotInCatalogue,
    /// In the catalogue, for another platform only.
    OtherPlatform(Platforms),
}

/// A listed key that was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKey {
    pub name: String,
    pub reason: UnknownReason,
    /// A catalogue key it probably means (same name ignoring case, or a close spelling).
    pub suggestion: Option<&'static str>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            UnknownReason::NotInCatalogue => write!(f, "{:?} is not a known skip key", self.name)?,
            UnknownReason::OtherPlatform(p) => write!(
                f,
                "{:?} is a {} skip key, not for iPad",
                self.name,
                p.describe()
            )?,
        }
        if let Some(s) = self.suggestion {
            write!(f, " (did you mean {s:?}?)")?;
        }
        Ok(())
    }
}

/// Listed keys that were not accepted, with the accepted ones, so the caller can decide whether
/// to go on with `known` or stop.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown skip keys: {}", .unknown.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct UnknownKeys {
    pub unknown: Vec<UnknownKey>,
    /// The accepted keys, in the order given.
    pub known: Vec<String>,
}

/// [`expand`]'s errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipKeysError {
    #[error(transparent)]
    UnknownKeys(#[from] UnknownKeys),
    #[error(transparent)]
    InvalidVersion(#[from] InvalidVersion),
}

/// The `SkipSetup` array for an iPad running `ios_version` (e.g. `"18.5"`).
///
/// `All` gives every iPad key of the catalogue, in catalogue order, whatever the version (see
/// the module comment); the version is still checked, as a sign of a bad device record. A
/// `List` is returned as given (duplicates removed), whatever the version — sending a key the
/// device does not know is harmless — after checking every name against the catalogue: unknown
/// names, and keys for other platforms only, are all reported in [`UnknownKeys`] with a "did
/// you mean" suggestion where one is close.
pub fn expand(selection: &SkipSelection, ios_version: &str) -> Result<Vec<String>, SkipKeysError> {
    let version: IosVersion = ios_version.parse()?;
    Ok(expand_for(selection, version)?)
}

/// [`expand`] with an already parsed version (which `All` does not depend on).
pub fn expand_for(
    selection: &SkipSelection,
    _version: IosVersion,
) -> Result<Vec<String>, UnknownKeys> {
    match selection {
        SkipSelection::All => Ok(CATALOGUE
            .iter()
            .filter(|k| k.platforms.contains(Platforms::IOS))
            .map(|k| k.key.to_owned())
            .collect()),
        SkipSelection::List(names) => {
            let mut known: Vec<String> = Vec::new();
            let mut unknown: Vec<UnknownKey> = Vec::new();
            for name in names {
                if known.contains(name) || unknown.iter().any(|u| &u.name == name) {
                    continue;
                }
                match lookup(name) {
                    Some(k) if k.platforms.contains(Platforms::IOS) => known.push(name.clone()),
                    Some(k) => unknown.push(UnknownKey {
                        name: name.clone(),
                        reason: UnknownReason::OtherPlatform(k.platforms),
                        suggestion: None,
                    }),
                    None => unknown.push(UnknownKey {
                        name: name.clone(),
                        reason: UnknownReason::NotInCatalogue,
                        suggestion: suggest(name),
                    }),
                }
            }
            if unknown.is_empty() {
                Ok(known)
            } else {
                Err(UnknownKeys { unknown, known })
            }
        }
    }
}

/// True when the key is an iPad key whose pane exists on `version`, by the catalogue's dates
/// (documentation: `All` sends every iPad key regardless).
pub fn applies(key: &SkipKey, version: IosVersion) -> bool {
    key.platforms.contains(Platforms::IOS)
        && key.introduced.is_none_or(|i| i <= version)
        && key.deprecated.is_none_or(|d| version < d)
}

/// The closest catalogue key: same name ignoring case first, then a case-insensitive edit
/// distance of at most 2 (3 for long names).
fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    if let Some(k) = CATALOGUE.iter().find(|k| k.key.to_lowercase() == lower) {
        return Some(k.key);
    }
    let limit = if lower.chars().count() >= 12 { 3 } else { 2 };
    CATALOGUE
        .iter()
        .map(|k| (distance(&lower, &k.key.to_lowercase()), k.key))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(version: &str) -> Vec<String> {
        expand(&SkipSelection::All, version).expect("expand")
    }

    #[test]
    fn versions_parse() {
        assert_eq!("17.6.1".parse(), Ok(IosVersion::new(17, 6, 1)));
        assert_eq!("18.5".parse(), Ok(IosVersion::new(18, 5, 0)));
        assert_eq!("26.0".parse(), Ok(IosVersion::new(26, 0, 0)));
        assert_eq!(" 18 ".parse(), Ok(IosVersion::new(18, 0, 0)));
        for bad in ["", "18.", ".5", "18.5.1.2", "v18", "18.x", "18.-1", "99999"] {
            assert!(bad.parse::<IosVersion>().is_err(), "{bad}");
        }
        assert!(IosVersion::new(18, 1, 1) > IosVersion::new(18, 1, 0));
        assert!(IosVersion::new(9, 3, 2) < IosVersion::new(10, 0, 0));
        assert_eq!(IosVersion::new(18, 1, 1).to_string(), "18.1.1");
        assert_eq!(IosVersion::new(26, 0, 0).to_string(), "26.0");
    }

    #[test]
    fn catalogue_is_consistent() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|k| k.key).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate key in the catalogue");
        for k in CATALOGUE {
            if let (Some(i), Some(d)) = (k.introduced, k.deprecated) {
                assert!(i < d, "{}", k.key);
            }
        }
        assert!(lookup("OSShowCase").is_some() && lookup("OSShowcase").is_some());
    }

    #[test]
    fn all_is_every_ipad_key_on_every_version_as_the_proven_tools_send_it() {
        let v26 = all("26.0");
        let has = |list: &[String], key: &str| list.iter().any(|k| k == key);
        for version in ["15.7", "16.7.10", "17.6.1", "18.5", "26.0", "27.0"] {
            assert_eq!(all(version), v26, "the same list on {version}");
        }
        // Keys newer than the device, keys its release no longer has, and undated ones: the
        // device ignores names it does not know.
        for key in [
            "Intelligence",
            "CameraButton",
            "WebContentFiltering",
            "LiquidGlass",
            "Zoom",
            "DisplayTone",
            "HomeButtonSensitivity",
            "OnBoarding",
            "AppleID",
            "WiFi",
            "OSShowCase",
            "OSShowcase",
        ] {
            assert!(has(&all("15.7"), key), "{key}");
        }
        // Other platforms never.
        for key in [
            "Accessibility",
            "FileVault",
            "iCloudDiagnostics",
            "iCloudStorage",
            "ScreenSaver",
            "TapToSetup",
            "TVHomeScreenSync",
            "TVProviderSignIn",
            "TVRoom",
            "Wallpaper",
        ] {
            assert!(!has(&v26, key), "{key}");
        }
        // Every key go-ios's skipAllSetup sends for iOS is in it.
        for key in [
            "AccessibilityAppearance",
            "ActionButton",
            "Android",
            "Appearance",
            "AppStore",
            "Avatar",
            "Biometric",
            "CloudStorage",
            "DeviceProtection",
            "DeviceToDeviceMigration",
            "Diagnostics",
            "Display",
            "EnableLockdownMode",
            "ExpressLanguage",
            "iMessageAndFaceTime",
            "IntendedUser",
            "Keyboard",
            "Language",
            "LanguageAndLocale",
            "Location",
            "LockdownMode",
            "MessagingActivationUsingPhoneNumber",
            "Multitasking",
            "Passcode",
            "Payment",
            "PreferredLanguage",
            "Privacy",
            "Region",
            "Registration",
            "Restore",
            "RestoreCompleted",
            "Safety",
            "ScreenTime",
            "SIMSetup",
            "Siri",
            "SoftwareUpdate",
            "SpokenLanguage",
            "TermsOfAddress",
            "Tone",
            "TOS",
            "TouchID",
            "TrueToneDisplay",
            "UnlockWithWatch",
            "UpdateCompleted",
            "WatchMigration",
            "Welcome",
        ] {
            assert!(has(&v26, key), "{key}");
        }
        // No duplicates.
        let mut sorted = v26.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), v26.len());
    }

    #[test]
    fn the_catalogue_dates_still_say_when_each_pane_exists() {
        let key = |k| lookup(k).expect(k);
        let at = |v: &str| v.parse::<IosVersion>().expect(v);
        assert!(applies(key("Zoom"), at("16.7")) && !applies(key("Zoom"), at("17.0")));
        assert!(!applies(key("Intelligence"), at("17.6.1")));
        assert!(applies(key("Intelligence"), at("18.0")));
        assert!(!applies(key("FileVault"), at("26.0")));
    }

    #[test]
    fn all_with_a_bad_version_is_an_error() {
        assert!(matches!(
            expand(&SkipSelection::All, "eighteen"),
            Err(SkipKeysError::InvalidVersion(_))
        ));
    }

    #[test]
    fn lists_are_validated() {
        let list = SkipSelection::List(vec![
            "Diagnostics".into(),
            "wifi".into(),
            "Diagnostic".into(),
            "FileVault".into(),
            "Siri".into(),
            "Diagnostics".into(),
            "NoSuchPaneAtAll".into(),
            "osshowcase".into(),
        ]);
        let e = match expand(&list, "18.5") {
            Err(SkipKeysError::UnknownKeys(e)) => e,
            other => panic!("expected unknown keys, got {other:?}"),
        };
        assert_eq!(e.known, vec!["Diagnostics", "Siri"]);
        let by_name = |n: &str| e.unknown.iter().find(|u| u.name == n).expect(n);
        assert_eq!(e.unknown.len(), 5);
        assert_eq!(by_name("wifi").suggestion, Some("WiFi"));
        assert_eq!(by_name("Diagnostic").suggestion, Some("Diagnostics"));
        assert_eq!(
            by_name("FileVault").reason,
            UnknownReason::OtherPlatform(Platforms::MACOS)
        );
        assert_eq!(by_name("NoSuchPaneAtAll").suggestion, None);
        assert_eq!(by_name("osshowcase").suggestion, Some("OSShowCase"));
        let message = e.to_string();
        assert!(message.contains("did you mean \"WiFi\""), "{message}");
        assert!(message.contains("macOS skip key"), "{message}");

        // A valid list comes back as given, even with keys newer than the version.
        let ok = SkipSelection::List(vec!["Tips".into(), "AppleID".into(), "Tips".into()]);
        assert_eq!(expand(&ok, "17.0").expect("valid"), vec!["Tips", "AppleID"]);
    }

    #[test]
    fn selection_parsing() {
        assert_eq!("ALL".parse::<SkipSelection>(), Ok(SkipSelection::All));
        assert_eq!(
            "Siri, TOS,,".parse::<SkipSelection>(),
            Ok(SkipSelection::List(vec!["Siri".into(), "TOS".into()]))
        );
        #[derive(serde::Deserialize)]
        struct Cfg {
            skip: SkipSelection,
        }
        let c: Cfg = toml::from_str("skip = \"all\"").expect("all");
        assert_eq!(c.skip, SkipSelection::All);
        let c: Cfg = toml::from_str("skip = [\"Siri\", \"TOS\"]").expect("list");
        assert_eq!(
            c.skip,
            SkipSelection::List(vec!["Siri".into(), "TOS".into()])
        );
        assert!(toml::from_str::<Cfg>("skip = \"Siri\"").is_err());
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
