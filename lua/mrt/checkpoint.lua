-- mrt.checkpoint: model state by name, mrt's own HDF5 checkpoints, and
-- safetensors files as published for torchvision/timm ResNets.
--
-- A state is a map from dotted names (`layer1.0.bn1.running_mean`) to
-- Tensors covering every parameter and batch-norm buffer. Loading checks
-- every name: missing, unexpected and wrong-shaped tensors are all listed
-- in one error unless the caller passes strict = false.
--
-- A checkpoint (M.save, M.load) is an HDF5 file holding everything needed
-- to continue a run bit for bit:
--
--    /              attributes format = 'mrt-checkpoint', format_version = 1,
--                   mrt_version
--    /model/<name>  every parameter and buffer (f32, dotted names), and
--                   <bn>.num_batches_tracked (f64) for each batch norm
--    /optimizer     what opt:state() returned
--    /step          the step counter (f64)
--    /rng           Generator states {seed, counter}
--    /data          the loader position (loader:position())
--    /extra         anything else the caller passes
--
-- /model, /optimizer, /rng and /data may also hold a map name -> object
-- (one per brain, say), one subgroup per name. Values below these groups
-- are Lua values stored as: a table as a group (keys escaped, see
-- encode_key; an empty table as a scalar i16 dataset), a Tensor as an f32
-- dataset of its shape, a number as a scalar f64 dataset (exact for every
-- Lua number), a boolean as a scalar u8 dataset (0 or 1), and a string as
-- a scalar i8 dataset whose attribute `value` contains the text.

local T = require 'mrt.tensor'
local lib = require 'mrt.ffi'
local random = require 'mrt.random'

local M = {}

M.FORMAT = 'mrt-checkpoint'
M.FORMAT_VERSION = 1

local function is_tensor(v)
   return type(v) == 'table' and getmetatable(v) == T.Tensor
end

local function is_module(v)
   return type(v) == 'table' and type(v.parameters) == 'function'
      and type(v.named_buffers) == 'function'
end

------------------------------------------------------------------ state

-- The model's state as name -> Tensor (on the model's device, shared, not
-- copied), and the names in order: parameters, then buffers.
function M.state_dict(model)
   local state, order = {}, {}
   for _, p in ipairs(model:parameters()) do
      state[p.name] = p.entry.value
      order[#order + 1] = p.name
   end
   for _, b in ipairs(model:named_buffers()) do
      state[b.name] = b.value
      order[#order + 1] = b.name
   end
   return state, order
end

-- Batch-norm step counters: name ('<module>.num_batches_tracked') -> module.
-- The counter is a number field of the module, not a tensor buffer.
local function counters(model)
   local out = {}
   for _, m in ipairs(model:named_modules()) do
      if type(m.module.num_batches_tracked) == 'number' then
         local prefix = m.name == '' and '' or m.name .. '.'
         out[prefix .. 'num_batches_tracked'] = m.module
      end
   end
   return out
end

local function shape_of(value)
   if is_tensor(value) then
      return value:shape_string()
   end
   return 'a ' .. type(value)
end

local function same_shape(src, dst)
   return is_tensor(src) and T.shape_string(src.shape) == T.shape_string(dst.shape)
end

-- A counter value from a checkpoint: a number, or a one-element Tensor
-- (safetensors files store it as an int64 tensor of shape []).
local function counter_value(v)
   if type(v) == 'number' then
      return v
   end
   if is_tensor(v) and v:numel() == 1 then
      return v:get(1)
   end
   return nil
end

-- The error for a strict load that found problems, listing all of them.
local function mismatch_message(report)
   local parts = {}
   for _, kind in ipairs({ 'missing', 'unexpected', 'mismatched' }) do
      if #report[kind] > 0 then
         parts[#parts + 1] = string.format('%d %s: %s', #report[kind], kind,
            table.concat(report[kind], ', '))
      end
   end
   return 'load_state: checkpoint does not match the model (' .. table.concat(parts, '; ')
      .. '); pass strict = false to load the matching tensors only'
end

-- Strips opts.prefix from incoming names; a name without it is kept as is.
local function strip_prefix(tensors, prefix)
   local incoming = {}
   for name, t in pairs(tensors) do
      local key = name
      if prefix and key:sub(1, #prefix) == prefix then
         key = key:sub(#prefix + 1)
      end
      incoming[key] = t
   end
   return incoming
end

-- Compares incoming names with the model's; returns the report.
local function match_names(state, order, bn_counters, incoming)
   local report = { missing = {}, unexpected = {}, mismatched = {}, loaded = 0 }
   for _, name in ipairs(order) do
      local src, dst = incoming[name], state[name]
      if src == nil then
         report.missing[#report.missing + 1] = name
      elseif not same_shape(src, dst) then
         report.mismatched[#report.mismatched + 1] = string.format(
            '%s (checkpoint %s, model %s)', name, shape_of(src), dst:shape_string())
      end
   end
   local unexpected = {}
   for name, v in pairs(incoming) do
      if bn_counters[name] ~= nil then
         if counter_value(v) == nil then
            report.mismatched[#report.mismatched + 1] = string.format(
               '%s (checkpoint %s, model a number)', name, shape_of(v))
         end
      elseif state[name] == nil then
         unexpected[#unexpected + 1] = name
      end
   end
   table.sort(unexpected)
   table.sort(report.mismatched)
   report.unexpected = unexpected
   return report
end

local STATE_OPTIONS = { prefix = true, strict = true }

-- Checks the options of load_state and load_safetensors and returns them.
local function check_state_opts(fn, opts, level)
   if opts == nil then
      return {}
   end
   if type(opts) ~= 'table' then
      error(string.format('%s: options must be a table, got %s', fn, type(opts)), level + 1)
   end
   for key in pairs(opts) do
      if not STATE_OPTIONS[key] then
         error(string.format("%s: unknown option '%s' (expected prefix, strict)", fn,
            tostring(key)), level + 1)
      end
   end
   if opts.strict ~= nil and type(opts.strict) ~= 'boolean' then
      error(string.format('%s: strict must be a boolean, got %s', fn, tostring(opts.strict)),
         level + 1)
   end
   if opts.prefix ~= nil and type(opts.prefix) ~= 'string' then
      error(string.format('%s: prefix must be a string, got %s', fn, tostring(opts.prefix)),
         level + 1)
   end
   return opts
end

-- Matches incoming tensors with the model's names without changing the
-- model, and raises the strict error. Returns the plan that apply_state
-- carries out.
local function plan_state(model, tensors, opts, level)
   local state, order = M.state_dict(model)
   local bn_counters = counters(model)
   local incoming = strip_prefix(tensors, opts.prefix)
   local report = match_names(state, order, bn_counters, incoming)
   local bad = #report.missing + #report.unexpected + #report.mismatched
   if opts.strict ~= false and bad > 0 then
      error(mismatch_message(report), level + 1)
   end
   return { state = state, order = order, counters = bn_counters, incoming = incoming,
            report = report }
end

-- Copies the matching tensors and counters of a plan and returns its report.
local function apply_state(plan)
   local report, incoming = plan.report, plan.incoming
   for _, name in ipairs(plan.order) do
      local src, dst = incoming[name], plan.state[name]
      if src ~= nil and same_shape(src, dst) then
         dst:copy(src)
         report.loaded = report.loaded + 1
      end
   end
   for name, mod in pairs(plan.counters) do
      local v = incoming[name] ~= nil and counter_value(incoming[name]) or nil
      if v ~= nil then
         mod.num_batches_tracked = v
         report.loaded = report.loaded + 1
      end
   end
   return report
end

-- Copies tensors (name -> Tensor, any device) into the model's parameters
-- and buffers. opts.strict (default true) makes any missing, unexpected or
-- wrong-shaped name an error that lists them all; with strict = false they
-- are skipped and returned in the report { missing = {}, unexpected = {},
-- mismatched = {}, loaded = <count> }. opts.prefix is stripped from
-- incoming names (e.g. 'module.'). Batch-norm counters
-- (<bn>.num_batches_tracked, a number or a one-element Tensor) are loaded
-- when present and never reported missing: PyTorch reads them only when a
-- batch norm's momentum is None, which mrt does not support. Other option
-- keys are errors, and an error leaves the model unchanged.
function M.load_state(model, tensors, opts)
   opts = check_state_opts('load_state', opts, 2)
   local report = apply_state(plan_state(model, tensors, opts, 2))
   return report
end

-- Loads a safetensors file (F32, F16, BF16 or F64 tensors, converted to
-- float32 by the reader) into the model by name; opts as load_state.
function M.load_safetensors(model, path, opts)
   opts = check_state_opts('load_safetensors', opts, 2)
   local mio = require 'mrt.io'
   local tensors = mio.safetensors_read(path)
   local report = apply_state(plan_state(model, tensors, opts, 2))
   return report
end

-- Writes the model's parameters and buffers as a safetensors file (float32).
function M.save_safetensors(model, path, metadata)
   local mio = require 'mrt.io'
   local state, order = M.state_dict(model)
   local list = {}
   for _, name in ipairs(order) do
      list[#list + 1] = { name = name, tensor = state[name]:to('cpu') }
   end
   mio.safetensors_write(path, list, metadata or {})
end

------------------------------------------------------------- value trees

-- HDF5 link name of a table key. Strings keep their text with '%' and '/'
-- percent-encoded, a leading '#' as %23, '.' alone as %2E and '' as '%';
-- numbers become '#' followed by the number.
local function encode_key(key, path)
   if type(key) == 'number' then
      if key ~= key or key == math.huge or key == -math.huge then
         error(string.format('checkpoint.save: %s has a non-finite key', path), 0)
      end
      return '#' .. string.format('%.17g', key)
   end
   if type(key) ~= 'string' then
      error(string.format('checkpoint.save: %s has a %s key (expected strings and numbers)',
         path, type(key)), 0)
   end
   if key == '' then
      return '%'
   end
   local name = key:gsub('[%%/]', function(c) return string.format('%%%02X', c:byte()) end)
   if name:sub(1, 1) == '#' then
      name = '%23' .. name:sub(2)
   end
   if name == '.' then
      name = '%2E'
   end
   return name
end

local function decode_key(name)
   if name:sub(1, 1) == '#' then
      return tonumber(name:sub(2))
   end
   if name == '%' then
      return ''
   end
   return (name:gsub('%%(%x%x)', function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Writes a Lua value at path; seen guards against cycles. Errors carry no
-- position, and save re-raises them unchanged.
local function write_value(h, path, value, seen)
   local kind = type(value)
   if is_tensor(value) then
      h:write(path, value, 'f32')
   elseif kind == 'number' then
      h:write(path, value, 'f64')
   elseif kind == 'boolean' then
      h:write(path, value and 1 or 0, 'u8')
   elseif kind == 'string' then
      h:write(path, 0, 'i8')
      h:attr(path, 'value', value)
   elseif kind == 'table' then
      if seen[value] then
         error(string.format('checkpoint.save: %s refers to a table that contains it', path),
            0)
      end
      seen[value] = true
      local empty = true
      for key, v in pairs(value) do
         empty = false
         write_value(h, path .. '/' .. encode_key(key, path), v, seen)
      end
      if empty then
         h:write(path, 0, 'i16')
      end
      seen[value] = nil
   else
      error(string.format('checkpoint.save: %s is a %s (expected a Tensor, number, boolean, '
         .. 'string or table)', path, kind), 0)
   end
end

-- Reads back what write_value wrote. Tensors come back on the CPU.
local function read_value(h, path, kind)
   if kind == 'group' then
      local out = {}
      local names, kinds = h:list(path)
      for _, name in ipairs(names) do
         out[decode_key(name)] = read_value(h, path .. '/' .. name, kinds[name])
      end
      return out
   end
   local dtype = h:info(path).dtype
   if dtype == 'f32' then
      return h:read_tensor(path, 'cpu')
   elseif dtype == 'f64' then
      return h:read(path)
   elseif dtype == 'u8' then
      return h:read(path) ~= 0
   elseif dtype == 'i8' then
      return h:attrs(path).value
   elseif dtype == 'i16' then
      return {}
   end
   error(string.format("checkpoint.load: '%s' in '%s' has element type %s, which no "
      .. 'checkpoint value uses', path, h.path, tostring(dtype)), 3)
end

------------------------------------------------------------- checkpoints

-- The model's full state as a value tree: parameters, buffers, counters.
local function model_tree(model)
   local tree = M.state_dict(model)
   for name, mod in pairs(counters(model)) do
      tree[name] = mod.num_batches_tracked
   end
   return tree
end

-- Applies fn to an object, or to each entry of a map of objects (brains).
-- is_one(value) is true for a single object.
local function each(value, is_one, fn)
   if is_one(value) then
      return fn(value)
   end
   local out = {}
   for key, v in pairs(value) do
      out[key] = fn(v, key)
   end
   return out
end

local function has_method(name)
   return function(v)
      return type(v) == 'table' and type(v[name]) == 'function'
   end
end

local is_optimizer, is_generator = has_method('state'), has_method('get_state')
local is_loader = has_method('position')

local SAVE_KEYS = { model = 1, optimizer = 1, step = 1, rng = 1, data = 1, extra = 1 }

-- The value tree of each section that save writes.
local function save_sections(parts)
   local sections = {}
   if parts.model ~= nil then
      sections.model = each(parts.model, is_module, model_tree)
   end
   if parts.optimizer ~= nil then
      sections.optimizer = each(parts.optimizer, is_optimizer, function(o) return o:state() end)
   end
   if parts.rng ~= nil then
      sections.rng = each(parts.rng, is_generator, function(g) return g:get_state() end)
   end
   if parts.data ~= nil then
      sections.data = is_loader(parts.data) and parts.data:position() or parts.data
   end
   sections.step = parts.step
   sections.extra = parts.extra
   return sections
end

local function write_checkpoint(h, sections)
   h:attr('/', 'format', M.FORMAT)
   h:attr('/', 'format_version', M.FORMAT_VERSION, 'i64')
   h:attr('/', 'mrt_version', lib.ffi.string(lib.C.mrt_version()))
   for _, key in ipairs({ 'model', 'optimizer', 'step', 'rng', 'data', 'extra' }) do
      if sections[key] ~= nil then
         write_value(h, '/' .. key, sections[key], {})
      end
   end
end

-- Writes a checkpoint to path through a temporary file renamed into place,
-- so a failed save leaves any older file at path untouched. parts (all
-- optional): model (a Module, or a map name -> Module), optimizer (an
-- object with :state(), or a map of them), step (a number), rng (a
-- Generator or a map of Generators), data (a loader, saved as its
-- :position(), or any value tree) and extra (any value tree).
function M.save(path, parts)
   if type(path) ~= 'string' or type(parts) ~= 'table' then
      error('checkpoint.save: expected (path, {model=, optimizer=, step=, rng=, data=, '
         .. 'extra=})', 2)
   end
   for key in pairs(parts) do
      if not SAVE_KEYS[key] then
         error(string.format("checkpoint.save: unknown part '%s' (expected model, optimizer, "
            .. 'step, rng, data, extra)', tostring(key)), 2)
      end
   end
   if parts.step ~= nil and type(parts.step) ~= 'number' then
      error('checkpoint.save: step must be a number, got ' .. type(parts.step), 2)
   end
   local sections = save_sections(parts)
   local mio = require 'mrt.io'
   local h = mio.h5_create(path)
   local ok, err = pcall(write_checkpoint, h, sections)
   if not ok then
      h:abort()
      error(err, 0)
   end
   h:commit()
end

-- Opens a checkpoint and checks its format attributes.
local function open_checkpoint(path, level)
   local mio = require 'mrt.io'
   local h = mio.h5_open(path)
   local attrs = h:attrs('/')
   if attrs.format ~= M.FORMAT then
      h:close()
      error(string.format("checkpoint.load: '%s' is not an mrt checkpoint (attribute format is "
         .. "%s, expected '%s')", path, attrs.format == nil and 'missing'
         or "'" .. tostring(attrs.format) .. "'", M.FORMAT), level + 1)
   end
   local version = attrs.format_version
   if version ~= M.FORMAT_VERSION then
      h:close()
      error(string.format("checkpoint.load: '%s' has format version %s; this mrt reads "
         .. 'version %d', path, tostring(version), M.FORMAT_VERSION), level + 1)
   end
   return h
end

local function read_sections(h)
   local sections = {}
   local names, kinds = h:list('/')
   for _, name in ipairs(names) do
      sections[name] = read_value(h, '/' .. name, kinds[name])
   end
   return sections
end

-- Pairs each object in objects (one object, or a map name -> object) with
-- its saved state in states, and raises an error naming a missing entry.
local function pair_states(objects, states, is_one, what, path, level)
   if is_one(objects) then
      return { { object = objects, state = states, label = '' } }
   end
   if type(objects) ~= 'table' then
      error(string.format('checkpoint.load: option %s must be an object or a map of them, got %s',
         what, tostring(objects)), level + 1)
   end
   local list = {}
   for key, obj in pairs(objects) do
      local state = type(states) == 'table' and not is_tensor(states) and states[key] or nil
      if state == nil then
         error(string.format("checkpoint.load: '%s' has no %s '%s'", path, what, tostring(key)),
            level + 1)
      end
      list[#list + 1] = { object = obj, state = state, key = key,
         label = " '" .. tostring(key) .. "'" }
   end
   return list
end

-- A description of a saved value for messages: 'a tensor of 6 elements', 'a number'.
local function value_kind(v)
   if is_tensor(v) then
      return string.format('a tensor of %d elements', v:numel())
   end
   return 'a ' .. type(v)
end

-- Compares a saved optimizer state with the optimizer's current one: kind
-- strings must agree, tensors must have the current element count, and
-- every tensor, number, boolean and string of the current state must be
-- there. A table that the saved state lacks is accepted, because
-- load_state treats some of them as optional (the evaluation model of
-- brains).
local function check_optimizer_state(current, saved, where, path, level)
   local here = where == '' and '' or " '" .. where .. "'"
   if is_tensor(current) or type(current) ~= 'table' then
      local ok = is_tensor(current) and is_tensor(saved) and saved:numel() == current:numel()
         or not is_tensor(current) and type(saved) == type(current)
      if not ok then
         error(string.format("checkpoint.load: '%s': optimizer state%s is %s, expected %s",
            path, here, value_kind(saved), value_kind(current)), level + 1)
      end
      return
   end
   if type(saved) ~= 'table' or is_tensor(saved) then
      error(string.format("checkpoint.load: '%s': optimizer state%s is %s, expected a table",
         path, here, value_kind(saved)), level + 1)
   end
   if current.kind ~= nil and saved.kind ~= current.kind then
      error(string.format("checkpoint.load: '%s': optimizer state%s is for %s, expected %s",
         path, here, tostring(saved.kind), tostring(current.kind)), level + 1)
   end
   for key, value in pairs(current) do
      local sub = where == '' and tostring(key) or where .. '.' .. tostring(key)
      if saved[key] ~= nil then
         check_optimizer_state(value, saved[key], sub, path, level + 1)
      elseif is_tensor(value) or type(value) ~= 'table' then
         error(string.format("checkpoint.load: '%s': optimizer state lacks '%s'", path, sub),
            level + 1)
      end
   end
end

local LOAD_KEYS = { model = 1, optimizer = 1, rng = 1, data = 1, strict = 1 }

local function check_load_opts(path, opts, level)
   if type(path) ~= 'string' or type(opts) ~= 'table' then
      error('checkpoint.load: expected (path, {model=, optimizer=, rng=, data=, strict=})',
         level + 1)
   end
   for key in pairs(opts) do
      if not LOAD_KEYS[key] then
         error(string.format("checkpoint.load: unknown option '%s' (expected model, optimizer, "
            .. 'rng, data, strict)', tostring(key)), level + 1)
      end
   end
   if opts.strict ~= nil and type(opts.strict) ~= 'boolean' then
      error('checkpoint.load: strict must be a boolean, got ' .. tostring(opts.strict),
         level + 1)
   end
end

-- Checks every section that opts requests against its objects, changing
-- nothing, and records what a failed load needs to undo. Returns the plan.
local function plan_load(sections, opts, path, level)
   for _, key in ipairs({ 'model', 'optimizer', 'rng', 'data' }) do
      if opts[key] ~= nil and sections[key] == nil then
         error(string.format("checkpoint.load: '%s' has no %s section", path, key), level + 1)
      end
   end
   local plan = { models = {}, optimizers = {}, generators = {} }
   if opts.model ~= nil then
      plan.models = pair_states(opts.model, sections.model, is_module, 'model', path, level + 1)
      plan.reports = not is_module(opts.model) and {} or nil
      for _, m in ipairs(plan.models) do
         if type(m.state) ~= 'table' or is_tensor(m.state) then
            error(string.format("checkpoint.load: '%s' has no model%s", path, m.label),
               level + 1)
         end
         m.plan = plan_state(m.object, m.state, { strict = opts.strict }, level + 1)
      end
   end
   if opts.optimizer ~= nil then
      plan.optimizers = pair_states(opts.optimizer, sections.optimizer, is_optimizer,
         'optimizer', path, level + 1)
      for _, o in ipairs(plan.optimizers) do
         o.before = o.object:state() -- copies, which the undo step loads back
         check_optimizer_state(o.before, o.state, '', path, level + 1)
      end
   end
   local loader = opts.data
   if loader ~= nil and type(loader.set_position) == 'function' then
      local problem = type(loader.position_error) == 'function'
         and loader:position_error(sections.data) or nil
      if problem ~= nil then
         error(string.format("checkpoint.load: '%s': data position: %s", path, problem),
            level + 1)
      end
      plan.loader = loader
   end
   if opts.rng ~= nil then
      plan.generators = pair_states(opts.rng, sections.rng, is_generator, 'generator', path,
         level + 1)
      for _, g in ipairs(plan.generators) do
         local problem = getmetatable(g.object) == random.Generator
            and random.state_error(g.state) or nil
         if problem ~= nil then
            error(string.format("checkpoint.load: '%s': generator%s: %s", path, g.label,
               problem), level + 1)
         end
         g.before = g.object:get_state()
      end
   end
   return plan
end

-- Copies of a model's tensors and counters, to restore after a failed load.
local function model_backup(model)
   local backup = {}
   for name, value in pairs(model_tree(model)) do
      backup[name] = is_tensor(value) and value:clone() or value
   end
   return backup
end

-- Applies a plan in an order that lets a generator shared by the loader
-- end in its saved state: models, optimizers, data position, then
-- generators. Each step first pushes its undo function onto undo.
local function apply_plan(plan, sections, undo)
   local result = { step = sections.step, extra = sections.extra, data = sections.data,
      rng = sections.rng, optimizer = sections.optimizer, report = plan.reports }
   for _, m in ipairs(plan.models) do
      local backup = model_backup(m.object)
      undo[#undo + 1] = function()
         apply_state(plan_state(m.object, backup, {}, 1))
      end
      local report = apply_state(m.plan)
      if m.key == nil then
         result.report = report
      else
         result.report[m.key] = report
      end
   end
   for _, o in ipairs(plan.optimizers) do
      undo[#undo + 1] = function() o.object:load_state(o.before) end
      o.object:load_state(o.state)
   end
   if plan.loader ~= nil then
      local loader = plan.loader
      if type(loader.snapshot) == 'function' then
         local before = loader:snapshot()
         undo[#undo + 1] = function() loader:restore(before) end
      end
      loader:set_position(sections.data)
   end
   for _, g in ipairs(plan.generators) do
      undo[#undo + 1] = function() g.object:set_state(g.before) end
      g.object:set_state(g.state)
   end
   return result
end

-- Reads a checkpoint and restores what opts names: model (a Module or a
-- map, loaded by name; strict as in load_state, default true), optimizer
-- (:load_state), data (a loader: :set_position) and rng (:set_state).
-- Returns { step =, extra =, data =, rng =, optimizer = (the saved values),
-- report = (load_state's report, or a map of them) }. Every section is
-- checked before anything changes, and should a step fail anyway, the
-- steps before it are undone: a failed load leaves the objects in opts as
-- they were. Unknown option keys and a non-boolean strict are errors.
function M.load(path, opts)
   opts = opts or {}
   check_load_opts(path, opts, 2)
   local h = open_checkpoint(path, 2)
   local ok, sections = pcall(read_sections, h)
   h:close()
   if not ok then
      error(sections, 0)
   end
   local plan = plan_load(sections, opts, path, 2)
   local undo = {}
   local applied, result = pcall(apply_plan, plan, sections, undo)
   if not applied then
      for i = #undo, 1, -1 do
         undo[i]()
      end
      error(result, 0)
   end
   return result
end

M.encode_key, M.decode_key = encode_key, decode_key

return M
