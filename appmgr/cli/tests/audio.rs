//! `audio` grants on a real PipeWire 0.3 and WirePlumber 0.4 (docs/audio.md): a private
//! session bus, `pipewire` and `wireplumber` (with the repository's
//! `board-support/pipewire` files) under a private `XDG_RUNTIME_DIR`, a null sink and a
//! null source, and apps whose runtime carries the host's `pw-cat`, `pw-cli` and
//! `pw-dump`, run by `appmgr run`. Verified by recording, not by listing: the sink's
//! monitor (host side) gets the app's samples, and a capture from the source, which a host
//! client feeds with a tone, yields no sample unless `capture` is granted. As root.
use appmgr_testkit::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tools the test runs on the host (packages pipewire, pipewire-bin, wireplumber,
/// dbus-daemon; scripts/install-deps installs them).
const TOOLS: &[&str] = &[
    "pipewire",
    "wireplumber",
    "dbus-daemon",
    "pw-cli",
    "pw-cat",
    "pw-dump",
    "pw-link",
    "pw-metadata",
];

/// The amplitude of the test tone; a recording "has audio" when its peak is near it.
const TONE: i16 = 8000;

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command with output, killed after `secs` (every wait of this test is bounded).
fn output_within(c: Command, secs: u64) -> (i32, String, String) {
    let (r, _) = run_bounded(c, Duration::from_secs(secs));
    (r.code, r.stdout, r.stderr)
}

/// The host's PipeWire, WirePlumber and session bus; killed on drop.
struct Audio {
    dir: PathBuf,
    run: PathBuf,
    children: Vec<(String, Child)>,
}

impl Audio {
    fn start(dir: &Path) -> Audio {
        let run = dir.join("run");
        fs::create_dir_all(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
        let mut a = Audio {
            dir: dir.to_path_buf(),
            run: run.clone(),
            children: Vec::new(),
        };
        let bus = dir.join("session-bus");
        let child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", bus.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        a.children.push(("dbus-daemon".into(), child));
        wait_until("the session bus", Duration::from_secs(10), || bus.exists());
        let log = |name: &str| fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = a
            .host("pipewire")
            .stdout(log("pipewire"))
            .stderr(log("pipewire.err"))
            .spawn()
            .unwrap();
        a.children.push(("pipewire".into(), child));
        let sock = a.socket();
        wait_until("pipewire's socket", Duration::from_secs(10), || {
            sock.exists()
        });
        // WirePlumber with Debian's configuration plus the repository's fragment, which
        // loads the repository's script.
        let wp = dir.join("wireplumber");
        let st = Command::new("cp")
            .args(["-r", "/usr/share/wireplumber"])
            .arg(&wp)
            .status()
            .unwrap();
        assert!(st.success());
        let support = repo_root().join("board-support/pipewire");
        fs::copy(
            support.join("60-appmgr-access.lua"),
            wp.join("main.lua.d/60-appmgr-access.lua"),
        )
        .unwrap();
        fs::write(
            wp.join("main.lua.d/59-appmgr-test-paths.lua"),
            format!(
                "appmgr_access_script = \"{}\"\n",
                support.join("appmgr-access.lua").display()
            ),
        )
        .unwrap();
        let child = a
            .host("wireplumber")
            .env("WIREPLUMBER_CONFIG_DIR", &wp)
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", bus.display()),
            )
            .stdout(log("wireplumber"))
            .stderr(log("wireplumber.err"))
            .spawn()
            .unwrap();
        a.children.push(("wireplumber".into(), child));
        wait_until(
            "the appmgr-audio metadata of appmgr-access.lua",
            Duration::from_secs(20),
            || {
                let mut c = a.host("pw-metadata");
                c.args(["-n", "appmgr-audio"]);
                output_within(c, 5).1.contains("Found \"appmgr-audio\"")
            },
        );
        for (name, class) in [
            ("appmgr-test-sink", "Audio/Sink"),
            ("appmgr-test-source", "Audio/Source/Virtual"),
        ] {
            let mut c = a.host("pw-cli");
            c.args([
                "create-node",
                "adapter",
                &format!(
                    "{{ factory.name=support.null-audio-sink node.name={name} \
                     media.class={class} object.linger=true audio.position=[FL FR] }}"
                ),
            ]);
            let (code, out, err) = output_within(c, 10);
            assert_eq!(code, 0, "create {name}: {out}{err}");
        }
        wait_until("the null nodes", Duration::from_secs(10), || {
            let nodes = a.host_nodes();
            nodes.contains("appmgr-test-sink") && nodes.contains("appmgr-test-source")
        });
        // The app's uid connects through the bound inode (docs/sandbox.md, "Host
        // sockets"): the socket is writable by all, the directory above is not.
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
        a
    }

    fn socket(&self) -> PathBuf {
        self.run.join("pipewire-0")
    }

    /// A host tool (root, unrestricted) on this PipeWire, with a clean environment.
    fn host(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", &self.run)
            .env("HOME", &self.dir);
        c
    }

    /// The node names the host sees.
    fn host_nodes(&self) -> String {
        let mut c = self.host("pw-cli");
        c.args(["ls", "Node"]);
        output_within(c, 10).1
    }

    /// `pw-link -l`: every link, as the host sees it.
    fn host_links(&self) -> String {
        let mut c = self.host("pw-link");
        c.arg("-l");
        output_within(c, 10).1
    }

    /// The entries of the appmgr-audio metadata: `appmgr.audio.uid.N` → value.
    fn grants(&self) -> BTreeSet<(String, String)> {
        let mut c = self.host("pw-metadata");
        c.args(["-n", "appmgr-audio"]);
        output_within(c, 10)
            .1
            .lines()
            .filter_map(|l| {
                let k = l.split("key:'").nth(1)?.split('\'').next()?;
                let v = l.split("value:'").nth(1)?.split('\'').next()?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// Records the sink's monitor on the host into `out` until the returned child is
    /// stopped with [`stop_recorder`].
    fn record_sink_monitor(&self, out: &Path) -> Child {
        let mut c = self.host("pw-record");
        c.args([
            "-P",
            "{ stream.capture.sink=true node.name=appmgr-test-monitor }",
            "--target",
            "appmgr-test-sink",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        wait_until("the host's monitor link", Duration::from_secs(10), || {
            self.host_links().contains("appmgr-test-monitor")
        });
        child
    }

    /// Plays `wav` on the host and links it into the null source, so that the source
    /// carries the tone (anything recorded from it has samples of amplitude [`TONE`]).
    fn feed_source(&self, wav: &Path) -> Child {
        let mut c = self.host("pw-play");
        c.args(["-P", "{ node.name=appmgr-test-feeder }"])
            .arg(wav)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        wait_until("the feeder", Duration::from_secs(10), || {
            self.host_nodes().contains("appmgr-test-feeder")
        });
        for ch in ["FL", "FR"] {
            let mut l = self.host("pw-link");
            l.args([
                &format!("appmgr-test-feeder:output_{ch}"),
                &format!("appmgr-test-source:input_{ch}"),
            ]);
            let (code, out, err) = output_within(l, 10);
            assert_eq!(code, 0, "link the feeder: {out}{err}");
        }
        child
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stop_recorder(mut c: Child) {
    // pw-record writes the WAV header's sizes when it quits on SIGINT.
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = c.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number of 16-bit samples after the WAV `data` header, and their peak amplitude
/// (0, 0 for a missing or empty file).
fn wav_peak(path: &Path) -> (usize, i32) {
    let Ok(b) = fs::read(path) else {
        return (0, 0);
    };
    let Some(pos) = b.windows(4).position(|w| w == b"data") else {
        return (0, 0);
    };
    let data = &b[(pos + 8).min(b.len())..];
    let peak = data
        .chunks_exact(2)
        .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])).abs())
        .max()
        .unwrap_or(0);
    (data.len() / 2, peak)
}

/// A 48 kHz stereo 16-bit WAV of a 440 Hz tone at amplitude [`TONE`].
fn write_tone(path: &Path, seconds: u32) {
    let frames = 48_000 * seconds;
    let mut data = Vec::with_capacity(frames as usize * 4);
    for i in 0..frames {
        let v = (f64::from(TONE)
            * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 48_000.0).sin())
            as i16;
        data.extend_from_slice(&v.to_le_bytes());
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&48_000u32.to_le_bytes());
    w.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
    w.extend_from_slice(&4u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    fs::write(path, w).unwrap();
}

/// The shared libraries `bin` loads (ldd), as (soname, host path).
fn libs_of(bin: &Path) -> Vec<(String, PathBuf)> {
    let o = Command::new("ldd").arg(bin).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some((name, rest)) = l.split_once(" => ") {
                let path = rest.split(" (").next()?;
                path.starts_with('/')
                    .then(|| (name.to_string(), PathBuf::from(path)))
            } else if l.starts_with('/') {
                let path = l.split(" (").next()?;
                Some((
                    Path::new(path).file_name()?.to_str()?.to_string(),
                    PathBuf::from(path),
                ))
            } else {
                None
            }
        })
        .collect()
}

/// A runtime (`/usr` in the sandbox) with a static busybox and the host's PipeWire
/// clients: `pw-cat` (as `pw-play`/`pw-record`), `pw-cli`, `pw-dump`, the client-side
/// modules and SPA plugins a stream needs, every library they load, and PipeWire's
/// client configuration.
fn pipewire_runtime(root: &Path) {
    let copy = |from: &Path, to: &Path| {
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        if !to.exists() {
            fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        }
    };
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"));
    for applet in ["sh", "timeout", "cat", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let mut objects: Vec<PathBuf> = ["/usr/bin/pw-cat", "/usr/bin/pw-cli", "/usr/bin/pw-dump"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for (_, tool) in [
        ("pw-cat", "pw-cat"),
        ("pw-cli", "pw-cli"),
        ("pw-dump", "pw-dump"),
    ] {
        copy(
            &Path::new("/usr/bin").join(tool),
            &root.join("bin").join(tool),
        );
    }
    for link in ["pw-play", "pw-record"] {
        std::os::unix::fs::symlink("pw-cat", root.join("bin").join(link)).unwrap();
    }
    // Where Debian's libpipewire looks for modules and plugins: next to itself.
    let libpw = libs_of(Path::new("/usr/bin/pw-cli"))
        .into_iter()
        .find(|(n, _)| n.starts_with("libpipewire-0.3"))
        .expect("pw-cli loads libpipewire")
        .1;
    let libdir = fs::canonicalize(libpw.parent().unwrap()).unwrap();
    let rel = libdir.strip_prefix("/usr").unwrap_or(&libdir).to_path_buf();
    for m in [
        "protocol-native",
        "client-node",
        "client-device",
        "adapter",
        "metadata",
        "session-manager",
    ] {
        let f = libdir.join(format!("pipewire-0.3/libpipewire-module-{m}.so"));
        copy(
            &f,
            &root
                .join(&rel)
                .join(format!("pipewire-0.3/libpipewire-module-{m}.so")),
        );
        objects.push(f);
    }
    for plugin in ["support", "audioconvert"] {
        for f in fs::read_dir(libdir.join("spa-0.2").join(plugin)).unwrap() {
            let f = f.unwrap().path();
            copy(
                &f,
                &root
                    .join(&rel)
                    .join("spa-0.2")
                    .join(plugin)
                    .join(f.file_name().unwrap()),
            );
            objects.push(f);
        }
    }
    for o in &objects {
        for (name, path) in libs_of(o) {
            if name.starts_with("ld-linux") {
                copy(&path, &root.join("lib64").join(&name));
            }
            copy(&path, &root.join(&rel).join(&name));
        }
    }
    copy(
        Path::new("/usr/share/pipewire/client.conf"),
        &root.join("share/pipewire/client.conf"),
    );
    fs::write(root.join("etc/os-release"), "ID=test\nVERSION_ID=1\n").unwrap();
}

const APP_SCRIPT: &str = r#"#!/usr/bin/sh
# The test app: lists, plays or records through the PipeWire socket of its sandbox.
case "$1" in
  list) exec timeout 5 pw-cli ls Node ;;
  dump) exec timeout 5 pw-dump ;;
  play) exec timeout 10 pw-play /app/share/tone.wav ;;
  record) exec timeout -s INT "$2" pw-record "$HOME/capture.wav" ;;
esac
exit 2
"#;

fn install_app(e: &Env, id: &str, permissions: &str) {
    let root = e.p(&format!("app-{id}"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share")).unwrap();
    fs::write(root.join("bin/audio"), APP_SCRIPT).unwrap();
    fs::set_permissions(root.join("bin/audio"), fs::Permissions::from_mode(0o755)).unwrap();
    write_tone(&root.join("share/tone.wav"), 1);
    let manifest = app_manifest("1.0.0")
        .replace("org.example.Hello", id)
        .replace("command = \"hello\"", "command = \"audio\"");
    let b = e.bundle(
        &format!("{manifest}\n[permissions]\n{permissions}"),
        &root,
        &format!("{id}.bundle"),
    );
    e.ok(&["install", s(&b)]);
}

fn uid_of(e: &Env, id: &str) -> u32 {
    let j = e.ok(&["--json", "info", id]).json();
    j["uid"].as_u64().unwrap_or_else(|| panic!("no uid in {j}")) as u32
}

/// The `provided` entries of `appmgr permissions --json` for `key`: value → (status, reason).
fn provided(e: &Env, id: &str, key: &str) -> Vec<(String, String, String)> {
    let j = e.ok(&["--json", "permissions", id]).json();
    j["provided"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["key"] == key)
        .map(|p| {
            (
                p["value"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn capture_path(e: &Env, id: &str) -> PathBuf {
    e.state.join("data").join(id).join("capture.wav")
}

const SPEAKER: &str = "org.example.Speaker";
const RECORDER: &str = "org.example.Recorder";
const MUTE: &str = "org.example.Mute";

#[test]
fn audio_grants_are_enforced_by_the_session_manager() {
    require_root!("runs pipewire, wireplumber and sandboxes under app uids");
    if let Some(m) = missing_tool(TOOLS) {
        panic!("{m}: run scripts/install-deps (pipewire, pipewire-bin, wireplumber, dbus)");
    }
    let e = Env::new();
    let audio = Audio::start(&e.p("audio"));
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "pipewire-socket = \"{}\"\npipewire-access = \"wireplumber\"\n",
            audio.socket().display()
        ),
    )
    .unwrap();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-audio.toml"),
        "[[rule]]\napps = [\"org.example.*\"]\n\
         grant = { sockets = [\"pipewire\"], audio = [\"playback\", \"capture\"] }\n",
    )
    .unwrap();
    let rt = e.p("pw-runtime");
    pipewire_runtime(&rt);
    let b = e.bundle(&runtime_manifest("1.0.0"), &rt, "pw-runtime.bundle");
    e.ok(&["install", s(&b)]);
    install_app(
        &e,
        SPEAKER,
        "sockets = [\"pipewire\"]\naudio = [\"playback\"]\n",
    );
    install_app(
        &e,
        RECORDER,
        "sockets = [\"pipewire\"]\naudio = [\"playback\", \"capture\"]\n",
    );
    install_app(&e, MUTE, "sockets = [\"pipewire\"]\n");

    // What `permissions` shows.
    assert_eq!(
        provided(&e, SPEAKER, "audio"),
        [("playback".into(), "provided".into(), String::new())]
    );
    assert_eq!(provided(&e, RECORDER, "audio").len(), 2);
    assert!(provided(&e, RECORDER, "audio")
        .iter()
        .all(|(_, st, _)| st == "provided"));
    assert!(provided(&e, MUTE, "audio").is_empty());
    let text = e.ok(&["permissions", SPEAKER]).stdout;
    assert!(text.contains("audio playback  ["), "{text}");

    // Enumeration: the playback-only app sees the sink and not the source, in both
    // listings; the recorder sees both.
    for tool in ["list", "dump"] {
        let r = e.run(&["run", SPEAKER, "--", tool]);
        assert!(
            r.stdout.contains("appmgr-test-sink"),
            "{tool}: the sink is listed: {}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            !r.stdout.contains("appmgr-test-source"),
            "{tool}: the source is not listed: {}",
            r.stdout
        );
        let r = e.run(&["run", RECORDER, "--", tool]);
        assert!(
            r.stdout.contains("appmgr-test-source") && r.stdout.contains("appmgr-test-sink"),
            "{tool}: the recorder sees both: {}{}",
            r.stdout,
            r.stderr
        );
    }
    // The app without `audio` sees nothing at all: its client is refused.
    let r = e.run(&["run", MUTE, "--", "list"]);
    assert!(
        !r.stdout.contains("appmgr-test-"),
        "no node for the app without audio: {}",
        r.stdout
    );

    // The session manager has exactly each app's roles, keyed on its uid.
    let want: BTreeSet<(String, String)> = [
        (SPEAKER, "playback"),
        (RECORDER, "playback,capture"),
        (MUTE, "none"),
    ]
    .iter()
    .map(|(id, v)| {
        (
            format!("appmgr.audio.uid.{}", uid_of(&e, id)),
            v.to_string(),
        )
    })
    .collect();
    assert_eq!(audio.grants(), want);

    // Playback reaches the sink: its monitor, recorded on the host, has the tone.
    let mon = e.p("monitor.wav");
    let rec = audio.record_sink_monitor(&mon);
    let r = e.run(&["run", SPEAKER, "--", "play"]);
    stop_recorder(rec);
    assert_eq!(r.code, 0, "playback works: {}", r.stderr);
    let (n, peak) = wav_peak(&mon);
    assert!(
        n > 0 && peak > i32::from(TONE) / 2,
        "the sink received the app's tone: {n} samples, peak {peak}"
    );
    // Without `audio`, nothing is played.
    let mon = e.p("monitor-mute.wav");
    let rec = audio.record_sink_monitor(&mon);
    let r = e.run(&["run", MUTE, "--", "play"]);
    stop_recorder(rec);
    assert_ne!(r.code, 0, "playback without audio fails: {}", r.stdout);
    let (_, peak) = wav_peak(&mon);
    assert_eq!(
        peak, 0,
        "nothing reached the sink from the app without audio"
    );

    // Capture: the source carries a tone the host plays into it.
    let tone = e.p("feed.wav");
    write_tone(&tone, 30);
    let feeder = audio.feed_source(&tone);
    let before_nodes = audio.host_nodes();
    let before_grants = audio.grants();

    // Positive control: the recorder gets the tone.
    let r = e.run(&["run", RECORDER, "--", "record", "2"]);
    let (n, peak) = wav_peak(&capture_path(&e, RECORDER));
    assert!(
        n > 0 && peak > i32::from(TONE) / 2,
        "capture granted: the tone is recorded ({n} samples, peak {peak}): {}",
        r.stderr
    );

    // Refused: the playback-only app records nothing of the source.
    let r = e.run(&["run", SPEAKER, "--", "record", "2"]);
    let (n, peak) = wav_peak(&capture_path(&e, SPEAKER));
    assert_eq!(
        peak, 0,
        "capture not granted: no sample of the source ({n} samples, peak {peak}): {}",
        r.stderr
    );
    // And the app without audio neither.
    let _ = e.run(&["run", MUTE, "--", "record", "2"]);
    let (_, peak) = wav_peak(&capture_path(&e, MUTE));
    assert_eq!(peak, 0, "no audio grant: no sample of the source");

    // Nothing changed on the host: the nodes, the feeder's links into the source, the
    // grants; no link from the source is left to anything but the host's own.
    let after = audio.host_nodes();
    for n in [
        "appmgr-test-sink",
        "appmgr-test-source",
        "appmgr-test-feeder",
    ] {
        assert_eq!(before_nodes.contains(n), after.contains(n), "{n}");
        assert!(after.contains(n), "{n} is still there");
    }
    let links = audio.host_links();
    assert!(
        links.contains("appmgr-test-feeder:output_FL")
            && links.contains("appmgr-test-source:input_FL"),
        "the feeder still feeds the source: {links}"
    );
    assert!(
        !links
            .lines()
            .any(|l| l.contains("appmgr-test-source:capture") && l.contains("->")),
        "no link from the source is left: {links}"
    );
    assert_eq!(audio.grants(), before_grants);
    stop_recorder(feeder);

    // A client of an app's uid that PipeWire did not hold (what beating module-access's
    // pid check would give: here a host process with the recorder's uid, whose root has
    // no marker) makes the session manager refuse that uid from then on, whatever its
    // entry says: the recorder's next client sees nothing.
    let uid = uid_of(&e, RECORDER).to_string();
    fs::set_permissions(&audio.run, fs::Permissions::from_mode(0o711)).unwrap();
    let mut c = audio.host("setpriv");
    c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "pw-mon"]);
    // Connected for 3 s (pw-mon runs until killed), so the session manager sees the
    // client: one that lists and leaves at once can be gone before it is looked at, the
    // window docs/audio.md describes.
    let _ = output_within(c, 3);
    fs::set_permissions(&audio.run, fs::Permissions::from_mode(0o700)).unwrap();
    // The session manager handles the escaped client asynchronously: wait (bounded) until
    // it has said so, then the recorder's next client must be refused.
    let refused = format!("of app uid {uid} was not held by PipeWire");
    let wp_log = || {
        ["wireplumber.log", "wireplumber.err.log"]
            .iter()
            .map(|f| fs::read_to_string(audio.dir.join(f)).unwrap_or_default())
            .collect::<String>()
    };
    let t0 = Instant::now();
    while !wp_log().contains(&refused) && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = e.run(&["run", RECORDER, "--", "list"]);
    assert!(
        !r.stdout.contains("appmgr-test-"),
        "a uid whose client escaped the hold is refused: {}",
        r.stdout
    );
    let log = wp_log();
    assert!(
        log.contains(&refused),
        "the session manager says why: {log}"
    );

    // Without appmgr's access rules on the host, `audio` is shown as not provided and the
    // sandbox gets no marker; the grant is not registered.
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!("pipewire-socket = \"{}\"\n", audio.socket().display()),
    )
    .unwrap();
    let p = provided(&e, SPEAKER, "audio");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].1, "not-provided");
    assert!(p[0].2.contains("pipewire-access"), "{p:?}");
    let r = e.run(&["run", SPEAKER, "--", "list"]);
    assert!(
        r.stderr
            .contains("audio playback not provided on this host"),
        "run says so: {}",
        r.stderr
    );
}

#[test]
fn audio_needs_the_pipewire_socket() {
    require_root!("installs apps");
    let e = Env::new();
    fs::write(
        e.cfg.join("appmgr.toml"),
        "pipewire-socket = \"none\"\npipewire-access = \"wireplumber\"\n",
    )
    .unwrap();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-audio.toml"),
        "[[rule]]\napps = [\"org.example.*\"]\n\
         grant = { sockets = [\"pipewire\"], audio = [\"playback\"] }\n",
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app("org.example.NoSocket", "audio = [\"playback\"]\n");
    let p = provided(&e, "org.example.NoSocket", "audio");
    assert_eq!(p[0].1, "not-provided");
    assert!(p[0].2.contains("sockets = [\"pipewire\"]"), "{p:?}");
    e.install_probe_app(
        "org.example.SocketOff",
        "sockets = [\"pipewire\"]\naudio = [\"playback\"]\n",
    );
    let p = provided(&e, "org.example.SocketOff", "audio");
    assert_eq!(p[0].1, "not-provided");
    assert!(p[0].2.contains("no PipeWire socket"), "{p:?}");
    // A request beyond the grant is refused, naming it; nothing is installed.
    let before = e.snapshot();
    let root = e.p("greedy");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), "#!/usr/bin/sh\n").unwrap();
    let b = e.bundle(
        &format!(
            "{}\n[permissions]\naudio = [\"capture\"]\n",
            app_manifest("1.0.0").replace("org.example.Hello", "org.example.Greedy")
        ),
        &root,
        "greedy.bundle",
    );
    let msg = e.fails(&["install", s(&b)], 4);
    assert!(msg.contains("audio=[capture]"), "{msg}");
    assert_eq!(e.snapshot(), before);
}
