use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// appmgr: install, update, roll back, remove and run signed app bundles under static
/// policy.
#[derive(Debug, Parser)]
#[command(name = "appmgr", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// State directory: store, deployments, app data.
    #[arg(
        long,
        global = true,
        env = "APPMGR_STATE_DIR",
        default_value = "/var/lib/appmgr"
    )]
    pub state_dir: PathBuf,
    /// Configuration directory: trusted keys, policies, board selection.
    #[arg(
        long,
        global = true,
        env = "APPMGR_CONFIG_DIR",
        default_value = "/etc/appmgr"
    )]
    pub config_dir: PathBuf,
    /// Machine-readable output (and errors as a JSON object as well).
    #[arg(long, global = true)]
    pub json: bool,
    /// Work on the state directory directly even when appmgrd serves it (the default is
    /// to go through appmgrd whenever it runs).
    #[arg(long, global = true, env = "APPMGR_DIRECT")]
    pub direct: bool,
}

/// Where a command runs: the one table of every command's routing, matched
/// exhaustively so a new command must be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Needs libostree: the lean `appmgr` hands it to `appmgr-ops`.
    pub store: bool,
    /// Goes through appmgrd when appmgrd serves the state directory.
    pub daemon: bool,
    /// Exists only with appmgrd (it supervises services).
    pub daemon_only: bool,
}

impl Command {
    pub fn route(&self) -> Route {
        use Command::*;
        let (store, daemon, daemon_only) = match self {
            Install { .. }
            | Update { .. }
            | List
            | Info { .. }
            | Remove { .. }
            | Rollback { .. }
            | Fsck => (true, true, false),
            // TUF (tough and aws-lc) is linked into appmgr-ops only: what verifies or
            // signs TUF metadata always runs there, never through appmgrd.
            Publish { .. } | Tuf(_) | Remote(RemoteCmd::Add { .. } | RemoteCmd::Ls { .. }) => {
                (true, false, false)
            }
            Permissions { .. } | Ps | Kill { .. } => (false, true, false),
            Start { .. } | Stop { .. } | Status { .. } => (false, true, true),
            // Always local: the app runs in the foreground; reload applies to running
            // apps from this host; keys, trust and bundles are files; the board is this
            // host's, read from the config dir (no state, no lock: no daemon needed).
            // sbom reads the records lock-free, like list, and needs no libostree.
            // Remotes are config files and registries, not the store.
            Run { .. }
            | Reload { .. }
            | Key(_)
            | Trust(_)
            | Bundle(_)
            | Board(_)
            | Sbom { .. }
            | Report { .. }
            | Hold { .. }
            | Unhold { .. }
            | Inhibit { .. }
            | Uninhibit { .. }
            | Inhibitors
            | Remote(_) => (false, false, false),
        };
        Route {
            store,
            daemon,
            daemon_only,
        }
    }
}

impl Global {
    /// The directories the use cases work on.
    pub fn ctx(&self) -> appmgr_core::Ctx {
        appmgr_core::Ctx {
            state_dir: self.state_dir.clone(),
            config_dir: self.config_dir.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Trusted signing keys.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Build, inspect and verify bundles.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// This host's board profile.
    #[command(subcommand)]
    Board(BoardCmd),
    /// Install or update an app or runtime from a signed bundle: a file, `NAME:ID[@VERSION]`
    /// from a remote (the highest trusted version for this host, or the one named), or an
    /// http:// URL. A download streams into the store as it arrives.
    Install {
        /// The bundle file (`-`: the bundle open on stdin), `NAME:ID[@VERSION]` or a URL.
        file: PathBuf,
        /// Allow installing a version lower than the highest ever installed.
        #[arg(long)]
        allow_downgrade: bool,
        /// The name to use for the bundle in messages (with `-`).
        #[arg(long, hide = true)]
        name: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Update installed apps and runtimes (all, or those of the IDs named) to the newest
    /// version a configured remote offers with a trusted signature (runtimes first).
    Update {
        ids: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Installed apps and runtimes.
    List,
    /// One installed app or runtime: versions and deployments.
    Info { id: String },
    /// Remove an app or runtime (a runtime in use by an app is refused).
    Remove { id: String },
    /// Switch back to the previous deployment.
    Rollback { id: String },
    /// Verify the store and deployments.
    Fsck,
    /// The effective grant and limits of an app, and which policy rule granted each.
    Permissions { id: String },
    /// Software bills of materials: `sbom ID` prints what an installed app or runtime was
    /// built from; `sbom query PACKAGE [--below VERSION]` finds what ships a package.
    #[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
    Sbom {
        #[command(subcommand)]
        query: Option<SbomCmd>,
        /// An installed app or runtime (ID or KIND/ID/ARCH/BRANCH).
        id: Option<String>,
    },
    /// Running apps: pid, cgroup, memory, CPU time, limits.
    Ps,
    /// Keep `update` (the CLI's and appmgrd's) from updating an app until `unhold`.
    Hold {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let `update` update a held app again.
    Unhold { id: String },
    /// Set an inhibitor (a file in inhibit-dir): installs and the restarts they bring
    /// wait until no inhibitor is left (appmgrd queues them; without it they are refused).
    Inhibit {
        /// 1 to 64 of A-Z a-z 0-9 - _ (e.g. vehicle-moving).
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Clear an inhibitor; appmgrd runs the queued installs once none is left.
    Uninhibit { name: String },
    /// The inhibitors in force and the installs appmgrd queued meanwhile.
    Inhibitors,
    /// The signed device report: installed apps and runtimes, versions, release counters,
    /// each one's last update outcome (signed with STATE/device/report.key).
    Report {
        /// Verify a report file instead (with --key, the device's enrolled public key).
        #[arg(long, requires = "key")]
        verify: Option<PathBuf>,
        #[arg(long, requires = "verify")]
        key: Option<PathBuf>,
    },
    /// Run an app sandboxed in the foreground; exits with its status (128+N for a signal).
    Run {
        id: String,
        /// Print the launch plan, cgroup spec and grant as JSON instead of running.
        #[arg(long)]
        print_plan: bool,
        /// Arguments for the app, passed as data (never interpreted as options).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Publish a bundle file to an OCI registry as an artifact (default tag
    /// ID_ARCH_VERSION).
    Publish {
        file: PathBuf,
        /// oci://HOST[:PORT]/REPO[:TAG] (plain HTTP) or oci+https://HOST[:PORT]/REPO[:TAG]
        target: String,
        #[command(flatten)]
        access: AccessArgs,
        /// Also list the bundle in the remote's TUF metadata, under this root (the
        /// publisher's current root.json).
        #[arg(long = "tuf-root", requires = "tuf_keys")]
        tuf_root: Option<PathBuf>,
        /// A key that signs the targets, snapshot and timestamp metadata (repeat to
        /// meet each role's threshold).
        #[arg(long = "tuf-key", requires = "tuf_root")]
        tuf_keys: Vec<PathBuf>,
        /// The bundle's release counter (default: one more than its ID's highest).
        #[arg(long, requires = "tuf_root")]
        release: Option<u64>,
        /// How long the new metadata stays valid: 7d, 12h, 30m, 90s.
        #[arg(long, default_value = "7d", requires = "tuf_root")]
        expires: String,
    },
    /// TUF metadata for remotes: roots (publisher side).
    #[command(subcommand)]
    Tuf(TufCmd),
    /// Remotes: OCI registry repositories to install from (CONFIG/remotes.d/).
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Re-read policy and apply the new limits to running apps (all, or one).
    Reload { id: Option<String> },
    /// Stop every process of a running app.
    Kill { id: String },
    /// Start a service app under appmgrd's supervision (needs appmgrd).
    Start { id: String },
    /// Stop a supervised service app: SIGTERM, then SIGKILL after its stop timeout
    /// (needs appmgrd).
    Stop { id: String },
    /// Supervised service apps: state, pid, restarts, readiness, health window and the
    /// last automatic rollback (needs appmgrd).
    Status { id: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum TufCmd {
    /// Write a new root metadata file, signed with the --sign keys (a rotation: the
    /// previous root's keys and the new root's own).
    #[command(disable_version_flag = true)]
    Root {
        out: PathBuf,
        #[arg(long)]
        version: u64,
        /// How long it stays valid: 365d, 12h, …
        #[arg(long, default_value = "365d")]
        expires: String,
        /// ROLE=KEYFILE (root, targets, snapshot, timestamp): a key of that role
        /// (the private key file; its public part goes into the root).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// ROLE=K: how many of the role's keys must sign (default 1).
        #[arg(long = "threshold")]
        thresholds: Vec<String>,
        /// A key file that signs this root.
        #[arg(long = "sign", required = true)]
        sign: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteCmd {
    /// Add a remote: a registry repository, oci://HOST[:PORT]/REPO (plain HTTP) or
    /// oci+https://HOST[:PORT]/REPO (TLS).
    Add {
        name: String,
        url: String,
        #[command(flatten)]
        access: AccessArgs,
        /// The remote's TUF root metadata (trust anchor): installs and updates then
        /// follow its verified targets, release counters and expiry.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Configured remotes.
    List,
    /// Remove a remote.
    Remove { name: String },
    /// What a remote offers (from its listings; no payload is downloaded), each entry's
    /// signed manifest checked against the trusted keys.
    Ls { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Generate an ed25519 key pair: NAME.key (PKCS#8 PEM, 0600) and NAME.pub (SPKI PEM).
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SbomCmd {
    /// Installed apps and runtimes whose SBOM lists PACKAGE (a binary or source package
    /// name), optionally only below VERSION (Debian version order).
    Query {
        package: String,
        #[arg(long, value_name = "VERSION")]
        below: Option<String>,
    },
}

/// How an `oci+https://` registry is reached.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// The CA certificates (PEM) trusted for the registry (default: tls-ca-file of
    /// appmgr.toml for a remote, the system's bundle for publish).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// A file holding USER:SECRET (mode 0600) for a registry that asks for credentials.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
}

impl AccessArgs {
    pub fn files(&self) -> appmgr_core::remotes::AccessFiles {
        appmgr_core::remotes::AccessFiles {
            ca: self.ca.clone(),
            credentials: self.credentials.clone(),
        }
    }
}

/// `--wait` of install and update (needs appmgrd: the health window is its own).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct WaitArgs {
    /// Return the health window's verdict: exit 0 once the updated service is healthy
    /// (READY=1, or its window passed), exit 8 when appmgrd rolled it back (needs appmgrd).
    #[arg(long)]
    pub wait: bool,
    /// Wait at most this many seconds for the verdict (default: the window's
    /// health-timeout plus 60 s); exit 1 without one.
    #[arg(long, value_name = "SECONDS", requires = "wait",
          value_parser = clap::value_parser!(u32).range(1..=172_800))]
    pub wait_timeout: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum BoardCmd {
    /// What the configured board offers: logical devices (node patterns and the nodes
    /// present now), core sets, the GPU portal's render node and the sensor portal's IIO
    /// devices.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Trust NAME.pub; with --scope, only for app IDs matching one of the globs.
    Add {
        key: PathBuf,
        #[arg(long = "scope")]
        scope: Vec<String>,
    },
    /// Trusted keys.
    List,
    /// Stop trusting a key (by name or fingerprint).
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    None,
}

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Build a signed bundle from a directory tree or a tar a build system produced.
    Create {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long, conflicts_with = "payload", required_unless_present = "payload")]
        root: Option<PathBuf>,
        #[arg(long)]
        payload: Option<PathBuf>,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "zstd")]
        compression: CompressionArg,
        /// A CycloneDX 1.5 JSON SBOM to carry, covered by the signature.
        #[arg(long)]
        sbom: Option<PathBuf>,
    },
    /// Show a bundle's manifest (the signature is not checked: use verify).
    Inspect { file: PathBuf },
    /// Verify signature, digest and contents against the trusted keys.
    Verify { file: PathBuf },
}
