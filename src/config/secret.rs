//! `Secret<T>`: a value (an API key, an auth header) that never prints itself.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Wraps a credential so that `Debug`, `Display` and `Serialize` show `*****`.
/// The only way to the value is [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The wrapped value. Call this only where the value leaves for its one rightful
    /// destination (an upstream request header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

const REDACTED: &str = "*****";

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("sk-live-123".to_string());
        assert_eq!(format!("{s}"), "*****");
        assert_eq!(format!("{s:?}"), "*****");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*****\"");
        assert_eq!(s.expose(), "sk-live-123");
    }
}
