use appmgr_types::ErrorClass;

/// An error as the CLI reports it: a class (which fixes the exit code) and one line.
#[derive(Debug)]
pub struct CliError {
    pub class: ErrorClass,
    pub message: String,
}

impl CliError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        CliError {
            class,
            message: one_line(&message.into()),
        }
    }
}

/// Errors are one line: nested causes are joined with `: `.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type CliResult<T> = Result<T, CliError>;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl From<appmgr_bundle::BundleError> for CliError {
    fn from(e: appmgr_bundle::BundleError) -> Self {
        if let Some(inner) = e.sink_error() {
            if let Some(se) = inner.downcast_ref::<appmgr_store::StoreError>() {
                return CliError::new(se.class(), chain(&e));
            }
        }
        CliError::new(e.class(), chain(&e))
    }
}

impl From<appmgr_bundle::TrustError> for CliError {
    fn from(e: appmgr_bundle::TrustError) -> Self {
        CliError::new(e.class(), chain(&e))
    }
}

impl From<appmgr_bundle::keys::KeyError> for CliError {
    fn from(e: appmgr_bundle::keys::KeyError) -> Self {
        appmgr_bundle::TrustError::from(e).into()
    }
}

impl From<appmgr_store::StoreError> for CliError {
    fn from(e: appmgr_store::StoreError) -> Self {
        // An import that failed because the bundle was bad is the bundle's failure (3).
        if let appmgr_store::StoreError::Import { source, .. } = &e {
            if let Some(be) = source.downcast_ref::<appmgr_bundle::BundleError>() {
                return CliError::new(be.class(), chain(be));
            }
        }
        CliError::new(e.class(), chain(&e))
    }
}

impl From<appmgr_store::ViewError> for CliError {
    fn from(e: appmgr_store::ViewError) -> Self {
        CliError::new(e.class(), chain(&e))
    }
}

impl From<appmgr_policy::PolicyError> for CliError {
    fn from(e: appmgr_policy::PolicyError) -> Self {
        CliError::new(e.class(), chain(&e))
    }
}

impl From<appmgr_board::BoardError> for CliError {
    fn from(e: appmgr_board::BoardError) -> Self {
        CliError::new(ErrorClass::Other, chain(&e))
    }
}

impl From<appmgr_types::InvalidValue> for CliError {
    fn from(e: appmgr_types::InvalidValue) -> Self {
        CliError::new(ErrorClass::Usage, e.to_string())
    }
}
