# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (an example app: no native variant, no upstream product)
SUMMARY = "Example app shipped as a signed appmgr bundle"
DESCRIPTION = "A shell script app for the org.appmgr.Headless runtime, built into \
               a signed bundle by appmgr-bundle.bbclass: the template for an app \
               recipe. Copy it into your own layer."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "examples"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - the example's files carry no license text of their own
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://hello.sh \
           file://manifest.toml \
           "

S = "${WORKDIR}"

inherit appmgr-bundle

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# The app's tree goes into ${D}${APPMGR_BUNDLE_ROOT} (/app): appmgr-bundle signs it into
# a bundle after do_install, and ships that bundle in ${PN}-bundle. A recipe that builds
# with autotools/cmake/meson sets prefix = "/app" instead and keeps its do_install.
do_install() {
    install -d ${D}${APPMGR_BUNDLE_ROOT}/bin
    install -m 0755 ${S}/hello.sh ${D}${APPMGR_BUNDLE_ROOT}/bin/hello
}

# Nothing but the bundle is shipped.
ALLOW_EMPTY:${PN} = "1"
