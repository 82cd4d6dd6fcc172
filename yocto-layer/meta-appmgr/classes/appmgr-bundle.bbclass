# nooelint: oelint.bbclass.underscores - the class name integrators use (no EXPORT_FUNCTIONS here, which is what a dash would break)
# appmgr-bundle.bbclass: build a signed appmgr bundle from what a recipe installs.
#
# An app recipe builds its app for /app (like a Flatpak app: prefix /app), installs it
# into ${D}${APPMGR_BUNDLE_ROOT} and inherits this class. After do_install, the tree is
# signed into one bundle with the build machine's `appmgr` (appmgr-native):
#
#   appmgr bundle create --manifest M.toml --root ${D}/app --key ${APPMGR_SIGNING_KEY} ...
#
# and then
#   - the loose tree is removed from ${D} (it is only ever installed through appmgr);
#   - the bundle is deployed as ${DEPLOY_DIR_IMAGE}/ID-VERSION-ARCH.bundle (for FOTA);
#   - package ${PN}-bundle carries it for factory installation:
#       ${datadir}/appmgr/preinstall/ID.bundle
#       ${sysconfdir}/appmgr/preinstall.d/NN-ID.toml  (what to install at first boot)
#     Put it into an image with APPMGR_PREINSTALL (appmgr-image.bbclass) or IMAGE_INSTALL.
#
# The manifest (docs/bundle-format.md) comes from the recipe, e.g. SRC_URI +=
# "file://manifest.toml". Two placeholders are replaced: @APPMGR_ARCH@ (the target's
# arch in appmgr's spelling: x86_64, aarch64, armv7, i386, riscv64, ...) and
# @APPMGR_VERSION@ (APPMGR_BUNDLE_VERSION, default ${PV}: it must be a semantic version).
# The build fails if the manifest names another arch than the target's.
#
# APPMGR_BUNDLE_SBOM may name a CycloneDX 1.5 JSON SBOM of what the recipe built from
# (absolute path); the bundle then carries it under the signature, and `appmgr sbom`
# and `appmgr sbom query` answer from it on the device (docs/bundle-format.md#sbom).
#
# Runtime mode: a runtime made from an image's root file system (trimmed to the
# libraries it offers and what they need, with an SBOM of the Yocto packages it came
# from) is `inherit appmgr-runtime` instead (classes/appmgr-runtime.bbclass), which
# builds the tree, manifest and SBOM with appmgr's runtimes/build.py and then uses this
# class to sign, deploy and package it. A runtime tree the recipe installs itself (with
# kind = "runtime" in its manifest and APPMGR_BUNDLE_ROOT where it installed it) is
# signed by this class as it is.
#
# The signing key is the integrator's secret (PKCS#8 PEM, `appmgr key generate`), kept
# outside every layer: set APPMGR_SIGNING_KEY to its absolute path in local.conf or the
# CI environment. Its path is not part of the task signature (the same sstate serves
# every build machine); its content is (do_install[file-checksums]).

APPMGR_SIGNING_KEY ??= ""
APPMGR_BUNDLE_MANIFEST ??= "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}/manifest.toml"
APPMGR_BUNDLE_ROOT ??= "/app"
APPMGR_BUNDLE_VERSION ??= "${PV}"
APPMGR_BUNDLE_ARCH ??= "${@appmgr_bundle_arch(d)}"
# zstd or none
APPMGR_BUNDLE_COMPRESSION ??= "zstd"
# A CycloneDX 1.5 JSON SBOM to carry (absolute path); empty: none
APPMGR_BUNDLE_SBOM ??= ""
# Install order at first boot (the NN of preinstall.d/NN-ID.toml): empty means 20 for
# runtimes and 50 for apps, so runtimes go in before the apps that need them.
APPMGR_PREINSTALL_ORDER ??= ""

APPMGR_BUNDLE_WORKDIR = "${WORKDIR}/appmgr-bundle"
APPMGR_PREINSTALL_DIR = "${datadir}/appmgr/preinstall"
APPMGR_PREINSTALL_CONFDIR = "${sysconfdir}/appmgr/preinstall.d"

DEPENDS:append = " appmgr-native"

inherit deploy

def appmgr_bundle_arch(d):
    """TARGET_ARCH in appmgr's spelling (appmgr_types::Arch::host)."""
    arch = d.getVar('TARGET_ARCH')
    if arch in ('i386', 'i486', 'i586', 'i686', 'x86'):
        return 'i386'
    if arch in ('arm', 'armeb'):
        return 'armv7'
    return arch

appmgr_bundle_create[doc] = "Signs ${D}${APPMGR_BUNDLE_ROOT} into a bundle and stages it for ${PN}-bundle and do_deploy"
appmgr_bundle_create[vardepsexclude] = "APPMGR_SIGNING_KEY"
appmgr_bundle_create() {
    key="${APPMGR_SIGNING_KEY}"
    tree="${D}${APPMGR_BUNDLE_ROOT}"
    work="${APPMGR_BUNDLE_WORKDIR}"
    case "${APPMGR_BUNDLE_ROOT}" in
    /?*) ;;
    *) bbfatal "APPMGR_BUNDLE_ROOT='${APPMGR_BUNDLE_ROOT}': must be an absolute subdirectory of the install tree (D) such as /app" ;;
    esac
    [ -n "$key" ] || bbfatal "APPMGR_SIGNING_KEY is not set: give the absolute path of the bundle signing key (appmgr key generate --out NAME writes NAME.key)"
    [ -f "$key" ] || bbfatal "APPMGR_SIGNING_KEY: $key does not exist"
    [ -f "${APPMGR_BUNDLE_MANIFEST}" ] || bbfatal "no manifest at ${APPMGR_BUNDLE_MANIFEST} (APPMGR_BUNDLE_MANIFEST): add file://manifest.toml to SRC_URI"
    [ -d "$tree" ] || bbfatal "nothing was installed into ${APPMGR_BUNDLE_ROOT} of the install tree (APPMGR_BUNDLE_ROOT): that tree becomes the bundle"

    sbom="${APPMGR_BUNDLE_SBOM}"
    [ -z "$sbom" ] || [ -f "$sbom" ] || bbfatal "APPMGR_BUNDLE_SBOM: $sbom does not exist"

    rm -rf "$work"
    install -d "$work/config" "$work/state"
    sed -e "s|@APPMGR_ARCH@|${APPMGR_BUNDLE_ARCH}|g" \
        -e "s|@APPMGR_VERSION@|${APPMGR_BUNDLE_VERSION}|g" \
        "${APPMGR_BUNDLE_MANIFEST}" > "$work/manifest.toml"
    # An empty config and state dir: nothing of the build machine's /etc/appmgr counts.
    APPMGR_CONFIG_DIR="$work/config" APPMGR_STATE_DIR="$work/state" \
        appmgr --json bundle create --manifest "$work/manifest.toml" --root "$tree" \
        --key "$key" --out "$work/new.bundle" --compression "${APPMGR_BUNDLE_COMPRESSION}" \
        ${sbom:+--sbom "$sbom"} > "$work/create.json" || bbfatal "appmgr bundle create failed (the reason is above)"

    fields=$(python3 -c 'import json, sys; m = json.load(sys.stdin); print(m["id"], m["kind"], m["version"], m["arch"])' < "$work/create.json") \
        || bbfatal "cannot read appmgr's output $work/create.json"
    set -- $fields
    id="$1"
    kind="$2"
    version="$3"
    arch="$4"
    if [ "$arch" != "${APPMGR_BUNDLE_ARCH}" ]; then
        bbfatal "the manifest says arch = \"$arch\" but ${PN} is built for ${APPMGR_BUNDLE_ARCH}: write arch = \"@APPMGR_ARCH@\""
    fi
    mv "$work/new.bundle" "$work/$id-$version-$arch.bundle"
    bbnote "signed $kind $id $version ($arch): $id-$version-$arch.bundle"

    # The tree is installed through appmgr only, never as loose files.
    rm -rf "$tree"

    order="${APPMGR_PREINSTALL_ORDER}"
    if [ -z "$order" ]; then
        if [ "$kind" = runtime ]; then order=20; else order=50; fi
    fi
    sha=$(sha256sum "$work/$id-$version-$arch.bundle" | cut -d ' ' -f 1)
    install -d "${D}${APPMGR_PREINSTALL_DIR}" "${D}${APPMGR_PREINSTALL_CONFDIR}"
    install -m 0644 "$work/$id-$version-$arch.bundle" "${D}${APPMGR_PREINSTALL_DIR}/$id.bundle"
    {
        echo "# Factory installation of $id, written by appmgr-bundle.bbclass (${PN})."
        echo "bundle = \"${APPMGR_PREINSTALL_DIR}/$id.bundle\""
        echo "id = \"$id\""
        echo "kind = \"$kind\""
        echo "version = \"$version\""
        echo "sha256 = \"$sha\""
    } > "${D}${APPMGR_PREINSTALL_CONFDIR}/$order-$id.toml"
    chmod 0644 "${D}${APPMGR_PREINSTALL_CONFDIR}/$order-$id.toml"
}

do_install[postfuncs] += "appmgr_bundle_create"
do_install[file-checksums] += "${@'%s:%s' % (d.getVar('APPMGR_SIGNING_KEY'), os.path.exists(d.getVar('APPMGR_SIGNING_KEY'))) if d.getVar('APPMGR_SIGNING_KEY') else ''}"

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${APPMGR_BUNDLE_WORKDIR}/*.bundle ${DEPLOYDIR}/
}
addtask deploy after do_install before do_build

PACKAGES =+ "${PN}-bundle"
FILES:${PN}-bundle += "${APPMGR_PREINSTALL_DIR} ${APPMGR_PREINSTALL_CONFDIR}"
RDEPENDS:${PN}-bundle += "appmgr"
RRECOMMENDS:${PN}-bundle += "appmgr-trust-keys"
