# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (no BBCLASSEXTEND: machine configuration means nothing for native/nativesdk; no
# CVE_PRODUCT: no code of its own to match CVEs against)
SUMMARY = "Host settings of appmgr for this machine (/etc/appmgr/appmgr.toml)"
DESCRIPTION = "Writes /etc/appmgr/appmgr.toml from APPMGR_BOARD (the board \
               profile appmgr maps logical devices with) and APPMGR_UID_RANGE \
               (the uids given to apps). Machine specific, so it is a recipe of \
               its own and the appmgr binaries stay shareable between machines."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "admin"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - nothing is fetched that could carry a license text
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# Generated from variables: nothing to fetch, nothing to compile.
SRC_URI = ""
INHIBIT_DEFAULT_DEPS = "1"

# A profile name from /usr/share/appmgr/board-support (qemu-virt-aarch64,
# qemu-virt-x86_64, raspberry-pi-4, rk3588, imx8mp) or /etc/appmgr/board-support, or an
# absolute path to a profile. Empty: no board profile (no device is mapped).
APPMGR_BOARD ?= ""
# FIRST-LAST, e.g. "70000-79999". Empty: appmgr's default range.
APPMGR_UID_RANGE ?= ""

# The file differs per machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    board="${APPMGR_BOARD}"
    range="${APPMGR_UID_RANGE}"
    # Checked here so that a typo fails the build, not the first boot. The values end up
    # in TOML strings: nothing that could end the string is allowed.
    if [ -n "$board" ] && ! echo "$board" | grep -qE '^(/[A-Za-z0-9._/-]+\.toml|[A-Za-z0-9._-]+)$'; then
        bbfatal "APPMGR_BOARD='$board': expected a profile name (letters, digits, . _ -) or an absolute path to a .toml file"
    fi
    if [ -n "$range" ] && ! echo "$range" | grep -qE '^[0-9]+-[0-9]+$'; then
        bbfatal "APPMGR_UID_RANGE='$range': expected FIRST-LAST, e.g. 70000-79999"
    fi
    if [ -z "$board" ] && [ -z "$range" ]; then
        bbnote "APPMGR_BOARD and APPMGR_UID_RANGE are empty: no appmgr.toml, appmgr's defaults apply"
        return
    fi
    install -d ${D}${sysconfdir}/appmgr
    {
        echo "# Written at build time by the appmgr-config recipe (meta-appmgr)."
        [ -z "$board" ] || echo "board = \"$board\""
        [ -z "$range" ] || echo "uid-range = \"$range\""
    } > ${D}${sysconfdir}/appmgr/appmgr.toml
    chmod 0644 ${D}${sysconfdir}/appmgr/appmgr.toml
}

ALLOW_EMPTY:${PN} = "1"
FILES:${PN} += "${sysconfdir}/appmgr/appmgr.toml"
CONFFILES:${PN} += "${sysconfdir}/appmgr/appmgr.toml"
