//! What lockdownd's `SetValue` accepts for the values a host sets during preparation, and the
//! values that follow from them (`docs/fidelity.md` §3). Pure functions, table-tested.

use std::str::FromStr;

use chrono::Offset;
use plist::Value;

/// A zone name of the IANA database (`Europe/London`, `America/New_York`, `UTC`): iOS keeps its
/// time zone as such a name.
pub fn is_time_zone(name: &str) -> bool {
    chrono_tz::Tz::from_str(name).is_ok()
}

/// `TimeZoneOffsetFromUTC` of a zone now, in seconds (east positive), as lockdownd reports it
/// next to `TimeZone`; `None` for a name outside the database.
pub fn offset_from_utc(name: &str, unix_seconds: i64) -> Option<f64> {
    let tz = chrono_tz::Tz::from_str(name).ok()?;
    let utc = chrono::DateTime::from_timestamp(unix_seconds, 0)?;
    let local = utc.with_timezone(&tz);
    Some(f64::from(local.offset().fix().local_minus_utc()))
}

/// A language as iOS names them (`en`, `fr`, `pt-BR`, `zh-Hans`): a 2–3 letter code, then
/// hyphenated script or region subtags.
pub fn is_language(v: &str) -> bool {
    is_tag(v, '-')
}

/// A locale as iOS names them (`en_US`, `fr_FR`, `zh_Hans_CN`): a language code, then
/// underscore-separated script or region parts.
pub fn is_locale(v: &str) -> bool {
    is_tag(v, '_')
}

fn is_tag(v: &str, sep: char) -> bool {
    let mut parts = v.split(sep);
    let first_ok = parts
        .next()
        .is_some_and(|f| (2..=3).contains(&f.len()) && f.chars().all(|c| c.is_ascii_lowercase()));
    first_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// `TimeIntervalSince1970` as hosts send it: an integer (go-ios) or a real (seconds since 1970).
pub fn time_interval(v: &Value) -> Option<f64> {
    match v {
        Value::Real(r) if r.is_finite() && *r >= 0.0 => Some(*r),
        Value::Integer(i) => i.as_unsigned().map(|n| n as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_iana_names() {
        for (name, ok) in [
            ("Europe/London", true),
            ("America/New_York", true),
            ("Asia/Kolkata", true),
            ("UTC", true),
            ("Mars/Olympus_Mons", false),
            ("europe/london", false),
            ("", false),
            ("GMT+25", false),
        ] {
            assert_eq!(is_time_zone(name), ok, "{name}");
        }
    }

    #[test]
    fn the_offset_follows_the_zone_and_its_summer_time() {
        // 2026-01-15 and 2026-07-15, noon UTC.
        let (winter, summer) = (1_768_478_400, 1_784_116_800);
        for (zone, at, want) in [
            ("America/New_York", winter, -18_000.0),
            ("America/New_York", summer, -14_400.0),
            ("Europe/Paris", winter, 3_600.0),
            ("Europe/Paris", summer, 7_200.0),
            ("Asia/Kolkata", winter, 19_800.0),
            ("UTC", summer, 0.0),
        ] {
            assert_eq!(offset_from_utc(zone, at), Some(want), "{zone} at {at}");
        }
        assert_eq!(offset_from_utc("Nowhere/Else", winter), None);
    }

    #[test]
    fn languages_and_locales_have_their_own_shapes() {
        for (v, language, locale) in [
            ("en", true, true),
            ("pt-BR", true, false),
            ("zh-Hans", true, false),
            ("en_US", false, true),
            ("zh_Hans_CN", false, true),
            ("EN", false, false),
            ("english", false, false),
            ("en-", false, false),
            ("", false, false),
            ("e", false, false),
        ] {
            assert_eq!(is_language(v), language, "language {v:?}");
            assert_eq!(is_locale(v), locale, "locale {v:?}");
        }
    }

    #[test]
    fn the_time_comes_as_an_integer_or_a_real() {
        assert_eq!(
            time_interval(&Value::Integer(1_700_000_000.into())),
            Some(1.7e9)
        );
        assert_eq!(time_interval(&Value::Real(1.5)), Some(1.5));
        assert_eq!(time_interval(&Value::Real(f64::NAN)), None);
        assert_eq!(time_interval(&Value::Integer((-1).into())), None);
        assert_eq!(time_interval(&Value::String("now".into())), None);
    }
}
