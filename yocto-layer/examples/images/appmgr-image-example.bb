# nooelint: oelint.var.suggestedvar.CVE_PRODUCT
# (an image: its packages carry their own CVE_PRODUCT)
SUMMARY = "Example image: appmgr with a factory-installed app"
DESCRIPTION = "core-image-minimal plus appmgr, the integrator's trusted keys and \
               the appmgr-hello bundle, verified against those keys when the \
               image is built. The app needs the org.appmgr.Headless runtime, which \
               is not built by Yocto here: add its bundle the same way or by FOTA."
HOMEPAGE = "https://example.com/appmgr"
BUGTRACKER = "https://example.com/appmgr/issues"
SECTION = "images"
LICENSE = "MIT"

inherit core-image appmgr-image

APPMGR_PREINSTALL = "appmgr-hello"

IMAGE_FEATURES += "ssh-server-dropbear"
