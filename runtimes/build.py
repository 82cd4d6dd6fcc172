#!/usr/bin/env python3
"""Builds a runtime tree (what an app sees at /usr) from Debian packages.

    runtimes/build.py runtimes/headless.toml --arch x86_64 --out DIR [--cache DIR]
    runtimes/build.py runtimes/gl-llvmpipe.toml --arch x86_64 --out DIR2 --runtime DIR

The second form builds an extension (`kind = "extension"`: a GPU driver for the runtime
it `extends`) against the built runtime DIR: libraries the runtime has are not copied.

Writes DIR/files (the tree), DIR/manifest.toml (input for `appmgr bundle create`) and
DIR/sbom.cdx.json, a CycloneDX 1.5 SBOM of the packages the tree was built from (name,
version, source package, license, purl) for `appmgr bundle create --sbom`.
Packages are fetched with `apt-get download` for the target architecture (arm64 needs
`dpkg --add-architecture arm64 && apt-get update` first), unpacked with `dpkg-deb -x`,
merged the way Debian's merged-/usr does (/lib, /bin, /sbin, /usr/* all land in one
tree), and trimmed to the `keep` globs: no docs, locales, headers or maintainer scripts.
The result is reproducible for the same package versions: file contents come only from
the .debs and the definition, and appmgr canonicalizes owners, modes and times.
"""
import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from urllib.parse import quote

DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
ALLOWED = {"id", "branch", "version", "description", "base", "packages", "keep", "libraries",
           "exclude", "busybox-applets", "etc", "extension-points", "kind", "extends", "extension"}
# Keys a definition with `base` adds to its base's (lists are concatenated, [etc] merged).
EXTENDS = {"packages", "keep", "libraries", "exclude", "busybox-applets", "etc", "extension-points"}
# What an extension definition's [extension] table may hold (the manifest's, less
# `extends`, which build.py writes from the extended runtime's definition).
EXTENSION_KEYS = {"mount-point", "library-path", "conditions", "env"}
TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}


def die(msg):
    print(f"build.py: {msg}", file=sys.stderr)
    sys.exit(1)


def arch_all(pkg):
    """Whether the candidate of `pkg` is an `Architecture: all` package."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg], capture_output=True, text=True)
    return r.returncode == 0 and any(l.strip() == "Architecture: all" for l in r.stdout.splitlines())


def fetch(pkgs, deb_arch, cache):
    cache.mkdir(parents=True, exist_ok=True)
    debs = []
    for p in pkgs:
        found = sorted(cache.glob(f"{p}_*_{deb_arch}.deb")) + sorted(cache.glob(f"{p}_*_all.deb"))
        if not found:
            # An `Architecture: all` package (tzdata) has no `NAME:ARCH` for a foreign arch:
            # apt-get refuses `tzdata:arm64` on an amd64 host, so a cross build asks for it
            # by its plain name.
            spec = p if arch_all(p) else f"{p}:{deb_arch}"
            subprocess.run(["apt-get", "download", "-q", spec], cwd=cache, check=True,
                           stdout=subprocess.DEVNULL)
            found = sorted(cache.glob(f"{p}_*_{deb_arch}.deb")) + sorted(cache.glob(f"{p}_*_all.deb"))
        if not found:
            die(f"package {p}:{deb_arch} was not downloaded")
        debs.append(found[-1])
    return debs


def deb_fields(deb):
    """Package, Version, Source and Architecture of a .deb (Source defaults to Package)."""
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Source", "Architecture"],
                         capture_output=True, text=True, check=True).stdout
    f = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        f[k.strip()] = v.strip()
    src = f.get("Source") or f["Package"]
    # "Source: glibc (2.36-9)": the source version, when it differs from the binary's.
    src_name, _, src_ver = src.partition(" ")
    return {"name": f["Package"], "version": f["Version"], "arch": f["Architecture"],
            "source": src_name, "source-version": src_ver.strip("()") or f["Version"]}


def copyright_license(stage, pkg):
    """The license of `Files: *` in a machine-readable (DEP-5) copyright file, else None."""
    p = stage / "usr/share/doc" / pkg / "copyright"
    try:
        text = p.read_text(errors="replace")
    except OSError:
        return None
    if not text.startswith("Format:"):
        return None
    for para in text.split("\n\n"):
        fields = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t"):
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("files", "").split() == ["*"] and fields.get("license"):
            return fields["license"]
    return None


def distro():
    """`debian-12` for the host whose apt the packages come from."""
    rel = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        k, _, v = line.partition("=")
        rel[k] = v.strip('"')
    return f"{rel.get('ID', 'debian')}-{rel.get('VERSION_ID', 'unknown')}"


def sbom(d, version, arch, packages):
    """A CycloneDX 1.5 document; deterministic for the same packages (no timestamp, a
    serial number derived from the content), so rebuilds stay reproducible."""
    dist = distro()
    comps = []
    for p in sorted(packages, key=lambda p: p["name"]):
        purl = f"pkg:deb/debian/{p['name']}@{quote(p['version'], safe='')}?arch={p['arch']}&distro={dist}"
        c = {"type": "library", "bom-ref": purl, "name": p["name"], "version": p["version"], "purl": purl}
        if p.get("license"):
            c["licenses"] = [{"license": {"name": p["license"]}}]
        c["properties"] = [{"name": "appmgr:source-package", "value": p["source"]},
                           {"name": "appmgr:source-version", "value": p["source-version"]}]
        comps.append(c)
    body = json.dumps(comps, sort_keys=True)
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"appmgr:{d['id']}/{arch}/{d['branch']}@{version}:{body}")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "component": {"type": "platform", "bom-ref": f"{d['id']}/{arch}/{d['branch']}",
                          "name": d["id"], "version": version},
            "tools": {"components": [{"type": "application", "name": "appmgr runtimes/build.py"}]},
        },
        "components": comps,
    }


def merge(src, dst):
    """Moves src/{lib,lib64,bin,sbin,usr/*} into dst (the /usr tree)."""
    for top in ["usr", ""]:
        base = src / top if top else src
        for sub in ["lib", "lib64", "bin", "sbin", "share", "libexec", "include"]:
            d = base / sub
            if not d.is_dir() or d.is_symlink():
                continue
            for root, dirs, files in os.walk(d):
                rel = Path(root).relative_to(base)
                (dst / rel).mkdir(parents=True, exist_ok=True)
                for f in files:
                    s = Path(root) / f
                    t = dst / rel / f
                    if t.exists() or t.is_symlink():
                        t.unlink()
                    os.rename(s, t)
                for dn in list(dirs):
                    s = Path(root) / dn
                    if s.is_symlink():
                        t = dst / rel / dn
                        if not (t.exists() or t.is_symlink()):
                            os.rename(s, t)
                        dirs.remove(dn)


def needed(path):
    """The DT_NEEDED names and the RUNPATH/RPATH entries of an ELF file (([], []) for
    anything else)."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return [], []
    out = subprocess.run(["readelf", "-d", "-W", str(path)], capture_output=True, text=True).stdout
    value = lambda l: l.split("[", 1)[1].rsplit("]", 1)[0]
    names = [value(l) for l in out.splitlines() if "(NEEDED)" in l]
    runpath = [p for l in out.splitlines() if "(RUNPATH)" in l or "(RPATH)" in l
               for p in value(l).split(":") if p]
    return names, runpath


def closure(tree, roots, arch, exclude=(), provided=None):
    """Relative paths of `roots` (globs) and of every shared library they need, directly
    or not, found where the runtime's loader looks (lib/TRIPLET, lib, lib64), with the
    symlinks on the way. A library found nowhere is an error naming who needs it. With
    `provided` (the tree of the runtime an extension extends), a library that tree has
    is left to it: the extension carries only what the runtime lacks."""
    dirs = [f"lib/{TRIPLET[arch]}", "lib", "lib64"]
    todo = []
    for root, _, files in os.walk(tree):
        for f in files:
            rel = str((Path(root) / f).relative_to(tree))
            if any(fnmatch.fnmatchcase(rel, g) for g in roots) and \
                    not any(fnmatch.fnmatchcase(rel, g) for g in exclude):
                todo.append(rel)
    unmatched = [g for g in roots if not any(fnmatch.fnmatchcase(t, g) for t in todo)]
    if unmatched:
        die(f"nothing matched libraries {unmatched}")
    found = set()
    while todo:
        rel = todo.pop()
        if rel in found:
            continue
        found.add(rel)
        p = tree / rel
        if not (p.exists() or p.is_symlink()):
            die(f"{rel} is needed (a link or a root points at it), but none of the packages ships it")
        # A symlink keeps its target (relative to the tree) with it.
        if p.is_symlink():
            todo.append(link_target(rel, os.readlink(p)))
            continue
        names, runpath = needed(p)
        # RUNPATH entries as the runtime sees them: $ORIGIN is the file's directory; an
        # absolute /usr/X or /X is X in the tree (which is mounted at /usr).
        search = []
        for r in runpath:
            r = r.replace("$ORIGIN", "/usr/" + str(Path(rel).parent)).replace("${ORIGIN}", "/usr/" + str(Path(rel).parent))
            r = os.path.normpath(r)
            search.append(r[len("/usr/"):] if r.startswith("/usr/") else r.lstrip("/"))
        for name in names:
            if provided is not None and any((provided / d / name).exists() for d in dirs):
                continue
            hit = next((f"{d}/{name}" for d in search + dirs if (tree / d / name).exists()), None)
            if hit is None:
                die(f"{rel} needs {name}, which none of the packages ships: add its package")
            todo.append(hit)
    return found


def link_target(rel, target):
    """The tree-relative path a link at `rel` points at, as the runtime sees it mounted at
    /usr: an absolute /usr/X or /X (merged /usr) is X, a relative target is resolved
    beside the link."""
    if target.startswith("/"):
        target = target[len("/usr/"):] if target.startswith("/usr/") else target.lstrip("/")
        return os.path.normpath(target)
    return os.path.normpath(str(Path(rel).parent / target))


def dangling_links(tree):
    """Links in the tree whose target (as the runtime sees it at /usr) is not there."""
    out = []
    for root, dirs, files in os.walk(tree):
        for f in files + dirs:
            p = Path(root) / f
            if not p.is_symlink():
                continue
            t = os.readlink(p)
            if t.startswith("/") and not t.startswith(("/usr/", "/lib", "/bin", "/sbin")):
                continue
            target = tree / link_target(str(p.relative_to(tree)), t)
            if not (target.exists() or target.is_symlink()):
                out.append(str(p.relative_to(tree)))
    return sorted(out)


def trim(tree, keep, extra=frozenset(), exclude=()):
    kept = set()
    for root, dirs, files in os.walk(tree, topdown=False):
        for f in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            p = Path(root) / f
            rel = str(p.relative_to(tree))
            if any(fnmatch.fnmatchcase(rel, g) for g in exclude):
                p.unlink()
            elif rel in extra or any(fnmatch.fnmatchcase(rel, g) for g in keep):
                kept.add(rel)
            else:
                p.unlink()
        for d in dirs:
            p = Path(root) / d
            if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
                p.rmdir()
    return kept


def load(path, arch, seen=()):
    """A definition, with its `base` definitions (files beside it; one or a list) folded
    in: an Sdk is its Platform plus the compiler, headers and pkg-config files. Lists are
    concatenated without repeats; in [etc] the definition wins, then the first base.
    `@GNU_TYPE@` in package names is the target's GNU type with dashes
    (x86-64-linux-gnu): binutils' package."""
    if path in seen:
        die(f"{path}: base definitions form a loop")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        die(f"{path}: {e}")
    unknown = set(d) - ALLOWED
    if unknown:
        die(f"{path}: unknown keys {sorted(unknown)}")
    gnu_type = TRIPLET[arch].replace("_", "-")
    d["packages"] = [p.replace("@GNU_TYPE@", gnu_type) for p in d.get("packages", [])]
    bases = d.pop("base", [])
    for name in [bases] if isinstance(bases, str) else bases:
        b = load(path.parent / name, arch, seen + (path,))
        for k in EXTENDS:
            if k == "etc":
                d[k] = {**b.get(k, {}), **d.get(k, {})}
            else:
                mine = d.get(k, [])
                d[k] = [x for x in b.get(k, []) if x not in mine] + mine
        for k in ("branch", "version"):
            if k in b:
                d.setdefault(k, b[k])
    kind = d.setdefault("kind", "runtime")
    if kind not in ("runtime", "extension"):
        die(f"{path}: kind must be \"runtime\" or \"extension\", not {kind!r}")
    if kind == "extension":
        if "extends" not in d or "extension" not in d:
            die(f"{path}: an extension names the runtime definition it `extends` and has an [extension] table")
        unknown = set(d["extension"]) - EXTENSION_KEYS
        if unknown:
            die(f"{path}: [extension]: unknown keys {sorted(unknown)}")
        if "mount-point" not in d["extension"]:
            die(f"{path}: [extension]: missing mount-point")
        d["extends"] = load(path.parent / d["extends"], arch, seen + (path,))
    elif "extends" in d or "extension" in d:
        die(f"{path}: `extends` and [extension] are for kind = \"extension\"")
    return d


def toml_value(v):
    """A TOML value for strings, lists of strings and tables of those (JSON's string
    escapes are TOML's for these)."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    die(f"unsupported value {v!r} in [extension]")


def extension_manifest(d, version, arch):
    """The input manifest of an extension: its [extension] table with `@TRIPLET@` made
    the target's multiarch triplet, and `extends` the extended runtime's ID/ARCH/BRANCH."""
    rt = d["extends"]
    sub = lambda v: v.replace("@TRIPLET@", TRIPLET[arch]) if isinstance(v, str) else [sub(x) for x in v]
    x = d["extension"]
    out = (f'id = "{d["id"]}"\nkind = "extension"\nversion = "{version}"\narch = "{arch}"\n'
           f'branch = "{d["branch"]}"\n\n[extension]\nextends = "{rt["id"]}/{arch}/{rt["branch"]}"\n')
    for k in ("mount-point", "library-path"):
        if k in x:
            out += f"{k} = {toml_value(sub(x[k]))}\n"
    for table in ("conditions", "env"):
        if x.get(table):
            out += f"\n[extension.{table}]\n"
            for k, v in sorted(x[table].items()):
                out += f"{json.dumps(k) if not k.replace('-', '').replace('_', '').isalnum() else k} = {toml_value(sub(v))}\n"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("definition")
    ap.add_argument("--arch", default=os.uname().machine)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=os.environ.get("APPMGR_DEB_CACHE", "/var/cache/appmgr-debs"))
    ap.add_argument("--version", help="override the definition's version")
    ap.add_argument("--runtime", help="an extension: the built runtime it extends (build.py's --out "
                    "of that runtime); libraries it has are not copied")
    a = ap.parse_args()
    if a.arch not in DEB_ARCH:
        die(f"unsupported arch {a.arch}")
    d = load(Path(a.definition), a.arch)
    absent = [k for k in ("id", "branch", "version", "packages") if not d.get(k)]
    if absent:
        die(f"{a.definition}: missing {absent} (in the definition or its base)")
    provided = None
    if d["kind"] == "extension":
        if not a.runtime:
            die(f"{a.definition}: an extension is built against its runtime: pass --runtime DIR "
                f"(the output of building {d['extends']['id']})")
        provided = Path(a.runtime) / "files"
        try:
            built = tomllib.loads((Path(a.runtime) / "manifest.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            die(f"--runtime {a.runtime}: not a built runtime ({e})")
        if (built.get("id"), built.get("arch")) != (d["extends"]["id"], a.arch):
            die(f"--runtime {a.runtime} is {built.get('id')}/{built.get('arch')}, the extension "
                f"extends {d['extends']['id']}/{a.arch}")
    out = Path(a.out)
    tree = out / "files"
    stage = out / "stage"
    shutil.rmtree(out, ignore_errors=True)
    stage.mkdir(parents=True)
    tree.mkdir(parents=True)
    packages = []
    for deb in fetch(d["packages"], DEB_ARCH[a.arch], Path(a.cache) / DEB_ARCH[a.arch]):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(stage)], check=True)
        packages.append(deb_fields(deb))
    for p in packages:
        p["license"] = copyright_license(stage, p["name"])
    merge(stage, tree)
    shutil.rmtree(stage)
    # `libraries`: the shared libraries the runtime offers; with everything they need.
    # `exclude`: never kept, even when a glob above matches (a debugger's or a compiler
    # plugin's library that needs symbols only its host program defines).
    exclude = d.get("exclude", [])
    libs = (closure(tree, d["libraries"], a.arch, exclude, provided) if d.get("libraries")
            else frozenset())
    kept = trim(tree, d.get("keep", []), libs, exclude)
    dangling = dangling_links(tree)
    if dangling:
        die(f"kept links whose targets are not kept: {dangling[:10]} (keep the targets, or name "
            "the links in `libraries`, which keeps what they point at)")
    missing = [g for g in d.get("keep", []) if not any(fnmatch.fnmatchcase(k, g) for k in kept)
               and "*" not in g.split("/")[0] and not g.startswith(("lib64/", "lib/ld-"))]
    if missing:
        die(f"nothing matched keep patterns {missing}")
    # Extension points: empty directories an extension's tree is mounted in.
    for point in d.get("extension-points", []):
        if point.startswith("/") or ".." in point.split("/"):
            die(f"extension point {point!r} must be a relative path in the tree")
        (tree / point).mkdir(parents=True, exist_ok=True)
    for applet in d.get("busybox-applets", []):
        link = tree / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    etc = tree / "etc"
    if d["kind"] == "runtime":
        etc.mkdir(exist_ok=True)
    for name, content in d.get("etc", {}).items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(content)
    version = a.version or d["version"]
    if d["kind"] == "extension":
        (out / "manifest.toml").write_text(extension_manifest(d, version, a.arch))
    else:
        (out / "manifest.toml").write_text(
            f'id = "{d["id"]}"\nkind = "runtime"\nversion = "{version}"\narch = "{a.arch}"\nbranch = "{d["branch"]}"\n')
    (out / "sbom.cdx.json").write_text(json.dumps(sbom(d, version, a.arch, packages), indent=1) + "\n")
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"{d['kind']} {d['id']}/{a.arch}/{d['branch']} {version}: {len(kept)} files, {size} bytes in {tree}")


if __name__ == "__main__":
    main()
