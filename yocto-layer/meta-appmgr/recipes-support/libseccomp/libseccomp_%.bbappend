# appmgr-native (the build machine's `appmgr`, which signs bundles for
# appmgr-bundle.bbclass) links libseccomp, and oe-core builds libseccomp for the target
# only. This adds a native variant and changes nothing of the target one (its task
# signatures stay the same); the seccomp distro feature is about the target's kernel,
# not the build machine's. Hence the two inline suppressions of noncoreoverride.
# nooelint: oelint.vars.noncoreoverride
BBCLASSEXTEND:append = " native"
# nooelint: oelint.vars.noncoreoverride
REQUIRED_DISTRO_FEATURES:class-native = ""
