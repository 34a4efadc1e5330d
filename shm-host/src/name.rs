//! [`SegmentName`]: a validated segment name.

use std::fmt;

use crate::error::{HostError, Result};

/// Prefix of every segment this library creates, so tools can find ours.
pub const PREFIX: &str = "shmipc.";

/// A segment name: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with a dot.
/// The operating-system object is named from it with [`PREFIX`] (`/shmipc.NAME` on POSIX,
/// `Local\shmipc.NAME` on Windows).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SegmentName(String);

impl SegmentName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| HostError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > 200 {
            return Err(invalid("longer than 200 characters"));
        }
        if name.starts_with('.') {
            return Err(invalid("starts with a dot"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"));
        }
        Ok(SegmentName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with the library prefix (`shmipc.NAME`).
    pub fn prefixed(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SegmentName {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self> {
        SegmentName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are checked: only a safe character set, bounded length.
    #[test]
    fn names_are_validated() {
        assert!(SegmentName::new("demo-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(201)] {
            let e = SegmentName::new(bad).unwrap_err();
            assert!(matches!(e, HostError::InvalidName { .. }), "{bad:?}");
            assert!(e.to_string().contains("invalid segment name"));
        }
        assert_eq!(SegmentName::new("x").unwrap().prefixed(), "shmipc.x");
    }
}
