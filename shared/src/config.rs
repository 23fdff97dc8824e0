//! Reading typed settings from the environment, with errors that name the variable.
//!
//! Services take a lookup function instead of reading `std::env` directly, so tests inject
//! their settings rather than mutating the process environment.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// Where settings come from: the process environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{name} must be set: {reason}")]
    Missing { name: &'static str, reason: String },
}

impl ConfigError {
    pub fn invalid(name: &'static str, value: impl Into<String>, reason: impl Display) -> Self {
        Self::Invalid {
            name,
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}

/// A variable's value: unset and blank both count as absent.
pub fn optional(source: &dyn Source, name: &'static str) -> Option<String> {
    source
        .get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A variable parsed with `FromStr`, or `default` when absent.
pub fn parse_or<T>(source: &dyn Source, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match optional(source, name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|err| ConfigError::invalid(name, raw, err)),
    }
}

/// A boolean flag: `1/true/yes/on` or `0/false/no/off`, case-insensitive.
pub fn flag(source: &dyn Source, name: &'static str) -> Result<bool, ConfigError> {
    match optional(source, name) {
        None => Ok(false),
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::invalid(name, raw, "expected true or false")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_variable() {
        let env = HashMap::from([("APP_PORT", "http")]);
        let err = parse_or::<u16>(&env, "APP_PORT", 1).unwrap_err();
        assert!(
            err.to_string().starts_with("APP_PORT=\"http\" is invalid"),
            "{err}"
        );
    }

    #[test]
    fn blank_counts_as_absent() {
        let env = HashMap::from([("APP_PORT", "  ")]);
        assert_eq!(parse_or::<u16>(&env, "APP_PORT", 7).unwrap(), 7);
    }

    #[test]
    fn flags() {
        let env = HashMap::from([("A", "TRUE"), ("B", "off"), ("C", "maybe")]);
        assert!(flag(&env, "A").unwrap());
        assert!(!flag(&env, "B").unwrap());
        assert!(!flag(&env, "D").unwrap());
        assert!(flag(&env, "C").is_err());
    }
}
