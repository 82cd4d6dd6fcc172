#!/usr/bin/env python3
"""Builds a runtime tree (what an app sees at /usr) from Debian packages.

    runtimes/build.py runtimes/headless.toml --arch x86_64 --out DIR [--cache DIR]
    runtimes/build.py runtimes/gl-llvmpipe.toml --arch x86_64 --out DIR2 --runtime DIR
    runtimes/build.py DEF.toml --sysroot ROOTFS --pkgdata PKGDATA_DIR \
        [--image-manifest FILE] --arch ARCH --out DIR      (from a Yocto build, below)

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
import codecs
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from urllib.parse import quote

DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
ALLOWED = {"id", "branch", "version", "description", "base", "packages", "keep", "libraries",
           "exclude", "busybox-applets", "etc", "extension-points", "kind", "extends", "extension",
           "packages-x86_64", "packages-aarch64"}
# Keys a definition with `base` adds to its base's (lists are concatenated, [etc] merged).
EXTENDS = {"packages", "keep", "libraries", "exclude", "busybox-applets", "etc", "extension-points"}
# What an extension definition's [extension] table may hold (the manifest's, less
# `extends`, which build.py writes from the extended runtime's definition).
EXTENSION_KEYS = {"mount-point", "library-path", "conditions", "env"}
TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}


def die(msg):
    print(f"build.py: {msg}", file=sys.stderr)
    sys.exit(1)


def arch_all(pkgs):
    """The packages among `pkgs` whose candidate is `Architecture: all` (one apt-cache call)."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs], capture_output=True, text=True)
    out, name = set(), None
    for line in r.stdout.splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1].strip()
        elif line.strip() == "Architecture: all" and name:
            out.add(name)
    return out


def fetch(pkgs, deb_arch, cache):
    """The .deb of each package, from the cache; the missing ones are downloaded with one
    `apt-get download` (one apt start-up, not one per package: a cold build of a driver
    extension fetches dozens)."""
    cache.mkdir(parents=True, exist_ok=True)
    cached = lambda p: sorted(cache.glob(f"{p}_*_{deb_arch}.deb")) + sorted(cache.glob(f"{p}_*_all.deb"))
    missing = [p for p in pkgs if not cached(p)]
    if missing:
        # An `Architecture: all` package (tzdata) has no `NAME:ARCH` for a foreign arch:
        # apt-get refuses `tzdata:arm64` on an amd64 host, so a cross build asks for it
        # by its plain name.
        indep = arch_all(missing)
        specs = [p if p in indep else f"{p}:{deb_arch}" for p in missing]
        subprocess.run(["apt-get", "download", "-q", *specs], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
    debs = []
    for p in pkgs:
        found = cached(p)
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
    return sbom_document(d, version, arch, comps, "appmgr runtimes/build.py")


def sbom_document(d, version, arch, comps, tool):
    """The CycloneDX 1.5 envelope around `comps`: no timestamp, a serial number derived
    from the content, so the same inputs give the same bytes."""
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
            "tools": {"components": [{"type": "application", "name": tool}]},
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
    # READELF: bitbake exports the cross readelf to tasks; any readelf reads any ELF.
    out = subprocess.run([os.environ.get("READELF") or "readelf", "-d", "-W", str(path)],
                         capture_output=True, text=True).stdout
    value = lambda l: l.split("[", 1)[1].rsplit("]", 1)[0]
    names = [value(l) for l in out.splitlines() if "(NEEDED)" in l]
    runpath = [p for l in out.splitlines() if "(RUNPATH)" in l or "(RPATH)" in l
               for p in value(l).split(":") if p]
    return names, runpath


def closure(tree, roots, arch, exclude=(), provided=None,
            missing="which none of the packages ships: add its package"):
    """Relative paths of `roots` (globs) and of every shared library they need, directly
    or not, found where the runtime's loader looks (lib/TRIPLET, lib, lib64), with the
    symlinks on the way. A library found nowhere is an error naming who needs it (and
    `missing`, what to do about it). With `provided` (the tree of the runtime an
    extension extends), a library that tree has is left to it: the extension carries only
    what the runtime lacks."""
    dirs = ([f"lib/{TRIPLET[arch]}"] if arch in TRIPLET else []) + ["lib", "lib64"]
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
                die(f"{rel} needs {name}, {missing}")
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


def trim_checked(tree, d, libs, exclude):
    """`trim` with the definition's `keep`, then the checks both build paths make: no kept
    link may dangle, and every literal `keep` pattern must have matched something."""
    kept = trim(tree, d.get("keep", []), libs, exclude)
    dangling = dangling_links(tree)
    if dangling:
        die(f"kept links whose targets are not kept: {dangling[:10]} (keep the targets, or name "
            "the links in `libraries`, which keeps what they point at)")
    missing = [g for g in d.get("keep", []) if not any(fnmatch.fnmatchcase(k, g) for k in kept)
               and "*" not in g.split("/")[0] and not g.startswith(("lib64/", "lib/ld-"))]
    if missing:
        die(f"nothing matched keep patterns {missing}")
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
    gnu_type = TRIPLET.get(arch, f"{arch}-linux-gnu").replace("_", "-")
    # `packages-ARCH`: packages only that architecture has (Mesa's Intel libdrm on x86_64).
    d["packages"] = d.get("packages", []) + d.get(f"packages-{arch}", [])
    for k in [k for k in d if k.startswith("packages-")]:
        del d[k]
    d["packages"] = [p.replace("@GNU_TYPE@", gnu_type) for p in d["packages"]]
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


# ------------------------------------------------------------------ Yocto sysroot
# A runtime built from what a Yocto build produced instead of Debian packages: the files
# of an image's root file system (or any sysroot laid out like one) and, for the SBOM,
# the package data bitbake leaves in PKGDATA_DIR (oe-core meta/lib/oe/packagedata.py):
#   runtime/PKG           one file per package, named as the recipe names it (before
#                         debian.bbclass renames it), "KEY: value" lines, values
#                         unicode-escaped: PN (the recipe), PV, PR, PKGE/PKGV/PKGR,
#                         LICENSE, PKG:PKG (the name it is installed as) and
#                         FILES_INFO:PKG (JSON: each file it ships -> size)
#   runtime-reverse/NAME  a link to runtime/PKG under the installed name
# and the image's manifest (IMAGE_MANIFEST: "NAME ARCH VERSION" per installed package).
# The tree gets the same merge, library closure, trimming and link checks as the Debian
# path, and the SBOM the same shape.

YOCTO_ARCHES = {"x86_64", "aarch64", "armv7", "i386", "riscv64"}
# What merge() takes into the /usr tree (from / and from /usr).
MERGED_TOPS = ("lib", "lib64", "bin", "sbin", "share", "libexec", "include")


def pkgdata_file(path):
    """The KEY: value pairs of one pkgdata file, unescaped as bitbake reads them."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"(.+?):\s+(.*)", line)
        if m:
            out[m.group(1)] = codecs.decode(m.group(2), "unicode_escape")
    return out


def image_manifest(path):
    """NAME -> (ARCH, VERSION) of an image manifest."""
    installed = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        die(f"image manifest {path}: {e.strerror}")
    for n, line in enumerate(lines, 1):
        f = line.split()
        if not f:
            continue
        if len(f) != 3:
            die(f"{path}:{n}: not NAME ARCH VERSION: {line!r}")
        installed[f[0]] = (f[1], f[2])
    return installed


def yocto_packages(pkgdata, manifest):
    """The packages of PKGDATA_DIR, by installed name (only those the image manifest lists,
    when there is one): name, recipe, version, recipe version, license, arch, files."""
    rt = pkgdata / "runtime"
    if not rt.is_dir():
        die(f"{pkgdata} has no runtime/ directory: not a Yocto PKGDATA_DIR")
    installed = image_manifest(manifest) if manifest else None
    pkgs = {}
    for f in sorted(rt.iterdir()):
        if not f.is_file() or f.name.endswith(".packaged"):
            continue
        v = pkgdata_file(f)
        if "PN" not in v:
            continue  # a multilib variant's alias file: PKG only
        pkg = f.name
        var = lambda k: v.get(f"{k}:{pkg}", v.get(k))  # noqa: E731 (per-package value first)
        name = var("PKG") or pkg
        if installed is not None and name not in installed:
            continue
        if name in pkgs:
            die(f"{pkgdata}: {pkgs[name]['pkgdata']} and {pkg} are both installed as {name}")
        try:
            files = json.loads(var("FILES_INFO") or "{}")
        except json.JSONDecodeError as e:
            die(f"{f}: FILES_INFO is not JSON: {e}")
        epoch = var("PKGE") or var("PE")
        version = f"{epoch + ':' if epoch else ''}{var('PKGV') or var('PV')}-{var('PKGR') or var('PR')}"
        arch = None
        if installed is not None:
            arch, version = installed[name]
        pkgs[name] = {"name": name, "pkgdata": pkg, "recipe": v["PN"], "version": version,
                      "pv": v.get("PV", ""), "recipe-version": f"{v.get('PV', '')}-{v.get('PR', '')}".strip("-"),
                      "license": var("LICENSE"), "arch": arch, "files": files}
    if installed is not None:
        unknown = sorted(set(installed) - set(pkgs))
        if unknown:
            die(f"{manifest} lists {unknown[:10]}, which {pkgdata}/runtime does not describe: "
                "give the PKGDATA_DIR of the build that made the image")
    return pkgs


def tree_path(path):
    """Where a file of the root file system lands in the /usr tree (merge()), or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["usr"]:
        parts = parts[1:]
    if len(parts) > 1 and parts[0] in MERGED_TOPS:
        return "/".join(parts)
    return None


def copy_sysroot(sysroot, stage):
    """The parts of `sysroot` merge() takes, copied (the sysroot is not ours to change).
    A top directory that is a link (merged /usr: /lib -> usr/lib) is skipped, as merge()
    skips it; device nodes, FIFOs and sockets are never copied."""
    def specials(root, names):
        return [n for n in names if not (os.path.islink(os.path.join(root, n)) or
                                         os.path.isdir(os.path.join(root, n)) or
                                         os.path.isfile(os.path.join(root, n)))]
    for top in ["", "usr"]:
        for sub in MERGED_TOPS:
            src = sysroot / top / sub
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, stage / top / sub, symlinks=True, ignore=specials)


def yocto_license(lic):
    """A CycloneDX license entry for a Yocto LICENSE: `&` and `|` are SPDX's AND and OR."""
    if not lic:
        return None
    if any(c in lic for c in "&|()"):
        expr = re.sub(r"\s+", " ", lic.replace("&", " AND ").replace("|", " OR ")).strip()
        expr = expr.replace("( ", "(").replace(" )", ")")
        return [{"expression": expr}]
    return [{"license": {"name": lic.strip()}}]


def sysroot_sbom(d, version, arch, packages):
    """The SBOM of a sysroot runtime, shaped as sbom() shapes the Debian one. purl:
    `pkg:yocto/RECIPE@PV` (the purl type for Yocto recipes; its namespace, the layer, is
    left out: pkgdata does not record it), the installed package arch as a qualifier."""
    comps = []
    for p in sorted(packages, key=lambda p: p["name"]):
        purl = f"pkg:yocto/{quote(p['recipe'], safe='')}@{quote(p['pv'], safe='')}"
        if p.get("arch"):
            purl += f"?arch={quote(p['arch'], safe='')}"
        c = {"type": "library", "bom-ref": f"yocto-package:{p['name']}@{p['version']}",
             "name": p["name"], "version": p["version"], "purl": purl}
        lic = yocto_license(p.get("license"))
        if lic:
            c["licenses"] = lic
        c["properties"] = [{"name": "appmgr:source-package", "value": p["recipe"]},
                           {"name": "appmgr:source-version", "value": p["recipe-version"]}]
        comps.append(c)
    return sbom_document(d, version, arch, comps, "appmgr runtimes/build.py (Yocto sysroot)")


def build_from_sysroot(a):
    """`--sysroot DIR --pkgdata DIR [--image-manifest FILE]`: the runtime from a Yocto
    image's root file system. `packages` in the definition are installed package names
    that must be in it; the SBOM lists every package that ships a kept file. On any
    error nothing is left in --out."""
    if not (a.sysroot and a.pkgdata):
        die("--sysroot and --pkgdata go together: the files, and the package data that says "
            "which package each file came from (for the SBOM)")
    if a.arch not in YOCTO_ARCHES:
        die(f"unsupported arch {a.arch} (one of {sorted(YOCTO_ARCHES)})")
    sysroot, pkgdata = Path(a.sysroot), Path(a.pkgdata)
    if not sysroot.is_dir():
        die(f"sysroot {sysroot} is not a directory")
    d = load(Path(a.definition), a.arch)
    if d["kind"] != "runtime":
        die(f"{a.definition}: --sysroot builds runtimes; build an extension from Debian packages "
            "(--runtime) or as a runtime-shaped tree")
    absent = [k for k in ("id", "branch", "version") if not d.get(k)]
    if absent:
        die(f"{a.definition}: missing {absent} (in the definition or its base)")
    pkgs = yocto_packages(pkgdata, a.image_manifest)
    not_there = [p for p in d.get("packages", []) if p not in pkgs]
    if not_there:
        die(f"{a.definition}: packages {not_there} are not installed in {sysroot} "
            f"(according to {a.image_manifest or pkgdata}): add them to the image")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    try:
        sysroot_tree(d, a, sysroot, pkgdata, pkgs, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def sysroot_tree(d, a, sysroot, pkgdata, pkgs, out):
    tree, stage = out / "files", out / "stage"
    stage.mkdir(parents=True)
    tree.mkdir(parents=True)
    copy_sysroot(sysroot, stage)
    merge(stage, tree)
    shutil.rmtree(stage)
    exclude = d.get("exclude", [])
    libs = closure(tree, d["libraries"], a.arch, exclude,
                   missing=f"which is not in the sysroot {sysroot}: add the package that ships it "
                           "to the image the runtime is built from") if d.get("libraries") else frozenset()
    kept = trim_checked(tree, d, libs, exclude)
    # Which package each kept file came from: every regular file must have one, or the
    # SBOM would miss what it was built from (a file a postinst made, or a foreign one).
    owners = {}
    for p in pkgs.values():
        for f in p["files"]:
            rel = tree_path(f)
            if rel:
                owners.setdefault(rel, set()).add(p["name"])
    unowned = sorted(k for k in kept if not (tree / k).is_symlink() and k not in owners)
    if unowned:
        die(f"{unowned[:10]} are in the sysroot but no installed package ships them "
            f"(FILES_INFO in {pkgdata}/runtime): the SBOM could not name their source")
    used = sorted({n for k in kept for n in owners.get(k, ())})
    for applet in d.get("busybox-applets", []):
        link = tree / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    etc = tree / "etc"
    etc.mkdir(exist_ok=True)
    for name, content in d.get("etc", {}).items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(content)
    version = a.version or d["version"]
    (out / "sbom.cdx.json").write_text(
        json.dumps(sysroot_sbom(d, version, a.arch, [pkgs[n] for n in used]), indent=1) + "\n")
    # Last: manifest.toml is what says the build is complete.
    (out / "manifest.toml").write_text(
        f'id = "{d["id"]}"\nkind = "runtime"\nversion = "{version}"\narch = "{a.arch}"\nbranch = "{d["branch"]}"\n')
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"runtime {d['id']}/{a.arch}/{d['branch']} {version}: {len(kept)} files, {size} bytes, "
          f"{len(used)} packages, from {sysroot}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("definition")
    ap.add_argument("--arch", default=os.uname().machine)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=os.environ.get("APPMGR_DEB_CACHE", "/var/cache/appmgr-debs"))
    ap.add_argument("--version", help="override the definition's version")
    ap.add_argument("--runtime", help="an extension: the built runtime it extends (build.py's --out "
                    "of that runtime); libraries it has are not copied")
    # A Yocto sysroot or image root file system instead of Debian packages (below).
    ap.add_argument("--sysroot", help="build from this Yocto image rootfs / sysroot")
    ap.add_argument("--pkgdata", help="with --sysroot: Yocto's PKGDATA_DIR (for the SBOM)")
    ap.add_argument("--image-manifest", help="with --sysroot: the image's package manifest")
    a = ap.parse_args()
    if a.sysroot or a.pkgdata or a.image_manifest:
        return build_from_sysroot(a)
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
    kept = trim_checked(tree, d, libs, exclude)
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
