# nooelint: oelint.bbclass.underscores - named like appmgr-bundle (no EXPORT_FUNCTIONS here, which is what a dash would break)
# appmgr-image.bbclass: an image with appmgr and factory-installed bundles.
#
#   inherit appmgr-image
#   APPMGR_PREINSTALL = "hello-app my-runtime"
#
# installs appmgr, its trusted keys (appmgr-trust-keys) and, for each recipe named in
# APPMGR_PREINSTALL (recipes that inherit appmgr-bundle), its ${PN}-bundle package:
# the bundle in /usr/share/appmgr/preinstall/ID.bundle and its entry in
# /etc/appmgr/preinstall.d/NN-ID.toml, which appmgr installs at first boot.
#
# After the root file system is assembled, every preinstall entry is checked against
# the image itself (APPMGR_IMAGE_VERIFY = "1", the default): the bundle file exists, its
# sha256 matches, and `appmgr bundle verify` accepts its signature with the keys in the
# image's own /etc/appmgr/trust.d. So an image whose factory bundles its devices would
# refuse (unsigned, signed with another key, out of a key's scope) fails to build.

APPMGR_PREINSTALL ??= ""
APPMGR_IMAGE_VERIFY ??= "1"

IMAGE_INSTALL:append = " appmgr appmgr-trust-keys ${@' '.join('%s-bundle' % r for r in (d.getVar('APPMGR_PREINSTALL') or '').split())}"

do_rootfs[depends] += "${@'appmgr-native:do_populate_sysroot' if d.getVar('APPMGR_IMAGE_VERIFY') == '1' else ''}"

appmgr_image_verify_preinstall[doc] = "Checks every factory bundle of the image against the image's own trusted keys"
appmgr_image_verify_preinstall() {
    if [ "${APPMGR_IMAGE_VERIFY}" != "1" ]; then
        return 0
    fi
    confdir="${IMAGE_ROOTFS}${sysconfdir}/appmgr"
    work="${WORKDIR}/appmgr-image-verify"
    rm -rf "$work"
    install -d "$work"
    for entry in "$confdir"/preinstall.d/*.toml; do
        [ -e "$entry" ] || continue
        name=$(basename "$entry")
        bundle=$(sed -n 's/^bundle = "\(.*\)"$/\1/p' "$entry")
        want=$(sed -n 's/^sha256 = "\(.*\)"$/\1/p' "$entry")
        [ -n "$bundle" ] || bbfatal "preinstall.d/$name: no bundle = \"...\" line"
        [ -f "${IMAGE_ROOTFS}$bundle" ] || bbfatal "preinstall.d/$name: $bundle is not in the image"
        have=$(sha256sum "${IMAGE_ROOTFS}$bundle" | cut -d ' ' -f 1)
        [ -z "$want" ] || [ "$want" = "$have" ] || bbfatal "preinstall.d/$name: $bundle has sha256 $have, the entry says $want"
        APPMGR_CONFIG_DIR="$confdir" APPMGR_STATE_DIR="$work/state" \
            appmgr bundle verify "${IMAGE_ROOTFS}$bundle" > "$work/$name.log" 2>&1 \
            || bbfatal "preinstall.d/$name: the image would refuse $bundle: $(cat "$work/$name.log") (trusted keys: appmgr-trust-keys)"
        bbnote "preinstall.d/$name: $bundle verified with the image's trusted keys"
    done
}

ROOTFS_POSTPROCESS_COMMAND += "appmgr_image_verify_preinstall"
