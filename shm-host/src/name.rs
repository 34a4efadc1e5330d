//! [`SegmentName`]: a validated segment name (defined in shm-core, so that every system can
//! name segments), and [`parse`], which keeps the rejected text in the host's error.

use crate::error::{HostError, Result};

pub use shm_core::system::{NameError, SegmentName, MAX_NAME_LEN, PREFIX};

/// Validates `name`; a rejected name is [`HostError::InvalidName`], naming it.
pub fn parse(name: &str) -> Result<SegmentName> {
    SegmentName::new(name).map_err(|e| HostError::InvalidName {
        name: name.to_owned(),
        reason: e.reason(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rejected names keep their text and the reason in the host's error.
    #[test]
    fn names_are_validated() {
        assert!(parse("demo-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(201)] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(&e, HostError::InvalidName { name, .. } if name == bad),
                "{bad:?}"
            );
            assert!(e.to_string().contains("invalid segment name"));
        }
        assert_eq!(parse("x").unwrap().prefixed(), "shmipc.x");
    }
}
