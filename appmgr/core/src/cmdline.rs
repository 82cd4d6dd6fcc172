//! The command lines of appmgr's daemons (`appmgrd`, `appmgr-portald`): the options both
//! take, and one way to report a usage error, help and version. Each daemon matches its own
//! options and hands the rest to [`Options::common`].

use std::path::PathBuf;

/// What both daemons serve: the state and config directories (`--state-dir`,
/// `--config-dir`, defaulting to `$APPMGR_STATE_DIR` / `$APPMGR_CONFIG_DIR`, else
/// `/var/lib/appmgr` / `/etc/appmgr`) and the bus (`--bus-address`, else the system bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    pub bus_address: Option<String>,
}

impl Common {
    /// The defaults, from the environment.
    pub fn from_env() -> Common {
        let dir = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| default.into())
        };
        Common {
            state_dir: dir("APPMGR_STATE_DIR", "/var/lib/appmgr"),
            config_dir: dir("APPMGR_CONFIG_DIR", "/etc/appmgr"),
            bus_address: None,
        }
    }
}

/// A daemon's arguments, read one option at a time. An `Err` is the exit code to end with
/// (0 after `--help` or `--version`, 2 after a usage error, which has been printed).
pub struct Options {
    prog: &'static str,
    usage: &'static str,
    rest: std::vec::IntoIter<String>,
}

impl Options {
    /// `argv` with the program's name first (it is skipped).
    pub fn new(prog: &'static str, usage: &'static str, argv: Vec<String>) -> Options {
        let mut rest = argv.into_iter();
        rest.next();
        Options { prog, usage, rest }
    }

    /// The next option.
    pub fn next_option(&mut self) -> Option<String> {
        self.rest.next()
    }

    /// The value that follows `option`.
    pub fn value(&mut self, option: &str) -> Result<String, i32> {
        self.rest.next().ok_or_else(|| {
            eprintln!("{}: {option} needs a value\n{}", self.prog, self.usage);
            2
        })
    }

    /// The value that follows `option`, `None` for the word `none`.
    pub fn value_or_none(&mut self, option: &str) -> Result<Option<String>, i32> {
        self.value(option).map(|v| (v != "none").then_some(v))
    }

    /// An option the daemon does not take itself: one of [`Common`]'s, `-h`/`--help` and
    /// `--version` (which end the program with 0), else a usage error.
    pub fn common(&mut self, option: &str, common: &mut Common) -> Result<(), i32> {
        match option {
            "--state-dir" => common.state_dir = self.value(option)?.into(),
            "--config-dir" => common.config_dir = self.value(option)?.into(),
            "--bus-address" => common.bus_address = Some(self.value(option)?),
            "-h" | "--help" => {
                print!("{}", self.usage);
                return Err(0);
            }
            "--version" => {
                println!("{} {}", self.prog, env!("CARGO_PKG_VERSION"));
                return Err(0);
            }
            other => {
                eprintln!("{}: unknown argument {other:?}\n{}", self.prog, self.usage);
                return Err(2);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<(Common, Vec<String>), i32> {
        let mut o = Options::new("d", "usage\n", argv.iter().map(|s| s.to_string()).collect());
        let mut c = Common {
            state_dir: "/s".into(),
            config_dir: "/c".into(),
            bus_address: None,
        };
        let mut own = Vec::new();
        while let Some(a) = o.next_option() {
            match a.as_str() {
                "--own" => own.push(o.value_or_none(&a)?.unwrap_or_default()),
                _ => o.common(&a, &mut c)?,
            }
        }
        Ok((c, own))
    }

    #[test]
    fn common_and_own_options_are_read_and_bad_ones_end_with_their_code() {
        let (c, own) = parse(&[
            "d",
            "--state-dir",
            "/x",
            "--own",
            "none",
            "--bus-address",
            "unix:path=/b",
            "--own",
            "v",
            "--config-dir",
            "/y",
        ])
        .unwrap();
        assert_eq!(
            c,
            Common {
                state_dir: "/x".into(),
                config_dir: "/y".into(),
                bus_address: Some("unix:path=/b".into()),
            }
        );
        assert_eq!(own, ["", "v"]);
        assert_eq!(parse(&["d"]).unwrap().0.state_dir, PathBuf::from("/s"));
        assert_eq!(parse(&["d", "--help"]).unwrap_err(), 0);
        assert_eq!(parse(&["d", "--version"]).unwrap_err(), 0);
        assert_eq!(parse(&["d", "--state-dir"]).unwrap_err(), 2);
        assert_eq!(parse(&["d", "--nope"]).unwrap_err(), 2);
        assert_eq!(parse(&["d", "state"]).unwrap_err(), 2);
    }
}
