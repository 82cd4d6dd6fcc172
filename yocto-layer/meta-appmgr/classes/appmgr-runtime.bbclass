# nooelint: oelint.bbclass.underscores - named like appmgr-bundle (no EXPORT_FUNCTIONS here, which is what a dash would break)
# appmgr-runtime.bbclass: a signed appmgr runtime bundle made from a Yocto image.
#
#   inherit appmgr-runtime
#   SRC_URI = "file://runtime.toml"                  # the runtime definition
#   APPMGR_RUNTIME_IMAGE = "my-runtime-image"        # whose root file system it is made from
#
# The runtime mode of appmgr-bundle.bbclass (which this class inherits): instead of a tree
# the recipe installs, the bundle's tree is made by appmgr's runtimes/build.py from the
# root file system of an image recipe, the same way appmgr's own runtimes are made from
# Debian packages (docs/runtimes.md): merged /usr, the `libraries` and everything they
# need (DT_NEEDED, transitively; a library the image lacks fails the task, naming who
# needs it), the `keep` globs, nothing else. Its SBOM (CycloneDX 1.5) lists every package
# that ships a kept file, with version, license and recipe, from PKGDATA_DIR and the
# image's manifest; the bundle carries it under the signature. Then appmgr-bundle signs,
# deploys and packages it as for an app (${PN}-bundle, preinstall order 20).
#
# The image recipe (yocto-layer/examples/images/appmgr-runtime-base-image.bb) installs
# the packages the runtime is made of and writes a tar.zst root file system; this class
# waits for it (do_image_complete) and reads, from DEPLOY_DIR_IMAGE,
#   ${APPMGR_RUNTIME_IMAGE_LINK_NAME}.tar.zst     the root file system
#   ${APPMGR_RUNTIME_IMAGE_LINK_NAME}.manifest    the installed packages (IMAGE_MANIFEST)
# To build from another directory laid out like a root file system (a sysroot made some
# other way), set APPMGR_RUNTIME_ROOTFS and APPMGR_RUNTIME_MANIFEST instead.

inherit appmgr-bundle python3native

# The runtime definition (the format of appmgr's runtimes/*.toml; `packages` are
# installed package names the image must hold, e.g. libc6, libssl3).
APPMGR_RUNTIME_DEFINITION ??= "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}/runtime.toml"
# The image recipe whose root file system becomes the runtime.
APPMGR_RUNTIME_IMAGE ??= ""
# Its IMAGE_LINK_NAME (scarthgap's default: IMAGE_BASENAME-MACHINE.rootfs).
APPMGR_RUNTIME_IMAGE_LINK_NAME ??= "${APPMGR_RUNTIME_IMAGE}-${MACHINE}.rootfs"
# A root file system directory and its package manifest to use instead of the image's.
APPMGR_RUNTIME_ROOTFS ??= ""
APPMGR_RUNTIME_MANIFEST ??= ""
# appmgr's runtime builder, installed by appmgr-native.
APPMGR_RUNTIME_BUILD ??= "${STAGING_DATADIR_NATIVE}/appmgr/runtimes/build.py"
APPMGR_RUNTIME_WORKDIR = "${WORKDIR}/appmgr-runtime"

# What appmgr-bundle signs: the tree, manifest and SBOM build.py made.
APPMGR_BUNDLE_ROOT = "/runtime"
APPMGR_BUNDLE_MANIFEST = "${APPMGR_RUNTIME_WORKDIR}/out/manifest.toml"
APPMGR_BUNDLE_SBOM = "${APPMGR_RUNTIME_WORKDIR}/out/sbom.cdx.json"

# Made of one machine's image: as machine specific as that image.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# The image's root file system and manifest, and PKGDATA_DIR filled for its packages
# (do_rootfs depends on every installed package's do_packagedata).
do_install[depends] += "${@'%s:do_image_complete' % d.getVar('APPMGR_RUNTIME_IMAGE') if d.getVar('APPMGR_RUNTIME_IMAGE') else ''}"

appmgr_runtime_tree[doc] = "Makes ${D}${APPMGR_BUNDLE_ROOT}, its manifest and SBOM from the root file system of ${APPMGR_RUNTIME_IMAGE}"
appmgr_runtime_tree() {
    work="${APPMGR_RUNTIME_WORKDIR}"
    tree="${D}${APPMGR_BUNDLE_ROOT}"
    rootfs="${APPMGR_RUNTIME_ROOTFS}"
    manifest="${APPMGR_RUNTIME_MANIFEST}"
    [ -f "${APPMGR_RUNTIME_DEFINITION}" ] || bbfatal "no runtime definition at ${APPMGR_RUNTIME_DEFINITION} (APPMGR_RUNTIME_DEFINITION): add file://runtime.toml to SRC_URI"
    [ -d "${PKGDATA_DIR}/runtime" ] || bbfatal "PKGDATA_DIR ${PKGDATA_DIR} has no runtime/ directory: the SBOM is made from it"
    [ ! -e "$tree" ] || bbfatal "${APPMGR_BUNDLE_ROOT} of the install tree is made from the image here: do_install must not install into it"
    rm -rf "$work"
    install -d "$work"
    if [ -z "$rootfs" ]; then
        [ -n "${APPMGR_RUNTIME_IMAGE}" ] || bbfatal "set APPMGR_RUNTIME_IMAGE to the image recipe the runtime is made from (or APPMGR_RUNTIME_ROOTFS and APPMGR_RUNTIME_MANIFEST to a root file system and its package manifest)"
        archive="${DEPLOY_DIR_IMAGE}/${APPMGR_RUNTIME_IMAGE_LINK_NAME}.tar.zst"
        manifest="${DEPLOY_DIR_IMAGE}/${APPMGR_RUNTIME_IMAGE_LINK_NAME}.manifest"
        [ -f "$archive" ] || bbfatal "$archive does not exist: give ${APPMGR_RUNTIME_IMAGE} IMAGE_FSTYPES += \"tar.zst\" (or set APPMGR_RUNTIME_IMAGE_LINK_NAME to its IMAGE_LINK_NAME)"
        rootfs="$work/rootfs"
        install -d "$rootfs"
        tar -C "$rootfs" -I zstd -xf "$archive" || bbfatal "cannot unpack $archive"
    fi
    [ -d "$rootfs" ] || bbfatal "the root file system $rootfs is not a directory"
    [ -f "$manifest" ] || bbfatal "no package manifest of the image ($manifest): the SBOM is made from it"
    nativepython3 "${APPMGR_RUNTIME_BUILD}" "${APPMGR_RUNTIME_DEFINITION}" \
        --sysroot "$rootfs" --pkgdata "${PKGDATA_DIR}" --image-manifest "$manifest" \
        --arch "${APPMGR_BUNDLE_ARCH}" --version "${APPMGR_BUNDLE_VERSION}" --out "$work/out" \
        || bbfatal "appmgr's runtimes/build.py could not make the runtime from $rootfs (the reason is above)"
    install -d "$(dirname "$tree")"
    mv "$work/out/files" "$tree"
    # Only the trimmed tree goes on; the unpacked image is not needed any more.
    rm -rf "$work/rootfs"
}

# Before appmgr-bundle signs the tree.
do_install[postfuncs] =+ "appmgr_runtime_tree"
