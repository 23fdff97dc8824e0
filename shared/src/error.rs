//! The one error type services return from their handlers, and its single mapping to
//! `tonic::Status`. Internal causes are logged with their whole chain and never sent to
//! the client.

use std::error::Error as StdError;
use std::fmt::Write as _;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One invalid field of a request, sent as a `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects every problem of a request, so that the client learns all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the error of `result` under `field` and returns its value, if any.
    pub fn take<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit was reached; `retry_after` is sent as `google.rpc.RetryInfo` when the
    /// caller may simply try again later (a rate limit), absent when it may not (a quota).
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("a dependency is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(err: impl Into<BoxError>) -> Self {
        Self::Internal(err.into())
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::Aborted(_) => Code::Aborted,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    let mut out = String::new();
    for (i, v) in violations.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(out, "{sep}{}: {}", v.field, v.description);
    }
    out
}

/// The cause chain of an error on one line, for logs.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        match err {
            ApiError::InvalidArgument(violations) => {
                let message = describe(&violations);
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(code, message, details)
            }
            ApiError::ResourceExhausted {
                message,
                retry_after: Some(retry_after),
            } => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(code, message, details)
            }
            ApiError::Unavailable(ref source) => {
                tracing::warn!(error = %chain(source.as_ref()), "dependency unavailable");
                Status::new(code, err.to_string())
            }
            ApiError::Internal(ref source) => {
                tracing::error!(error = %chain(source.as_ref()), "internal error");
                Status::new(code, err.to_string())
            }
            other => Status::new(code, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations() {
        let mut v = Violations::new();
        v.add("title", "must not be empty");
        v.add("tags[3]", "longer than 50 characters");
        let status = Status::from(v.into_result().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["title", "tags[3]"]);
        assert!(status.message().contains("title: must not be empty"));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(std::io::Error::other("relation \"tasks\" does not exist"));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
