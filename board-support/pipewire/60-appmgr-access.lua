-- appmgr: apps get exactly their audio grant (docs/audio.md). Install as
-- /etc/wireplumber/main.lua.d/60-appmgr-access.lua, with appmgr-access.lua in
-- /etc/wireplumber/scripts/ (or /usr/share/wireplumber/scripts/).

-- No blanket permissions for restricted or sandboxed clients: Debian's and upstream's
-- 50-default-access-config.lua give every "flatpak" and "restricted" client "rx" on
-- everything, sources included. appmgr-access.lua decides for them instead.
default_access.rules = {}
-- There is no flatpak portal on an appliance, and no session bus for it in a system-wide
-- instance.
default_access.properties["enable-flatpak-portal"] = false

load_script(appmgr_access_script or "appmgr-access.lua", {
  ["metadata-name"] = "appmgr-audio",
})
