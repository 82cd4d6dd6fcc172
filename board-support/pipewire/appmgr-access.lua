-- appmgr: PipeWire access for sandboxed apps (WirePlumber 0.4 script).
--
-- Installed by appmgr (docs/audio.md). Each app runs under its own kernel uid; a PipeWire
-- client's uid is `pipewire.sec.uid`, which PipeWire takes from SO_PEERCRED and no client
-- can change. appmgr (root, an unrestricted PipeWire client) writes the audio grant of an
-- app's uid into the metadata object this script owns ("appmgr-audio", subject 0, key
-- "appmgr.audio.uid.UID", value "none", "playback", "capture" or "playback,capture") before
-- it launches the app. Apps never see that object: they get no permission on it.
--
-- PipeWire's module-access marks every process whose root holds `.flatpak-info` (appmgr
-- puts one at the root of every sandbox that has the PipeWire socket) as "flatpak" and
-- gives it no permission at all: it is blocked ("busy") until this script decides. The
-- decision is keyed on the uid only:
--   * a uid with an entry gets exactly its grant (below), if PipeWire held its client;
--     a client of such a uid that PipeWire did not hold refuses that uid from then on;
--   * a restricted or flatpak client without an entry waits until one appears, and an
--     entry "none" refuses it (error, then disconnected);
--   * any other client (the host's own) is left alone.
-- Grants: "playback" sees the core, its own client, the stream factory and the sinks
-- (Audio/Sink), and may run output streams; "capture" sees the sources (Audio/Source*) and
-- may run input streams. Everything else is invisible (permission "-"). PipeWire 0.3.65
-- does not check link permissions (0.3.75 does), so the session manager would still link a
-- hidden source into a stream: this script also destroys every node an app creates but
-- an output stream (with playback) or an input stream (with capture), and every link that
-- carries audio into an app's node without capture or out of one without playback.

local config = ... or {}
local METADATA = config["metadata-name"] or "appmgr-audio"
local PREFIX = "appmgr.audio.uid."
local EACCES = 13

local grants = {}          -- uid (string) -> { playback = bool, capture = bool }

local function parse_grant(value)
  local g = { playback = false, capture = false }
  if value == nil then
    return nil
  end
  for word in value:gmatch("[^,%s]+") do
    if word == "playback" then
      g.playback = true
    elseif word == "capture" then
      g.capture = true
    elseif word ~= "none" then
      -- unknown words grant nothing (fail closed)
      Log.warning("appmgr-access: unknown audio grant '" .. word .. "' ignored")
    end
  end
  return g
end

local function is_sink(node)
  local class = node.properties["media.class"] or ""
  return class == "Audio/Sink" or class == "Audio/Duplex"
end

local function is_source(node)
  local class = node.properties["media.class"] or ""
  return class:find("^Audio/Source") ~= nil or class == "Audio/Duplex"
end

clients_om = ObjectManager { Interest { type = "client" } }
nodes_om = ObjectManager { Interest { type = "node" } }
factories_om = ObjectManager { Interest { type = "factory" } }
links_om = ObjectManager { Interest { type = "link" } }

local function client_uid(client)
  return client.properties["pipewire.sec.uid"]
end

local function client_is_restricted(client)
  local access = client.properties["pipewire.access"]
  return access ~= "unrestricted" and access ~= "allowed" and access ~= "no-pid"
end

-- Uids of which a client was not held by PipeWire (pipewire.access is not "flatpak" or
-- "restricted"): it had every permission from its first message, which can only happen
-- when module-access's pid-based check was beaten (the connecting process exited and a
-- host process got its pid) or PipeWire cannot read /proc/PID/root (it does not run as
-- root). Such a client may have rewritten its own entry meanwhile, so the uid gets
-- nothing until WirePlumber restarts.
local poisoned = {}
local NOTHING = { playback = false, capture = false }

-- The grant of a client's uid, or nil (a host client, or an app's whose entry has not
-- arrived yet: PipeWire holds a restricted client without any permission meanwhile).
local function grant_of(client)
  local uid = client_uid(client)
  if uid == nil then
    return nil
  end
  if poisoned[uid] then
    return NOTHING
  end
  return grants[uid]
end

-- Permissions of one object for a granted client.
local function object_perms(g, kind, obj)
  if kind == "node" then
    if g.playback and is_sink(obj) then
      return "rx"
    end
    if g.capture and is_source(obj) then
      return "rx"
    end
    return "-"
  elseif kind == "factory" then
    local name = obj.properties["factory.name"]
    if (g.playback or g.capture) and name == "client-node" then
      return "rx"
    end
    return "-"
  end
  return "-"
end

local function apply(client)
  local id = client["bound-id"]
  local uid = client_uid(client)
  if uid ~= nil and grants[uid] ~= nil and not client_is_restricted(client) then
    Log.warning(client, "appmgr-access: client " .. id .. " of app uid " .. uid ..
        " was not held by PipeWire (pipewire.access=" ..
        tostring(client.properties["pipewire.access"]) .. "): uid refused from now on")
    poisoned[uid] = true
  end
  local g = grant_of(client)
  if g == nil then
    if client_is_restricted(client) then
      Log.info(client, "appmgr-access: client " .. id .. " (uid " ..
          tostring(client_uid(client)) .. ") waits for its grant")
    end
    return
  end
  if not g.playback and not g.capture then
    Log.info(client, "appmgr-access: client " .. id .. " refused: no audio grant")
    client:update_permissions { ["any"] = "-" }
    client:send_error(0, -EACCES, "appmgr: no audio grant for this app")
    client:request_destroy()
    return
  end
  -- Nothing by default, then exactly the granted objects; the core last, since R on the
  -- core is what lets the blocked client go on.
  client:update_permissions { ["any"] = "-" }
  local perms = {}
  perms[id] = "rx"
  for node in nodes_om:iterate() do
    perms[node["bound-id"]] = object_perms(g, "node", node)
  end
  for factory in factories_om:iterate() do
    perms[factory["bound-id"]] = object_perms(g, "factory", factory)
  end
  client:update_permissions(perms)
  client:update_permissions { [0] = "rx" }
  Log.info(client, "appmgr-access: client " .. id .. " uid " .. client_uid(client) ..
      " granted playback=" .. tostring(g.playback) .. " capture=" .. tostring(g.capture))
end

-- The grant of the client that owns a node (nil: not an app's node).
local function node_owner_grant(node)
  local cid = tonumber(node.properties["client.id"])
  if cid == nil then
    return nil
  end
  local client = clients_om:lookup { Constraint { "bound-id", "=", cid, type = "gobject" } }
  if client == nil then
    return nil
  end
  return grant_of(client) or (client_is_restricted(client) and NOTHING) or nil
end

-- An app's client may create exactly the streams of its roles: an output stream with
-- playback, an input stream with capture. Anything else it creates (a stream in the other
-- direction, a virtual sink that could take other clients' audio, a source, video) is
-- destroyed at once.
local function check_node(node)
  local g = node_owner_grant(node)
  if g == nil then
    return
  end
  local class = node.properties["media.class"] or ""
  local allowed = (class == "Stream/Output/Audio" and g.playback)
      or (class == "Stream/Input/Audio" and g.capture)
  if not allowed then
    Log.info(node, "appmgr-access: destroying node " .. node["bound-id"] .. " (" .. class ..
        ") of an app without that audio grant")
    node:request_destroy()
  end
end

-- Audio flowing into an app's node is capture, out of an app's node playback: a link
-- that does either without the grant is destroyed, whoever made it.
local function check_link(link)
  local p = link.properties
  local function node_of(key)
    local id = tonumber(p[key])
    return id and nodes_om:lookup { Constraint { "bound-id", "=", id, type = "gobject" } }
  end
  local in_node, out_node = node_of("link.input.node"), node_of("link.output.node")
  local gin = in_node and node_owner_grant(in_node)
  local gout = out_node and node_owner_grant(out_node)
  if (gin and not gin.capture) or (gout and not gout.playback) then
    Log.info(link, "appmgr-access: destroying link " .. link["bound-id"] ..
        " that carries audio an app was not granted")
    link:request_destroy()
  end
end

local function reapply_all()
  for client in clients_om:iterate() do
    apply(client)
  end
end

appmgr_metadata = ImplMetadata(METADATA)
appmgr_metadata:activate(Features.ALL, function (m, e)
  if e then
    Log.warning("appmgr-access: cannot create metadata " .. METADATA .. ": " .. tostring(e))
  end
end)
appmgr_metadata:connect("changed", function (m, subject, key, vtype, value)
  if key == nil then
    grants = {}
  elseif key:sub(1, #PREFIX) == PREFIX then
    grants[key:sub(#PREFIX + 1)] = parse_grant(value)
  else
    return
  end
  reapply_all()
end)

clients_om:connect("object-added", function (om, client)
  apply(client)
end)

nodes_om:connect("object-added", function (om, node)
  check_node(node)
  for client in clients_om:iterate() do
    local g = grant_of(client)
    if g ~= nil and (g.playback or g.capture) then
      client:update_permissions { [node["bound-id"]] = object_perms(g, "node", node) }
    end
  end
end)

factories_om:connect("object-added", function (om, factory)
  for client in clients_om:iterate() do
    local g = grant_of(client)
    if g ~= nil and (g.playback or g.capture) then
      client:update_permissions { [factory["bound-id"]] = object_perms(g, "factory", factory) }
    end
  end
end)

links_om:connect("object-added", function (om, link)
  check_link(link)
end)

clients_om:activate()
nodes_om:activate()
factories_om:activate()
links_om:activate()
