# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (a runtime made of an image: no native variant, its packages carry their own CVE_PRODUCT)
SUMMARY = "Example appmgr runtime made from a Yocto image"
DESCRIPTION = "org.appmgr.example.Base: glibc, zlib and OpenSSL as built by this \
               Yocto build, trimmed to the libraries the definition names and what \
               they need, signed into a runtime bundle with an SBOM of the packages \
               it was made from. The template for a runtime recipe: copy it."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "examples"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - the definition carries no license text of its own
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://runtime.toml"

S = "${WORKDIR}"

inherit appmgr-runtime

APPMGR_RUNTIME_IMAGE = "appmgr-runtime-base-image"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# Nothing but the bundle is shipped.
ALLOW_EMPTY:${PN} = "1"
