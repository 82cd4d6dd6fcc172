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

def appmgr_config_value(d, var, pattern, example):
    """The value of VAR if it is empty or matches PATTERN, else a build failure.

    Checked in Python, before the shell sees it: the values end up inside TOML strings
    and shell words, so nothing that could end either is allowed."""
    import re
    value = d.getVar(var) or ''
    if value and not re.fullmatch(pattern, value):
        bb.fatal("%s=%r: expected %s" % (var, value, example))
    return value

do_install() {
    board="${@appmgr_config_value(d, 'APPMGR_BOARD', r'/[A-Za-z0-9._/-]+[.]toml|[A-Za-z0-9._-]+', 'a profile name (letters, digits, . _ -) or an absolute path to a .toml file')}"
    range="${@appmgr_config_value(d, 'APPMGR_UID_RANGE', r'[0-9]+-[0-9]+', 'FIRST-LAST, e.g. 70000-79999')}"
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
