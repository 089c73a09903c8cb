//! The canonical segment key: the one cache key for "everyone who sees the same list".
//!
//! Only three fields make a segment, each from an allowlist: `page`, `device` and `country`.
//! Unknown values map to a documented default instead of a new key, and the key has a fixed field
//! order, lowercase, with a bounded length, so a hostile query string cannot multiply cache
//! entries. The string form is `{page}.{device}.{country}`, e.g. `home.mobile.us`; it is safe in a
//! URL path and a Redis key.
//!
//! The page and device vocabularies are also the ranking model's context features (one-hot, in
//! this order); the training script writes them into the bundle metadata and the origin refuses a
//! bundle whose vocabulary differs.

use std::fmt;

/// Pages a list can be shown on, in the order of the model's one-hot context features.
pub const PAGES: [&str; 4] = ["home", "browse", "detail", "search"];
/// Devices, in the order of the model's one-hot context features.
pub const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
/// Page used when none or an unknown one is given.
pub const DEFAULT_PAGE: Page = Page(0);
/// Device used when none or an unknown one is given.
pub const DEFAULT_DEVICE: Device = Device(0);
/// Country used when none or a malformed one is given ("unknown region" in ISO 3166 user space).
pub const UNKNOWN_COUNTRY: Country = Country(*b"zz");

/// A page from [`PAGES`], stored as its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Page(u8);

/// A device from [`DEVICES`], stored as its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Device(u8);

/// An ISO 3166-1 alpha-2 country code, lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

fn lookup(vocabulary: &[&str], value: &str) -> Option<u8> {
    let value = value.trim();
    vocabulary.iter().position(|known| known.eq_ignore_ascii_case(value)).and_then(|index| u8::try_from(index).ok())
}

impl Page {
    /// The page named `value` (case-insensitive), if it is allowlisted.
    pub fn parse(value: &str) -> Option<Self> {
        lookup(&PAGES, value).map(Page)
    }
    /// Like [`Page::parse`], but an absent or unknown value is [`DEFAULT_PAGE`].
    pub fn parse_or_default(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or(DEFAULT_PAGE)
    }
    /// Position in [`PAGES`] (the model's one-hot index).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        PAGES[self.index()]
    }
}

impl Device {
    /// The device named `value` (case-insensitive), if it is allowlisted.
    pub fn parse(value: &str) -> Option<Self> {
        lookup(&DEVICES, value).map(Device)
    }
    /// Like [`Device::parse`], but an absent or unknown value is [`DEFAULT_DEVICE`].
    pub fn parse_or_default(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or(DEFAULT_DEVICE)
    }
    /// Position in [`DEVICES`] (the model's one-hot index).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        DEVICES[self.index()]
    }
    /// Guesses the device from a `User-Agent` header (tablets first: their agents often say
    /// "Mobile" too).
    pub fn from_user_agent(user_agent: &str) -> Self {
        let ua = user_agent.to_ascii_lowercase();
        if ua.contains("ipad") || ua.contains("tablet") {
            Device(2)
        } else if ua.contains("mobi") || ua.contains("iphone") || ua.contains("android") {
            Device(1)
        } else {
            DEFAULT_DEVICE
        }
    }
}

impl Country {
    /// Two ASCII letters, any case; anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_lowercase(), b.to_ascii_lowercase()]))
            }
            _ => None,
        }
    }
    /// Like [`Country::parse`], but an absent or malformed value is [`UNKNOWN_COUNTRY`].
    pub fn parse_or_default(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or(UNKNOWN_COUNTRY)
    }
    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("zz")
    }
}

/// The canonical segment: what the edge caches and the origin's segment endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    /// Page context.
    pub page: Page,
    /// Device context.
    pub device: Device,
    /// Visitor's country.
    pub country: Country,
}

/// Longest possible canonical key (`browse.desktop.zz`); keys are bounded by construction.
pub const MAX_SEGMENT_KEY_LEN: usize = 17;

/// Why a segment string is not a canonical key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "segment must be `page.device.country` with page in {PAGES:?}, device in {DEVICES:?} and a two-letter country, all lowercase; got {0:?}"
)]
pub struct SegmentKeyError(pub String);

impl SegmentKey {
    /// Builds a key from loose inputs: unknown or absent values become the defaults.
    pub fn from_parts(page: Option<&str>, device: Option<&str>, country: Option<&str>) -> Self {
        SegmentKey {
            page: Page::parse_or_default(page),
            device: Device::parse_or_default(device),
            country: Country::parse_or_default(country),
        }
    }

    /// Parses the canonical string form strictly: it must round-trip exactly, so one segment has
    /// one spelling.
    pub fn parse(key: &str) -> Result<Self, SegmentKeyError> {
        let error = || SegmentKeyError(key.chars().take(64).collect());
        if key.len() > MAX_SEGMENT_KEY_LEN {
            return Err(error());
        }
        let mut parts = key.split('.');
        let (Some(page), Some(device), Some(country), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(error());
        };
        let segment = SegmentKey {
            page: Page::parse(page).ok_or_else(error)?,
            device: Device::parse(device).ok_or_else(error)?,
            country: Country::parse(country).ok_or_else(error)?,
        };
        if segment.to_string() == key { Ok(segment) } else { Err(error()) }
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.page.as_str(), self.device.as_str(), self.country.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_fall_back_to_defaults() {
        let key = SegmentKey::from_parts(Some("<script>"), Some("fridge"), Some("usa"));
        assert_eq!(key.to_string(), "home.desktop.zz");
    }

    #[test]
    fn case_and_whitespace_do_not_make_new_keys() {
        let a = SegmentKey::from_parts(Some("Browse"), Some(" MOBILE"), Some("US"));
        let b = SegmentKey::from_parts(Some("browse"), Some("mobile"), Some("us"));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "browse.mobile.us");
    }

    #[test]
    fn strict_parse_round_trips_and_rejects_other_spellings() {
        assert!(SegmentKey::parse("search.tablet.de").is_ok());
        for bad in ["Home.desktop.us", "home.desktop", "home.desktop.us.x", "home..us", "", "home.desktop.usa"] {
            assert!(SegmentKey::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_key_is_within_the_bound() {
        for page in PAGES {
            for device in DEVICES {
                let key = SegmentKey::from_parts(Some(page), Some(device), None).to_string();
                assert!(key.len() <= MAX_SEGMENT_KEY_LEN, "{key}");
            }
        }
    }

    #[test]
    fn user_agents_map_to_devices() {
        assert_eq!(Device::from_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile").as_str(), "mobile");
        assert_eq!(Device::from_user_agent("Mozilla/5.0 (iPad; CPU OS 17_0) Mobile").as_str(), "tablet");
        assert_eq!(Device::from_user_agent("Mozilla/5.0 (X11; Linux x86_64)").as_str(), "desktop");
    }
}
