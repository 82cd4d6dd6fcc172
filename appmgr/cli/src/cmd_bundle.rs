//! `key`, `trust` and `bundle` commands: no store, no lock, no root needed.

use crate::args::{BundleCmd, CompressionArg, Global, KeyCmd, TrustCmd};
use crate::CliResult;
use crate::Output;
use appmgr_bundle::{keys, Compression, Manifest, TrustStore};
use appmgr_types::Glob;
use serde_json::json;
use std::fmt::Write;

pub fn key(_g: &Global, c: KeyCmd) -> CliResult<Output> {
    match c {
        KeyCmd::Generate { out } => {
            let (sk, pk) = keys::generate(&out)?;
            let fp = keys::fingerprint(&keys::load_public(&pk)?);
            Ok(Output::new(
                format!(
                    "wrote secret key {} (mode 0600) and public key {}\nfingerprint {fp}\n",
                    sk.display(),
                    pk.display()
                ),
                json!({"secret-key": sk, "public-key": pk, "fingerprint": fp}),
            ))
        }
    }
}

fn key_json(k: &appmgr_bundle::TrustedKey) -> serde_json::Value {
    json!({
        "name": k.name,
        "fingerprint": k.fingerprint,
        "scope": k.scope.as_ref().map(|s| s.iter().map(|g| g.as_str()).collect::<Vec<_>>()),
    })
}

fn key_text(k: &appmgr_bundle::TrustedKey) -> String {
    let scope = match &k.scope {
        None => "any id".to_string(),
        Some(s) => s.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", "),
    };
    format!("{}\t{}\t{}", k.name, k.fingerprint, scope)
}

pub fn trust(g: &Global, c: TrustCmd) -> CliResult<Output> {
    match c {
        TrustCmd::Add { key, scope } => {
            let globs = scope
                .iter()
                .map(|s| Glob::new(s))
                .collect::<Result<Vec<_>, _>>()?;
            let k = TrustStore::add(&g.config_dir, &key, &globs)?;
            Ok(Output::new(
                format!("trusted {}\n", key_text(&k)),
                key_json(&k),
            ))
        }
        TrustCmd::List => {
            let store = TrustStore::load(&g.config_dir)?;
            let mut text = String::new();
            for k in &store.keys {
                let _ = writeln!(text, "{}", key_text(k));
            }
            Ok(Output::new(
                text,
                json!(store.keys.iter().map(key_json).collect::<Vec<_>>()),
            ))
        }
        TrustCmd::Remove { name } => {
            let k = TrustStore::remove(&g.config_dir, &name)?;
            Ok(Output::new(
                format!("removed {}\n", key_text(&k)),
                key_json(&k),
            ))
        }
    }
}

/// The manifest as JSON: the contract fields at the top level.
pub fn manifest_json(m: &Manifest) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or_default()
}

fn manifest_text(m: &Manifest) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "id:       {}", m.id);
    let _ = writeln!(t, "kind:     {}", m.kind);
    let _ = writeln!(t, "version:  {}", m.version);
    let _ = writeln!(t, "arch:     {}", m.arch);
    let _ = writeln!(t, "branch:   {}", m.branch);
    if let Some(r) = &m.runtime {
        let _ = writeln!(t, "runtime:  {r}");
    }
    if let Some(c) = &m.command {
        let _ = writeln!(t, "command:  {}", appmgr_types::escape_for_display(c));
    }
    if let Some(p) = &m.payload {
        let _ = writeln!(
            t,
            "payload:  {} bytes {:?}, {} entries, {} bytes installed, sha256 {}",
            p.size, p.compression, p.entries, p.installed_size, p.sha256
        );
    }
    if let Some(s) = &m.sbom {
        let _ = writeln!(
            t,
            "sbom:     {} bytes {}, sha256 {}",
            s.size,
            s.format.as_str(),
            s.sha256
        );
    }
    if !m.permissions.is_empty() {
        let perms = toml::to_string(&m.permissions).unwrap_or_default();
        let _ = writeln!(t, "permissions requested:");
        for line in perms.lines() {
            let _ = writeln!(t, "  {}", appmgr_types::escape_for_display(line));
        }
    }
    let res = toml::to_string(&m.resources).unwrap_or_default();
    if !res.trim().is_empty() {
        let _ = writeln!(t, "resources requested:");
        for line in res.lines() {
            let _ = writeln!(t, "  {line}");
        }
    }
    t
}

pub fn bundle(g: &Global, c: BundleCmd) -> CliResult<Output> {
    match c {
        BundleCmd::Create {
            manifest,
            root,
            payload,
            key,
            out,
            compression,
            sbom,
        } => {
            let source = match (&root, &payload) {
                (Some(r), _) => appmgr_bundle::Source::Root(r),
                (None, Some(p)) => appmgr_bundle::Source::Tar(p),
                (None, None) => unreachable!("clap requires --root or --payload"),
            };
            let comp = match compression {
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::None => Compression::None,
            };
            let c = appmgr_bundle::create(&manifest, source, &key, &out, comp, sbom.as_deref())?;
            let mut j = manifest_json(&c.manifest);
            j["bundle"] = json!(out);
            j["bundle-size"] = json!(c.bundle_size);
            Ok(Output::new(
                format!(
                    "wrote {} ({} {} {}, {} entries, {} bytes)\n",
                    out.display(),
                    c.manifest.kind,
                    c.manifest.id,
                    c.manifest.version,
                    c.payload.entries,
                    c.bundle_size
                ),
                j,
            ))
        }
        BundleCmd::Inspect { file } => {
            let b = appmgr_bundle::open(&file, None)?;
            let m = b.manifest();
            let mut j = manifest_json(m);
            j["signature-checked"] = json!(false);
            Ok(Output::new(
                format!(
                    "{}(signature not checked: use `appmgr bundle verify`)\n",
                    manifest_text(m)
                ),
                j,
            ))
        }
        BundleCmd::Verify { file } => {
            let trust = TrustStore::load(&g.config_dir)?;
            let (m, signer, summary) = appmgr_bundle::verify(&file, &trust)?;
            let mut j = manifest_json(&m);
            j["signed-by"] = json!(signer);
            j["verified"] = json!(true);
            Ok(Output::new(
                format!(
                    "{}: good signature by trusted key {signer:?}, payload digest and {} entries verified\n",
                    file.display(),
                    summary.entries
                ),
                j,
            ))
        }
    }
}
