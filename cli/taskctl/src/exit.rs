//! Exit codes: one per class of failure, so that scripts can tell "fix your command" from
//! "log in again" from "try later" without reading the message.

use std::fmt;
use std::process::ExitCode;

/// The class of a failure; its discriminant is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Anything else: an internal server error, a local I/O error.
    Other = 1,
    /// The command line is wrong (clap's own code), or the server rejected a value
    /// (INVALID_ARGUMENT, OUT_OF_RANGE), or a short id is ambiguous.
    Usage = 2,
    /// No token, or the server refused it (UNAUTHENTICATED, PERMISSION_DENIED).
    Auth = 3,
    /// No such task or list (NOT_FOUND), or a short id that matches none.
    NotFound = 4,
    /// Someone else changed it first (ABORTED, ALREADY_EXISTS, FAILED_PRECONDITION).
    Conflict = 5,
    /// Cannot reach the service, the connection broke, or it asks to come back later
    /// (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, CANCELLED).
    Unavailable = 6,
    /// `watch`: the resume token is older than the changes the service keeps
    /// (OUT_OF_RANGE); list the tasks again and watch without one.
    Expired = 7,
}

/// The table `taskctl --help` ends with (and the README repeats).
pub const HELP: &str = "\
Exit codes:
  0  success
  1  other error (internal server error, local I/O)
  2  usage: bad command line, a value the server rejects, an ambiguous short id
  3  auth: no token, or the token is refused (UNAUTHENTICATED, PERMISSION_DENIED)
  4  not found: no such task or list, or no id starts or ends with the short id
  5  conflict: changed meanwhile (ABORTED, ALREADY_EXISTS, FAILED_PRECONDITION)
  6  unavailable: cannot connect, cut off, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
  7  watch: the resume token is too old (OUT_OF_RANGE): list again, watch without it";

impl From<Class> for ExitCode {
    fn from(class: Class) -> Self {
        Self::from(class as u8)
    }
}

/// A failure found on this side of the wire, with its class.
#[derive(Debug)]
pub struct Failure {
    pub class: Class,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn fail(class: Class, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        class,
        message: message.into(),
    })
}

pub fn of_code(code: tonic::Code) -> Class {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => Class::Usage,
        C::Unauthenticated | C::PermissionDenied => Class::Auth,
        C::NotFound => Class::NotFound,
        C::Aborted | C::AlreadyExists | C::FailedPrecondition => Class::Conflict,
        C::Unavailable | C::DeadlineExceeded | C::ResourceExhausted | C::Cancelled => {
            Class::Unavailable
        }
        C::Ok | C::Unknown | C::Internal | C::Unimplemented | C::DataLoss => Class::Other,
    }
}

/// The class of a status, whether the server sent it or the connection broke.
pub fn of_status(status: &tonic::Status) -> Class {
    // tonic turns a connection that broke mid-call (h2 or transport errors) into UNKNOWN
    // or INTERNAL made on this side, with the cause attached; a status from the server has
    // none.
    let local = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal if local => Class::Unavailable,
        code => of_code(code),
    }
}

/// The class of an error, from the first cause in its chain that has one.
pub fn classify(err: &anyhow::Error) -> Class {
    for cause in err.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.class;
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return of_status(status);
        }
        if cause.downcast_ref::<tonic::transport::Error>().is_some() {
            return Class::Unavailable;
        }
    }
    Class::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_code() {
        let classes = [
            Class::Other,
            Class::Usage,
            Class::Auth,
            Class::NotFound,
            Class::Conflict,
            Class::Unavailable,
            Class::Expired,
        ];
        let codes: std::collections::BTreeSet<u8> = classes.iter().map(|c| *c as u8).collect();
        assert_eq!(codes.len(), classes.len());
        for class in classes {
            assert!(HELP.contains(&format!("  {}  ", class as u8)), "{class:?}");
        }
    }

    #[test]
    fn the_class_survives_context() {
        let err = anyhow::Error::new(tonic::Status::not_found("gone")).context("show");
        assert_eq!(classify(&err), Class::NotFound);
        let err = fail(Class::Auth, "no token").context("connecting");
        assert_eq!(classify(&err), Class::Auth);
        assert_eq!(classify(&anyhow::anyhow!("disk full")), Class::Other);
        let from_server = anyhow::Error::new(tonic::Status::internal("bug"));
        assert_eq!(classify(&from_server), Class::Other);
    }
}
