# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (no BBCLASSEXTEND: the build machine needs no trusted keys, signing uses the secret
# key; no CVE_PRODUCT: data only)
SUMMARY = "Public keys appmgr trusts to sign app and runtime bundles"
DESCRIPTION = "Installs the integrator's bundle signing public keys (SPKI PEM) as \
               /etc/appmgr/trust.d/NAME.pub, each with an optional NAME.scope \
               (one app-ID glob per line) that limits what the key may sign."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "admin"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - the keys are the integrator's data, with no license text
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# Two ways to give the keys (both may be used):
# - a bbappend in the integrator's layer: SRC_URI += "file://oem-apps.pub file://oem-apps.scope"
#   (with FILESEXTRAPATHS:prepend := "${THISDIR}/files:"); every fetched *.pub and
#   *.scope is installed;
# - APPMGR_TRUST_KEYS in local.conf or a distro/machine conf: absolute paths of NAME.pub
#   files on the build machine; a NAME.scope beside one is installed with it.
SRC_URI = ""
APPMGR_TRUST_KEYS ?= ""

inherit allarch

INHIBIT_DEFAULT_DEPS = "1"

APPMGR_TRUST_SRCDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
# The *.pub and *.scope files of SRC_URI, relative to where they are unpacked.
APPMGR_TRUST_FETCHED = "${@' '.join(sorted(u.split(';')[0][len('file://'):] for u in (d.getVar('SRC_URI') or '').split() if u.startswith('file://') and u.split(';')[0].endswith(('.pub', '.scope'))))}"
# Keys from paths: their content is part of the task signature, so a changed key rebuilds.
do_install[file-checksums] += "${@' '.join('%s:%s' % (p, os.path.exists(p)) for k in (d.getVar('APPMGR_TRUST_KEYS') or '').split() for p in (k, k[:-len('.pub')] + '.scope'))}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

appmgr_trust_install[doc] = "Checks one NAME.pub or NAME.scope file and installs it into trust.d"
appmgr_trust_install() {
    src="$1"
    dest=${D}${sysconfdir}/appmgr/trust.d
    f=$(basename "$src")
    case "$f" in
    *.pub) name="${f%.pub}" ;;
    *.scope) name="${f%.scope}" ;;
    *) bbfatal "$src: trusted key files are NAME.pub or NAME.scope" ;;
    esac
    # appmgr silently ignores trust.d files whose NAME it does not accept: refuse them here.
    if ! echo "$name" | grep -qE '^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$'; then
        bbfatal "$src: key name '$name': use 1 to 64 letters, digits, _ - ., not starting with ."
    fi
    if grep -q "PRIVATE KEY" "$src"; then
        bbfatal "$src holds a PRIVATE key: only public keys (appmgr key generate writes NAME.pub) may go into an image"
    fi
    case "$f" in
    *.pub)
        if [ "$(head -n 1 "$src")" != "-----BEGIN PUBLIC KEY-----" ]; then
            bbfatal "$src: not a SubjectPublicKeyInfo PEM public key (-----BEGIN PUBLIC KEY-----)"
        fi
        ;;
    esac
    install -m 0644 "$src" "$dest/$f"
}

do_install() {
    install -d ${D}${sysconfdir}/appmgr/trust.d
    for f in ${APPMGR_TRUST_FETCHED}; do
        appmgr_trust_install "${APPMGR_TRUST_SRCDIR}/$f"
    done
    for k in ${APPMGR_TRUST_KEYS}; do
        case "$k" in
        /*.pub) ;;
        *) bbfatal "APPMGR_TRUST_KEYS: '$k' is not an absolute path of a NAME.pub file" ;;
        esac
        [ -f "$k" ] || bbfatal "APPMGR_TRUST_KEYS: $k does not exist"
        appmgr_trust_install "$k"
        if [ -f "${k%.pub}.scope" ]; then
            appmgr_trust_install "${k%.pub}.scope"
        fi
    done
    for s in ${D}${sysconfdir}/appmgr/trust.d/*.scope; do
        [ -e "$s" ] || continue
        [ -f "${s%.scope}.pub" ] || bbfatal "$(basename "$s") has no matching .pub"
    done
    if ! ls ${D}${sysconfdir}/appmgr/trust.d/*.pub >/dev/null 2>&1; then
        bbwarn "appmgr-trust-keys: no key given (APPMGR_TRUST_KEYS or SRC_URI): appmgr on this image will refuse every bundle until a key is added with 'appmgr trust add'"
    fi
}

ALLOW_EMPTY:${PN} = "1"
FILES:${PN} += "${sysconfdir}/appmgr/trust.d"
