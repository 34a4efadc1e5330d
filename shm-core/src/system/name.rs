//! [`SegmentName`]: a validated segment name, held without an allocator (a bounded string),
//! so the [`System`](super::System) trait can name segments on any target.

use core::fmt;

/// Prefix of every segment this library creates, so tools can find ours.
pub const PREFIX: &str = "shmipc.";

/// The longest segment name, in bytes (all of them ASCII).
pub const MAX_NAME_LEN: usize = 200;

/// The longest prefixed name ([`PREFIX`] + a name).
pub const MAX_PREFIXED_LEN: usize = 7 + MAX_NAME_LEN;
const _: () = assert!(PREFIX.len() == 7);

/// Why a string is not a segment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong,
    /// The name starts with a dot.
    LeadingDot,
    /// The name holds a character outside `A-Z a-z 0-9 . _ -` (a NUL byte, a slash, ...).
    BadCharacter,
}

impl NameError {
    /// What is wrong, in words.
    pub fn reason(self) -> &'static str {
        match self {
            NameError::Empty => "empty",
            NameError::TooLong => "longer than 200 characters",
            NameError::LeadingDot => "starts with a dot",
            NameError::BadCharacter => "only A-Z, a-z, 0-9, '.', '_' and '-' are allowed",
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid segment name: {}", self.reason())
    }
}

impl core::error::Error for NameError {}

/// A segment name: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with a dot.
/// The operating-system object is named from it with [`PREFIX`] (`/shmipc.NAME` on POSIX,
/// `Local\shmipc.NAME` on Windows).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName(heapless::String<MAX_NAME_LEN>);

impl SegmentName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(NameError::BadCharacter);
        }
        // All ASCII from here on: bytes are characters, and a name that does not fit the
        // bounded string is longer than MAX_NAME_LEN.
        let mut s = heapless::String::new();
        s.push_str(name).map_err(|_| NameError::TooLong)?;
        Ok(SegmentName(s))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with the library prefix (`shmipc.NAME`).
    pub fn prefixed(&self) -> heapless::String<MAX_PREFIXED_LEN> {
        let mut s = heapless::String::new();
        // Cannot fail: the capacity is the prefix plus the longest name.
        let _ = s.push_str(PREFIX);
        let _ = s.push_str(&self.0);
        s
    }

    /// The name of a prefixed object (`shmipc.NAME` gives `NAME`), or `None` for an object
    /// that is not one of ours (another prefix, or not a valid name after it).
    pub fn from_prefixed(object: &str) -> Option<Self> {
        SegmentName::new(object.strip_prefix(PREFIX)?).ok()
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for SegmentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        SegmentName::new(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Names are checked: only a safe character set, bounded length.
    #[test]
    fn names_are_validated() {
        assert!(SegmentName::new("demo-1.a_b").is_ok());
        let longest = [b'x'; MAX_NAME_LEN];
        let longest = core::str::from_utf8(&longest).unwrap();
        assert_eq!(SegmentName::new(longest).unwrap().as_str(), longest);
        let too_long = [b'x'; MAX_NAME_LEN + 1];
        let too_long = core::str::from_utf8(&too_long).unwrap();
        for (bad, why) in [
            ("", NameError::Empty),
            (".hidden", NameError::LeadingDot),
            ("a/b", NameError::BadCharacter),
            ("a b", NameError::BadCharacter),
            ("a\0b", NameError::BadCharacter),
            ("ä", NameError::BadCharacter),
            (too_long, NameError::TooLong),
        ] {
            assert_eq!(SegmentName::new(bad), Err(why), "{bad:?}");
        }
        assert_eq!(SegmentName::new("x").unwrap().prefixed(), "shmipc.x");
        let prefixed = SegmentName::new(longest).unwrap().prefixed();
        assert_eq!(prefixed.len(), MAX_PREFIXED_LEN);
    }

    /// Only our objects with valid names come back from their prefixed form.
    #[test]
    fn prefixed_names_round_trip() {
        let n = SegmentName::new("a.b").unwrap();
        assert_eq!(SegmentName::from_prefixed(&n.prefixed()), Some(n));
        assert_eq!(SegmentName::from_prefixed("other"), None);
        assert_eq!(SegmentName::from_prefixed("shmipc.bad name"), None);
        assert_eq!(SegmentName::from_prefixed("shmipc."), None);
    }
}
