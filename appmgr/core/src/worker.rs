//! The protocol between appmgrd and its `appmgr-ops` worker.
//!
//! appmgrd links no libostree: store mutations run in an `appmgr-ops` child process. The
//! two talk over a `AF_UNIX` socketpair handed to the child as a file descriptor
//! (`appmgr-ops --worker-fd N`), in JSON lines of the types below: one [`Request`] from
//! the daemon, then [`Message`]s from the worker: any number of `progress`, and exactly
//! one final `done` or `failed`. The bundle of an install is the child's stdin. Nothing
//! is read from the environment and no human output is parsed; both sides refuse a
//! message of another protocol [`VERSION`].

use crate::records::Change;
use crate::{Ctx, Error, Output};
use appmgr_types::ErrorClass;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The protocol version; a request or reply of another version is refused.
pub const VERSION: u32 = 5;

/// What the daemon asks the worker to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Install or update from the bundle on the worker's stdin, named `name` in messages;
    /// `release`: a deferred install's TUF release, recorded once it is installed.
    Install {
        name: String,
        allow_downgrade: bool,
        #[serde(default)]
        release: Option<crate::remote_tuf::Release>,
    },
    /// Verify a bundle into the file `dest` (created, never replaced) for an install that
    /// inhibitors defer: from `source` (as `InstallRemote`), or from stdin (named `name`).
    /// The reply's JSON: `id`, `kind`, `version`, `release`.
    Spool {
        source: Option<String>,
        name: String,
        dest: PathBuf,
    },
    /// Install or update from a remote source (`NAME:ID[@VERSION]` of a configured remote,
    /// or an http:// URL), downloaded by the worker as a stream.
    InstallRemote {
        source: String,
        allow_downgrade: bool,
    },
    Remove {
        id: String,
    },
    Rollback {
        id: String,
    },
    /// The findings, clean or not (`output.json["clean"]`).
    Fsck,
    /// What `update [IDS…]` would install ([`crate::remotes::plan_output`]): resolved in
    /// the worker, which holds the TUF client, so appmgrd does not link it.
    UpdatePlan {
        ids: Vec<String>,
    },
    /// What remote `name` offers (`remote ls`): read in the worker, which verifies a TUF
    /// remote's metadata (and keeps its trusted state) with the TUF client.
    RemoteLs {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    pub op: Op,
}

impl Request {
    pub fn new(ctx: &Ctx, op: Op) -> Request {
        Request {
            version: VERSION,
            state_dir: ctx.state_dir.clone(),
            config_dir: ctx.config_dir.clone(),
            op,
        }
    }

    pub fn ctx(&self) -> Ctx {
        Ctx {
            state_dir: self.state_dir.clone(),
            config_dir: self.config_dir.clone(),
        }
    }
}

/// What the worker reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Message {
    /// Install progress (at most one per percent and phase).
    Progress {
        version: u32,
        phase: String,
        bytes: u64,
        total: u64,
    },
    /// The operation succeeded; `change` is what an install, remove or rollback did.
    Done {
        version: u32,
        output: Output,
        change: Option<Change>,
    },
    /// The operation failed: the error class's stable name (`ErrorClass::name`), its
    /// line, and what was found before the failure.
    Failed {
        version: u32,
        class: String,
        message: String,
        output: Option<Output>,
    },
}

impl Message {
    pub fn version(&self) -> u32 {
        match self {
            Message::Progress { version, .. }
            | Message::Done { version, .. }
            | Message::Failed { version, .. } => *version,
        }
    }

    /// The final message of an operation's result.
    pub fn of_result(r: Result<(Output, Option<Change>), Error>) -> Message {
        match r {
            Ok((output, change)) => Message::Done {
                version: VERSION,
                output,
                change,
            },
            Err(e) => Message::Failed {
                version: VERSION,
                class: e.class.name().to_string(),
                message: e.message,
                output: e.output.map(|o| *o),
            },
        }
    }

    /// A final message as the result it reports (`None` for progress).
    pub fn into_result(self) -> Option<Result<(Output, Option<Change>), Error>> {
        match self {
            Message::Progress { .. } => None,
            Message::Done { output, change, .. } => Some(Ok((output, change))),
            Message::Failed {
                class,
                message,
                output,
                ..
            } => {
                let class = ErrorClass::ALL
                    .into_iter()
                    .find(|c| c.name() == class)
                    .unwrap_or(ErrorClass::Other);
                let e = Error::new(class, message);
                Some(Err(match output {
                    Some(o) => e.with_output(o),
                    None => e,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_carry_the_class() {
        let ctx = Ctx {
            state_dir: "/s".into(),
            config_dir: "/c".into(),
        };
        let r = Request::new(
            &ctx,
            Op::Install {
                name: "b".into(),
                allow_downgrade: true,
                release: Some(crate::remote_tuf::Release {
                    remote: "fleet".into(),
                    id: "org.example.A".into(),
                    release: 7,
                    allows_downgrade: false,
                }),
            },
        );
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(line.contains("\"op\":\"install\""), "{line}");
        for class in ErrorClass::ALL {
            let m =
                Message::of_result(Err(Error::new(class, "x")
                    .with_output(Output::new("t", serde_json::json!({"k": 1})))));
            let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            let e = back.into_result().unwrap().unwrap_err();
            assert_eq!((e.class, e.message.as_str()), (class, "x"));
            assert_eq!(e.output.unwrap().json["k"], 1);
        }
        // Unknown fields and unknown operations are refused, not ignored.
        assert!(serde_json::from_str::<Request>(
            r#"{"version":1,"state-dir":"/s","config-dir":"/c","op":{"op":"format"}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Message>(
            r#"{"type":"done","version":1,"output":{"text":"","json":null},"extra":1}"#
        )
        .is_err());
    }
}
