/// The class of a failure, which fixes the process exit code of `appmgr` and the D-Bus
/// error name of `appmgrd`. The numbers are a public contract (design.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Anything not covered below (I/O failure, internal error).
    Other,
    /// Bad command-line usage or malformed local input the operator gave.
    Usage,
    /// Signature, integrity or unsafe-content failure.
    Integrity,
    /// Refused by policy.
    Policy,
    /// The named object does not exist.
    NotFound,
    /// Conflict: downgrade, still in use, already running, already exists.
    Conflict,
    /// The caller lacks the privilege.
    NotPermitted,
    /// The update was installed but failed its health window and was rolled back
    /// (`install --wait`, `update --wait`).
    RolledBack,
    /// appmgrd queued the install: inhibitors are in force; it runs when they clear.
    Deferred,
}

impl ErrorClass {
    /// The process exit code for this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Other => 1,
            ErrorClass::Usage => 2,
            ErrorClass::Integrity => 3,
            ErrorClass::Policy => 4,
            ErrorClass::NotFound => 5,
            ErrorClass::Conflict => 6,
            ErrorClass::NotPermitted => 7,
            ErrorClass::RolledBack => 8,
            ErrorClass::Deferred => 9,
        }
    }

    /// A short stable name, used in `--json` error objects and D-Bus error names.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Other => "Failed",
            ErrorClass::Usage => "InvalidArgs",
            ErrorClass::Integrity => "Integrity",
            ErrorClass::Policy => "PolicyRefused",
            ErrorClass::NotFound => "NotFound",
            ErrorClass::Conflict => "Conflict",
            ErrorClass::NotPermitted => "AccessDenied",
            ErrorClass::RolledBack => "RolledBack",
            ErrorClass::Deferred => "Deferred",
        }
    }
}

/// The D-Bus names of appmgrd (a public contract, like the exit codes).
pub mod dbus {
    /// Well-known bus name appmgrd owns on the system bus.
    pub const BUS_NAME: &str = "org.appmgr.Manager1";
    /// Object path of the manager object.
    pub const OBJECT_PATH: &str = "/org/appmgr/Manager1";
    /// Interface of the manager object.
    pub const INTERFACE: &str = "org.appmgr.Manager1";
    /// Prefix of appmgrd's error names: `org.appmgr.Error.NotFound`, ...
    pub const ERROR_PREFIX: &str = "org.appmgr.Error.";
}

impl ErrorClass {
    /// Every class, in exit-code order.
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Other,
        ErrorClass::Usage,
        ErrorClass::Integrity,
        ErrorClass::Policy,
        ErrorClass::NotFound,
        ErrorClass::Conflict,
        ErrorClass::NotPermitted,
        ErrorClass::RolledBack,
        ErrorClass::Deferred,
    ];

    /// The D-Bus error name appmgrd replies with for this class: one name per exit code.
    pub fn dbus_error_name(self) -> String {
        format!("{}{}", dbus::ERROR_PREFIX, self.name())
    }

    /// The class of a D-Bus error name. appmgrd's own names map back one to one; the bus's
    /// `org.freedesktop.DBus.Error.AccessDenied` (a bus policy refusal) is `NotPermitted`;
    /// `org.freedesktop.DBus.Error.InvalidArgs` is `Usage`; anything else is `Other`.
    pub fn from_dbus_error_name(name: &str) -> ErrorClass {
        if let Some(short) = name.strip_prefix(dbus::ERROR_PREFIX) {
            if let Some(c) = ErrorClass::ALL.iter().find(|c| c.name() == short) {
                return *c;
            }
        }
        match name {
            "org.freedesktop.DBus.Error.AccessDenied" => ErrorClass::NotPermitted,
            "org.freedesktop.DBus.Error.InvalidArgs" => ErrorClass::Usage,
            _ => ErrorClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbus_names_map_one_to_one_to_exit_codes() {
        let mut names = std::collections::BTreeSet::new();
        for c in ErrorClass::ALL {
            let n = c.dbus_error_name();
            assert!(names.insert(n.clone()), "duplicate {n}");
            assert_eq!(ErrorClass::from_dbus_error_name(&n), c);
            assert_eq!(ErrorClass::ALL[(c.exit_code() - 1) as usize], c);
        }
        assert_eq!(
            ErrorClass::from_dbus_error_name("org.freedesktop.DBus.Error.AccessDenied"),
            ErrorClass::NotPermitted
        );
        assert_eq!(
            ErrorClass::from_dbus_error_name("org.appmgr.Error.Bogus"),
            ErrorClass::Other
        );
    }
}
