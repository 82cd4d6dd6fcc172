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
        }
    }
}
