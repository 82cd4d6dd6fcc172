//! appmgr's static policy: policy files + an app's request + board facts → the
//! effective grant and limits, as plain data.
//!
//! There is no user to ask: an OEM writes `CONFIG/policies.d/*.toml` (format and
//! precedence in `docs/policy.md`). This crate is the only one that knows that format.
//! [`PolicySet::load_dir`] parses every file once, strictly (unknown keys, bad values,
//! duplicate keys, invalid UTF-8 and control characters are errors naming file, line and
//! key, and nothing is started on a policy that did not load). [`PolicySet::evaluate`]
//! takes a [`Request`] (the manifest's `[permissions]` and `[resources]`, the same
//! `appmgr_types` used in policy `grant`s) and this crate's own [`BoardFacts`] and
//! returns an [`EffectiveGrant`]:
//!
//! - permissions = requested ∩ granted by applying rules − denied by applying rules
//!   (deny by default; explicit denials always win);
//! - limits: for each key the most specific applying rule decides (exact ID beats
//!   patterns, longer literal prefix beats shorter, ties go to the later rule), and an
//!   app's own request can only lower a ceiling;
//! - excess: what the app asked for beyond that; [`EffectiveGrant::check`] refuses it
//!   (exit 4) unless the deciding rule says `on-excess = "drop"`.
//!
//! The same `EffectiveGrant` is serialized for `--json`, rendered by
//! [`EffectiveGrant::render_text`], and consumed by the launch plan (`permissions`) and
//! the cgroup crate ([`EffectiveGrant::cgroup_limits`]), so what is shown is what is
//! enforced. Evaluation is pure and allocation-light: no regexes, globs are matched
//! directly, and rules are parsed once per load.
//!
//! [`render_bus_policy`] turns the `dbus-talk`/`dbus-own` grants of the installed apps
//! into a per-uid dbus-daemon policy drop-in (see the `bus` module).
//!
//! Limits: conditions (`when`) only see [`BoardFacts`]; dynamic grants (the portal
//! permission store) are not policy files and live elsewhere.

mod board;
pub mod bus;
mod error;
mod eval;
mod limits;
mod parse;
mod render;
mod service;
pub mod userdb;

pub use board::{BoardFacts, Condition, NodePath};
pub use bus::{render_bus_policy, BusPolicyEntry};
pub use error::PolicyError;
pub use eval::{
    EffectiveGrant, ExcessItem, ExcessReason, Granted, PolicySet, RefusedItem, Request, Source,
};
pub use limits::{CpuWeight, CpusetRef, Limits, PidsMax, PolicyResources, StorageLimit, SwapLimit};
pub use parse::{OnExcess, MAX_FILE_SIZE};
pub use render::ShownGrant;
pub use service::{RestartPolicy, ServicePolicy};
