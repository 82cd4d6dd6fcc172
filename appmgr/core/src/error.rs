use appmgr_types::ErrorClass;

/// The one error type of every use case: a class (which fixes the CLI's exit code and
/// appmgrd's D-Bus error name, `ErrorClass`) and one line. Every library error is mapped
/// to it once, here. `output` is what a use case found before it failed (fsck's findings,
/// the apps `reload` could not apply): front ends show it before the error.
#[derive(Debug)]
pub struct Error {
    pub class: ErrorClass,
    pub message: String,
    pub output: Option<Box<crate::Output>>,
}

impl Error {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Error {
            class,
            message: one_line(&message.into()),
            output: None,
        }
    }

    /// The same error, carrying what was found before it.
    pub fn with_output(mut self, out: crate::Output) -> Self {
        self.output = Some(Box::new(out));
        self
    }
}

impl std::error::Error for Error {}

/// Errors are one line: nested causes are joined with `: `.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type CoreResult<T> = Result<T, Error>;

/// An error and its causes as one line, each cause once.
pub fn chain(e: &dyn std::error::Error) -> String {
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

impl From<appmgr_bundle::BundleError> for Error {
    fn from(e: appmgr_bundle::BundleError) -> Self {
        Error::new(e.class(), chain(&e))
    }
}

impl From<appmgr_bundle::TrustError> for Error {
    fn from(e: appmgr_bundle::TrustError) -> Self {
        Error::new(e.class(), chain(&e))
    }
}

impl From<appmgr_bundle::keys::KeyError> for Error {
    fn from(e: appmgr_bundle::keys::KeyError) -> Self {
        appmgr_bundle::TrustError::from(e).into()
    }
}

impl From<appmgr_state::ViewError> for Error {
    fn from(e: appmgr_state::ViewError) -> Self {
        Error::new(e.class(), chain(&e))
    }
}

impl From<appmgr_policy::PolicyError> for Error {
    fn from(e: appmgr_policy::PolicyError) -> Self {
        Error::new(e.class(), chain(&e))
    }
}

impl From<appmgr_board::BoardError> for Error {
    fn from(e: appmgr_board::BoardError) -> Self {
        Error::new(ErrorClass::Other, chain(&e))
    }
}

impl From<appmgr_types::InvalidValue> for Error {
    fn from(e: appmgr_types::InvalidValue) -> Self {
        Error::new(ErrorClass::Usage, e.to_string())
    }
}

impl From<appmgr_remote::RemoteError> for Error {
    fn from(e: appmgr_remote::RemoteError) -> Self {
        Error::new(e.class(), chain(&e))
    }
}

/// The download failure behind a bundle's read error, if it was a download: its class
/// (a refused answer is an integrity failure, exit 3) wins over the read error's.
pub fn remote_failure<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a appmgr_remote::RemoteError> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<appmgr_remote::RemoteError>() {
            return Some(r);
        }
        if let Some(r) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<appmgr_remote::RemoteError>())
        {
            return Some(r);
        }
        cur = c.source();
    }
    None
}

/// A bundle's read error, classed by the download failure behind it if there is one.
pub fn bundle_read_error(e: appmgr_bundle::BundleError) -> Error {
    match remote_failure(&e) {
        Some(r) => Error::new(r.class(), chain(&e)),
        None => Error::from(e),
    }
}
