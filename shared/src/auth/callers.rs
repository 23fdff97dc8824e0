//! Which Dapr apps may do what on behalf of users: `TASKMESH_TRUSTED_CALLERS`.
//!
//! The grammar is that of Dapr's pub/sub scopes: `app=method,method;app2` (an app alone
//! may call every method). The caller's app id is the one its sidecar vouches for
//! (`dapr-caller-app-id`, from the mTLS identity in Kubernetes), and only counts when the
//! call came through our own sidecar; see the services' interceptors.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;

/// The metadata in which a sidecar names the calling app.
pub const CALLER_APP_ID: &str = "dapr-caller-app-id";

/// The calling app's id, as the sidecar delivered it: exactly one ASCII value, or none (a
/// second value can only be one the caller added itself, hoping to be read first).
pub fn caller_app_id(metadata: &MetadataMap) -> Option<&str> {
    let mut values = metadata.get_all(CALLER_APP_ID).iter();
    let first = values.next()?.to_str().ok()?;
    values.next().is_none().then_some(first)
}

/// Methods a trusted caller may use: all of them, or the ones listed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Methods {
    All,
    Only(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedCallers(HashMap<String, Methods>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?}: expected `app=method,method;app2` (app ids and method names without spaces)")]
pub struct CallersError(String);

impl TrustedCallers {
    pub fn parse(text: &str) -> Result<Self, CallersError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        let mut callers = HashMap::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (app, methods) = match entry.split_once('=') {
                None => (entry.trim(), Methods::All),
                Some((app, list)) => {
                    let list: Vec<String> = list
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if list.iter().any(|m| !valid(m)) {
                        return Err(CallersError(entry.to_owned()));
                    }
                    (app.trim(), Methods::Only(list))
                }
            };
            if !valid(app) || app.contains('/') {
                return Err(CallersError(entry.to_owned()));
            }
            callers.insert(app.to_owned(), methods);
        }
        Ok(Self(callers))
    }

    /// Also trusts `app` with every method.
    #[must_use]
    pub fn with_app(mut self, app: &str) -> Self {
        self.0.insert(app.to_owned(), Methods::All);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `app` may call `method` on behalf of a user.
    pub fn allows(&self, app: &str, method: &str) -> bool {
        match self.0.get(app) {
            Some(Methods::All) => true,
            Some(Methods::Only(methods)) => methods.iter().any(|m| m == method),
            None => false,
        }
    }

    /// Whether `app` is trusted for anything.
    pub fn knows(&self, app: &str) -> bool {
        self.0.contains_key(app)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn methods_are_per_caller() {
        let callers =
            TrustedCallers::parse("recurring-service=CreateTask; taskmesh-ops ;x=").unwrap();
        assert!(callers.allows("recurring-service", "CreateTask"));
        assert!(!callers.allows("recurring-service", "DeleteTask"));
        assert!(callers.allows("taskmesh-ops", "anything/at-all"));
        assert!(!callers.allows("x", "CreateTask"));
        assert!(callers.knows("x"));
        assert!(!callers.allows("analytics-service", "CreateTask"));
        assert!(TrustedCallers::parse("").unwrap().is_empty());
    }

    #[test]
    fn the_caller_is_named_once_or_not_at_all() {
        let mut metadata = MetadataMap::new();
        assert_eq!(caller_app_id(&metadata), None);
        metadata.insert(CALLER_APP_ID, "recurring-service".parse().unwrap());
        assert_eq!(caller_app_id(&metadata), Some("recurring-service"));
        metadata.append(CALLER_APP_ID, "analytics-service".parse().unwrap());
        assert_eq!(caller_app_id(&metadata), None);
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["a b=C", "=CreateTask", "app=Create Task", "a/b", "app=x;=y"] {
            assert!(TrustedCallers::parse(bad).is_err(), "{bad}");
        }
    }
}
