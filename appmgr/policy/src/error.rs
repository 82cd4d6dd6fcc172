use crate::eval::ExcessItem;
use appmgr_types::ErrorClass;
use std::io;
use std::path::PathBuf;

/// Why policies could not be loaded or an app is refused. Every parse error names the
/// file, line and (where there is one) key; the app is then not installed or started.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy {path:?}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("policy file name {name}: {reason}")]
    FileName { name: String, reason: &'static str },
    #[error("{file}:{line}: {}invalid utf-8", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Utf8 {
        file: String,
        line: usize,
        /// The key whose value holds the bad bytes, when it can be told.
        key: Option<String>,
    },
    #[error("{file}:{line}: {}control character {char} is not allowed", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    ControlChar {
        file: String,
        line: usize,
        key: Option<String>,
        char: String,
    },
    #[error("{file}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Parse {
        file: String,
        line: usize,
        column: usize,
        /// The key the error is about, when it can be told.
        key: Option<String>,
        message: String,
    },
    #[error("{file}:{line}: rule {rule}: {message}")]
    Rule {
        file: String,
        line: usize,
        rule: usize,
        message: String,
    },
    #[error("{file}:{line}: rule {rule} pins {app} to core set {name:?}, which this board does not define")]
    UnknownCoreSet {
        file: String,
        line: usize,
        rule: usize,
        app: String,
        name: String,
    },
    #[error("{app} requests {key}={value}: {reason}")]
    InvalidRequest {
        app: String,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The app asks for more than policy grants and the deciding rule says
    /// `on-excess = "refuse"` (the default).
    #[error("{app} requests {summary} beyond what policy grants")]
    Excess {
        app: String,
        /// e.g. `devices=[camera] and network=true`.
        summary: String,
        items: Vec<ExcessItem>,
    },
}

impl PolicyError {
    /// All policy failures are "refused by policy" (exit 4), except an unreadable
    /// policy directory, which is an ordinary failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            PolicyError::Read { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                ErrorClass::NotPermitted
            }
            PolicyError::Read { .. } => ErrorClass::Other,
            _ => ErrorClass::Policy,
        }
    }
}
