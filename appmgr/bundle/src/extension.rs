//! The `[extension]` table of an extension bundle (`kind = "extension"`): a signed tree
//! that appears inside a runtime or an app at the directory it declares while its
//! conditions hold on the board. GPU drivers are the first: a runtime stays free of
//! Mesa, and the board profile's `gpu-driver` picks the driver extension that is mounted.
//!
//! ```toml
//! [extension]
//! extends = "org.appmgr.Hmi/x86_64/1"            # ID/ARCH/BRANCH of a runtime or app
//! mount-point = "/usr/lib/extensions/gl/llvmpipe" # below /usr: a runtime; /app: an app
//! library-path = ["lib/x86_64-linux-gnu"]         # relative to the mount point
//! [extension.conditions]
//! gpu-driver = ["llvmpipe", "softpipe"]           # holds when the board names one of them
//! [extension.env]
//! LIBGL_DRIVERS_PATH = "lib/x86_64-linux-gnu/dri" # relative to the mount point
//! ```
//!
//! The parent of the mount point must be a directory of the extended tree (its
//! "extension point", `/usr/lib/extensions/gl` in the HMI runtime); the launcher mounts a
//! small root-owned tmpfs there and the extension's tree read-only on a directory in it,
//! so several extensions can share one point.

use appmgr_types::RuntimeRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most path-list entries or variables one extension may declare.
const MAX_ENTRIES: usize = 16;
/// Longest mount point, relative path or variable value.
const MAX_PATH: usize = 256;

/// `[extension]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtensionDecl {
    /// The runtime (mount point below `/usr`) or app (below `/app`) it extends.
    pub extends: RuntimeRef,
    /// Where its tree appears in the sandbox: `/usr/A/B...` or `/app/A/B...`, at least two
    /// components below `/usr` or `/app`.
    pub mount_point: String,
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
    /// Directories (relative to the mount point) put on the app's `LD_LIBRARY_PATH`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub library_path: Vec<String>,
    /// Variables set in the app's environment, each a path relative to the mount point.
    /// Several active extensions setting one variable have their paths joined with `:`
    /// (in extension ID order): the variables extensions set are search paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// `[extension.conditions]`: all must hold for the extension to be mounted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Conditions {
    /// Holds when the board profile's `gpu-driver` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_driver: Vec<String>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.gpu_driver.is_empty()
    }
}

/// The value the board profile has for a condition (what the conditions are tested on).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoardFacts {
    pub gpu_driver: Option<String>,
}

impl ExtensionDecl {
    /// Why the extension's conditions do not hold on a board with `facts`, or `None`.
    pub fn unmet(&self, facts: &BoardFacts) -> Option<String> {
        let want = &self.conditions.gpu_driver;
        if want.is_empty() {
            return None;
        }
        match &facts.gpu_driver {
            Some(d) if want.contains(d) => None,
            Some(d) => Some(format!(
                "needs gpu-driver {}; the board profile names {d}",
                want.join(" or ")
            )),
            None => Some(format!(
                "needs gpu-driver {}; the board profile names none",
                want.join(" or ")
            )),
        }
    }

    /// The directory the mount point is in (the extended tree's extension point).
    pub fn parent(&self) -> &str {
        self.mount_point
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent)
    }

    /// Whether it extends an app (mount point below `/app`) rather than a runtime.
    pub fn extends_app(&self) -> bool {
        self.mount_point.starts_with("/app/")
    }

    /// Checks every field; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let mp = &self.mount_point;
        let rest = mp
            .strip_prefix("/usr/")
            .or_else(|| mp.strip_prefix("/app/"))
            .ok_or((
                "extension.mount-point",
                format!("{mp:?} is not below /usr or /app"),
            ))?;
        if mp.len() > MAX_PATH || !normal_relative(rest) {
            return Err((
                "extension.mount-point",
                format!("{mp:?} must be a normal path of letters, digits, `.`, `_` and `-`"),
            ));
        }
        if rest.split('/').count() < 2 {
            return Err((
                "extension.mount-point",
                format!(
                    "{mp:?} is directly below /usr or /app: an extension appears in a \
                     directory of the tree it extends (e.g. /usr/lib/extensions/gl/NAME)"
                ),
            ));
        }
        if self.library_path.len() > MAX_ENTRIES || self.env.len() > MAX_ENTRIES {
            return Err((
                "extension",
                format!("at most {MAX_ENTRIES} library-path entries and variables"),
            ));
        }
        for p in &self.library_path {
            if p.len() > MAX_PATH || !normal_relative(p) {
                return Err((
                    "extension.library-path",
                    format!("{p:?} must be a normal relative path"),
                ));
            }
        }
        for (name, value) in &self.env {
            if !valid_env_name(name) || name.starts_with("LD_") {
                return Err((
                    "extension.env",
                    format!(
                        "{name:?} is not a variable an extension may set (letters, digits and \
                         `_`; no LD_*: use library-path)"
                    ),
                ));
            }
            if value.len() > MAX_PATH || !normal_relative(value) {
                return Err((
                    "extension.env",
                    format!("{name}: {value:?} must be a normal path relative to the mount point"),
                ));
            }
        }
        if self.conditions.gpu_driver.len() > MAX_ENTRIES {
            return Err((
                "extension.conditions.gpu-driver",
                format!("at most {MAX_ENTRIES} drivers"),
            ));
        }
        for d in &self.conditions.gpu_driver {
            if !valid_driver_name(d) {
                return Err((
                    "extension.conditions.gpu-driver",
                    format!("{d:?} must be 1 to 32 lowercase letters, digits, `_` or `-`"),
                ));
            }
        }
        Ok(())
    }
}

/// A Mesa driver name as board profiles and extension conditions write it.
pub fn valid_driver_name(d: &str) -> bool {
    (1..=32).contains(&d.len())
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    n.len() <= 64
        && b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `a/b/c`: no empty, `.` or `..` component, no leading `/`, only safe characters.
fn normal_relative(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(mp: &str) -> ExtensionDecl {
        ExtensionDecl {
            extends: "org.appmgr.Hmi/x86_64/1".parse().unwrap(),
            mount_point: mp.into(),
            conditions: Conditions {
                gpu_driver: vec!["llvmpipe".into()],
            },
            library_path: vec!["lib/x86_64-linux-gnu".into()],
            env: [("LIBGL_DRIVERS_PATH".to_string(), "lib/dri".to_string())].into(),
        }
    }

    #[test]
    fn mount_points_and_paths_are_normal() {
        assert!(decl("/usr/lib/extensions/gl/llvmpipe").validate().is_ok());
        assert!(decl("/app/lib/plugins/x").validate().is_ok());
        for bad in [
            "/usr/gl",
            "/usr",
            "/etc/x/y",
            "usr/lib/x",
            "/usr/lib/../x",
            "/usr/lib//x",
            "/usr/lib/./x",
            "/usr/lib/x y",
            "/app/lib/x\n",
        ] {
            assert!(decl(bad).validate().is_err(), "accepted {bad:?}");
        }
        let mut d = decl("/usr/lib/extensions/gl/llvmpipe");
        d.library_path = vec!["../lib".into()];
        assert_eq!(d.validate().unwrap_err().0, "extension.library-path");
        let mut d = decl("/usr/lib/extensions/gl/llvmpipe");
        d.env = [("LD_PRELOAD".to_string(), "lib/x.so".to_string())].into();
        assert_eq!(d.validate().unwrap_err().0, "extension.env");
        let mut d = decl("/usr/lib/extensions/gl/llvmpipe");
        d.env = [("X".to_string(), "/etc".to_string())].into();
        assert_eq!(d.validate().unwrap_err().0, "extension.env");
        let mut d = decl("/usr/lib/extensions/gl/llvmpipe");
        d.conditions.gpu_driver = vec!["Panfrost".into()];
        assert_eq!(
            d.validate().unwrap_err().0,
            "extension.conditions.gpu-driver"
        );
    }

    #[test]
    fn conditions_are_tested_on_the_board() {
        let d = decl("/usr/lib/extensions/gl/llvmpipe");
        let on = |g: Option<&str>| {
            d.unmet(&BoardFacts {
                gpu_driver: g.map(str::to_string),
            })
        };
        assert_eq!(on(Some("llvmpipe")), None);
        assert!(on(Some("panfrost")).unwrap().contains("panfrost"));
        assert!(on(None).unwrap().contains("names none"));
        let mut any = d.clone();
        any.conditions = Conditions::default();
        assert_eq!(any.unmet(&BoardFacts::default()), None);
        assert_eq!(d.parent(), "/usr/lib/extensions/gl");
        assert!(!d.extends_app());
    }
}
