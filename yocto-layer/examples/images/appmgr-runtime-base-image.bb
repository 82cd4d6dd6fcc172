# nooelint: oelint.var.suggestedvar.CVE_PRODUCT
# (an image: its packages carry their own CVE_PRODUCT)
SUMMARY = "Example: the packages of an appmgr runtime, as a root file system"
DESCRIPTION = "Not an image to boot: the Yocto-built packages that the \
               appmgr-runtime-base recipe makes the org.appmgr.example.Base \
               runtime from (glibc, zlib, OpenSSL). Its tar.zst root file system \
               and package manifest are what appmgr-runtime.bbclass reads."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "images"
LICENSE = "MIT"

inherit image

# The runtime's packages (their recipe-side names; the manifest has the installed ones,
# libz1, libssl3, ...) and nothing for booting: no kernel, no init, no package manager.
IMAGE_INSTALL = "zlib libssl openssl-bin"
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
NO_RECOMMENDATIONS = "1"

# appmgr-runtime.bbclass reads ${IMAGE_LINK_NAME}.tar.zst and .manifest.
IMAGE_FSTYPES = "tar.zst"
