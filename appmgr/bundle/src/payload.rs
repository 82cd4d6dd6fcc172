//! The payload seen by an importer: a stream of validated entries.
//!
//! The reader enforces every archive rule before an entry reaches a [`PayloadSink`]:
//! paths are relative and normal, parents are directories seen before (created implicitly
//! when a build system's tar omits them), no path appears twice, hardlinks point to an
//! earlier regular file, only directories, regular files, symlinks and hardlinks exist,
//! and modes are canonical (0755 directories, 0755/0644 files: setuid, setgid, sticky and
//! group/other write bits never reach a sink). A sink may therefore write entries as they
//! come; it must still treat its output as staging until the import returns `Ok`, because
//! the payload digest is only known at the end.

use std::fmt;
use std::io::Read;

/// A validated relative path inside a payload tree: UTF-8, no control or bidi characters,
/// no empty, `.` or `..` components, no leading or trailing `/`, bounded length and depth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

/// Upper bounds on a path inside a payload.
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_DEPTH: usize = 64;

impl RelPath {
    /// Validates `s` as a payload path. `Err` carries the reason.
    pub fn new(s: &str) -> Result<RelPath, String> {
        if s.is_empty() {
            return Err("empty path".into());
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(format!("path longer than {MAX_PATH_BYTES} bytes"));
        }
        if s.starts_with('/') {
            return Err("absolute path".into());
        }
        if appmgr_types::has_unsafe_chars(s) {
            return Err("control or bidi character in path".into());
        }
        let mut depth = 0;
        for c in s.split('/') {
            match c {
                "" => return Err("empty path component (`//` or trailing `/`)".into()),
                "." | ".." => return Err(format!("`{c}` component")),
                _ if c.len() > MAX_NAME_BYTES => {
                    return Err(format!("component longer than {MAX_NAME_BYTES} bytes"))
                }
                _ => depth += 1,
            }
        }
        if depth > MAX_DEPTH {
            return Err(format!("deeper than {MAX_DEPTH} components"));
        }
        Ok(RelPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, n)| n)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Canonical modes: everything in a deployment is owned by root and not writable by
/// group or others; the only choice a bundle makes is whether a file is executable.
pub const DIR_MODE: u32 = 0o755;
pub const EXEC_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;

/// The error a sink returns; the reader wraps it with the entry's path.
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Receives a payload's entries in archive order. Parents always come before children.
pub trait PayloadSink {
    /// A directory (mode [`DIR_MODE`]).
    fn directory(&mut self, path: &RelPath) -> Result<(), SinkError>;
    /// A regular file of exactly `size` bytes, read from `content` (mode [`EXEC_MODE`] if
    /// `executable`, else [`FILE_MODE`]). The sink must read `content` to its end.
    fn file(
        &mut self,
        path: &RelPath,
        executable: bool,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), SinkError>;
    /// A symbolic link. `target` is non-empty, at most 4095 bytes, free of NUL and control
    /// characters; absolute targets are allowed (they resolve inside the sandbox), relative
    /// targets never climb above the payload root. No later entry has a symlink as parent.
    fn symlink(&mut self, path: &RelPath, target: &str) -> Result<(), SinkError>;
    /// A second name for the regular file at `target`, which was an earlier entry.
    fn hardlink(&mut self, path: &RelPath, target: &RelPath) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relpaths() {
        for ok in [
            "a",
            "a/b",
            "bin/hello",
            "lib/x86_64-linux-gnu/libc.so.6",
            "a b/é",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "a\0b",
            "a\nb",
            "x\u{202e}",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(RelPath::new(&deep).is_err());
        assert!(RelPath::new(&"n".repeat(256)).is_err());
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert!(RelPath::new("c").unwrap().parent().is_none());
    }
}
