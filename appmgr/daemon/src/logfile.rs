//! Bounded log files for service output where no journald runs.
//!
//! A service's stdout and stderr are the write end of one pipe; a thread of appmgrd reads
//! it and appends to `STATE/daemon/logs/ID.log`. When the next write would take the file
//! past the cap, `ID.log` is renamed to `ID.log.1` (replacing the older one) and a new
//! `ID.log` is started, so one service never holds more than twice the cap on the state
//! file system and the newest output is always kept. The cut is made after the last
//! complete line that fits, so lines are not split across the two files unless a single
//! line is longer than the cap.
//!
//! The pipe gives back-pressure: a service writing faster than the disk blocks in
//! `write`, it never makes appmgrd buffer. The thread ends when every copy of the write
//! end is closed (the service and all its children are gone).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default cap of one log file (`service-log-max` in appmgr.toml).
pub const DEFAULT_MAX: u64 = 1 << 20;

/// An append-only log file of at most `max` bytes, with one rotated predecessor.
pub struct RotatingLog {
    path: PathBuf,
    old: PathBuf,
    max: u64,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl RotatingLog {
    /// Opens (appends to) `path`; a file already over the cap is rotated first.
    pub fn open(path: &Path, max: u64) -> io::Result<RotatingLog> {
        let file = open_append(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        let mut log = RotatingLog {
            path: path.to_path_buf(),
            old: PathBuf::from(old),
            max: max.max(1),
            file,
            size: meta.len(),
        };
        if log.size >= log.max {
            log.rotate()?;
        }
        Ok(log)
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, &self.old)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Appends `data`, rotating as often as needed to stay within the cap.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.max.saturating_sub(self.size) as usize;
            let take = if data.len() <= room {
                data.len()
            } else {
                // Cut after the last newline that fits; with none, start a new file for
                // the line (or split it, if it alone is longer than the cap).
                match data[..room].iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size > 0 => 0,
                    None => room,
                }
            };
            if take == 0 {
                self.rotate()?;
                continue;
            }
            self.file.write_all(&data[..take])?;
            self.size += take as u64;
            data = &data[take..];
            if !data.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }
}

/// Creates the pipe for a service's stdout and stderr and the thread that copies it into
/// `logs_dir/ID.log` under the cap. Returns the two write ends (for stdout and stderr).
pub fn spawn(logs_dir: &Path, id: &str, max: u64) -> io::Result<(OwnedFd, OwnedFd)> {
    std::fs::create_dir_all(logs_dir)?;
    let path = logs_dir.join(format!("{id}.log"));
    let mut log = RotatingLog::open(&path, max)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    let w2 = w.try_clone()?;
    let id = id.to_string();
    std::thread::Builder::new()
        .name(format!("log {id}"))
        .spawn(move || {
            let mut r = File::from(r);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = log.write(&buf[..n]) {
                            // Keep draining (the service must not block on a full pipe),
                            // but say once that its output is being lost.
                            crate::journal::log(
                                crate::journal::ERR,
                                None,
                                Some(&id),
                                &format!("{id}: writing its log: {e}; output dropped"),
                            );
                            let _ = std::io::copy(&mut r, &mut std::io::sink());
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })?;
    Ok((w, w2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut log = RotatingLog::open(&p, 100).unwrap();
        for i in 0..1000 {
            log.write(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        let (cur, old) = (read(&p), read(&d.path().join("a.log.1")));
        assert!(cur.len() <= 100 && old.len() <= 100, "{cur:?} {old:?}");
        assert!(cur.ends_with("line 0999\n"), "{cur:?}");
        // Whole lines only, and the old file continues right into the current one.
        assert!(cur.lines().chain(old.lines()).all(|l| l.len() == 9));
        let first_cur: u32 = cur[5..9].parse().unwrap();
        let last_old: u32 = old.lines().last().unwrap()[5..].parse().unwrap();
        assert_eq!(last_old + 1, first_cur);
    }

    #[test]
    fn long_lines_and_big_writes_stay_within_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.log");
        std::fs::write(&p, vec![b'x'; 500]).unwrap();
        // A file over the cap from before is rotated at open.
        let mut log = RotatingLog::open(&p, 64).unwrap();
        assert_eq!(read(&d.path().join("b.log.1")).len(), 500);
        log.write(&[b'y'; 1000]).unwrap();
        log.write(b"end\n").unwrap();
        assert!(read(&p).len() <= 64);
        assert!(read(&d.path().join("b.log.1")).len() <= 64);
        assert!(read(&p).ends_with("end\n"));
    }
}
