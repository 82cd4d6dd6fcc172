//! appmgrd's D-Bus errors: one name per CLI exit code (`org.appmgr.Error.NAME`, NAME
//! from `ErrorClass::name`), so a client maps a reply back to the same code.

use appmgr_core::Error as CoreError;
use appmgr_types::ErrorClass;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.appmgr.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Exit 1.
    Failed(String),
    /// Exit 2.
    InvalidArgs(String),
    /// Exit 3.
    Integrity(String),
    /// Exit 4.
    PolicyRefused(String),
    /// Exit 5.
    NotFound(String),
    /// Exit 6.
    Conflict(String),
    /// Exit 7.
    AccessDenied(String),
    /// Exit 8: an update failed its health window and was rolled back (`wait`).
    RolledBack(String),
    /// Exit 9: the install is queued until the inhibitors clear.
    Deferred(String),
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Error::of(e.class, e.message)
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Self {
        Error::ZBus(e.into())
    }
}

impl Error {
    /// The message, without the error name (for logs and records).
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(z) => z.to_string(),
            Error::Failed(m)
            | Error::InvalidArgs(m)
            | Error::Integrity(m)
            | Error::PolicyRefused(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::AccessDenied(m)
            | Error::RolledBack(m)
            | Error::Deferred(m) => m.clone(),
        }
    }

    pub fn of(class: ErrorClass, m: String) -> Error {
        match class {
            ErrorClass::Other => Error::Failed(m),
            ErrorClass::Usage => Error::InvalidArgs(m),
            ErrorClass::Integrity => Error::Integrity(m),
            ErrorClass::Policy => Error::PolicyRefused(m),
            ErrorClass::NotFound => Error::NotFound(m),
            ErrorClass::Conflict => Error::Conflict(m),
            ErrorClass::NotPermitted => Error::AccessDenied(m),
            ErrorClass::RolledBack => Error::RolledBack(m),
            ErrorClass::Deferred => Error::Deferred(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn every_class_has_its_own_name() {
        for c in ErrorClass::ALL {
            let e = Error::of(c, "x".into());
            assert_eq!(e.name().as_str(), c.dbus_error_name());
        }
    }
}
