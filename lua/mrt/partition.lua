-- mrt.partition: named parts of a flattened model's parameters, for
-- optimizers that treat parts differently (multirate schemes, a trainable
-- subset, random subgroups).
--
--    local partition = require 'mrt.partition'
--    local p = partition.new(model, { fast = { '^fc%.' }, slow = 'rest' })
--    p:part('fast').ranges   --> { { offset = 21280, count = 650 } }
--
-- A part is a set of parameter entries (see mrt.nn.module) with the merged
-- contiguous ranges { offset, count } (0-based, in elements) that they
-- cover in the model's flat buffers, so an optimizer updates a part with one
-- fused call per range. A part may also carry a 0/1 element mask per
-- parameter (1 = the element belongs to the part).
--
-- A spec selects parameters; every criterion it gives must hold:
--    'rest' or { rest = true }   every parameter no other part claims
--    'pattern' or { 'p1', 'p2' } names matching any of these Lua patterns
--    { kind = 'weight' | 'bias' }
--    { layer = 'input' | 'output' } parameters of the input layer (the
--                                module owning the first parameter in
--                                model:parameters() order) or of the output
--                                layer (the one owning the last)
--    { predicate = function(name, entry) ... end } or a bare function
--    { masks = { [name] = Tensor } } the named parameters, each with a fixed
--                                0/1 mask of its shape
--    { random = { prob =, seed = } } random element masks, redrawn by
--                                part:redraw(): each element is 1 with the
--                                parameter's probability. prob is a number,
--                                a map from name pattern to probability, or
--                                function(name, entry); parameters with
--                                probability 0 (or no matching pattern) are
--                                left out. Without a `kind`, only weights
--                                are selected.
-- Each pattern must match some parameter and each part must select some
-- parameter. A parameter in two parts is an error, except that the 'rest'
-- part takes the other elements of a parameter in a masked part: an element
-- is in the rest where that part's mask is 0. Parameters in no part belong to none (optimizers
-- leave them frozen). partition.complement(part) builds that rest for a
-- single part.

local T = require 'mrt.tensor'
local random = require 'mrt.random'
local config = require 'mrt.optim.config'

local M = {}

local Part = {}
Part.__index = Part
M.Part = Part

local Partition = {}
Partition.__index = Partition
M.Partition = Partition

local SPEC_KEYS = { kind = true, layer = true, predicate = true, masks = true, random = true,
   rest = true }
local RANDOM_SCHEMA = {
   prob = { kind = 'any', required = true,
      expect = 'a probability in [0, 1], a map from name pattern to probability, or a function' },
   seed = { kind = 'integer', min = 0, default = 0 },
}

local function fail(fmt, ...)
   error(string.format('partition: ' .. fmt, ...), 0)
end

-- Raises a message caught from a helper again at `level`, without its old position.
local function rethrow(err, level)
   if type(err) == 'string' then
      err = err:gsub('^[^:\n]*:%d+: ', '', 1)
   end
   error(err, level + 1)
end

local function check_flattened(model, fn, level)
   if type(model) ~= 'table' or model.parameters == nil then
      error(string.format('%s: expected a model, got %s', fn, tostring(model)), level + 1)
   end
   if model.flat == nil then
      error(string.format('%s: the model is not flattened; call model:flatten() first', fn),
         level + 1)
   end
end

-- Turns the accepted spec shorthands into one table form.
local function normalize(name, spec)
   if spec == 'rest' then
      return { rest = true, patterns = {} }
   elseif type(spec) == 'string' then
      return { patterns = { spec } }
   elseif type(spec) == 'function' then
      return { predicate = spec, patterns = {} }
   elseif type(spec) ~= 'table' then
      fail("part '%s': spec is a %s (expected 'rest', a name pattern, a list of patterns, "
         .. 'a function or a table)', name, type(spec))
   end
   local out = { patterns = {} }
   for k, v in pairs(spec) do
      if type(k) == 'number' then
         if type(v) ~= 'string' then
            fail("part '%s': pattern %d is a %s (expected a string)", name, k, type(v))
         end
         out.patterns[k] = v
      elseif SPEC_KEYS[k] then
         out[k] = v
      else
         fail("part '%s': unknown spec key '%s' (valid keys: %s, and patterns as list items)",
            name, tostring(k), table.concat(config.sorted_keys(SPEC_KEYS), ', '))
      end
   end
   return out
end

local function check_spec(name, s)
   if s.rest ~= nil and s.rest ~= true then
      fail("part '%s': rest is %s (expected true)", name, tostring(s.rest))
   end
   if s.rest and (#s.patterns > 0 or s.kind or s.layer or s.predicate or s.masks or s.random) then
      fail("part '%s': rest = true takes no other criterion", name)
   end
   if s.kind ~= nil and s.kind ~= 'weight' and s.kind ~= 'bias' then
      fail("part '%s': kind is %s (expected 'weight' or 'bias')", name, config.render(s.kind))
   end
   if s.layer ~= nil and s.layer ~= 'input' and s.layer ~= 'output' then
      fail("part '%s': layer is %s (expected 'input' or 'output')", name, config.render(s.layer))
   end
   if s.predicate ~= nil and type(s.predicate) ~= 'function' then
      fail("part '%s': predicate is a %s (expected a function)", name, type(s.predicate))
   end
   if s.masks ~= nil and type(s.masks) ~= 'table' then
      fail("part '%s': masks is a %s (expected a map from parameter name to Tensor)", name,
         type(s.masks))
   end
   if s.masks ~= nil and s.random ~= nil then
      fail("part '%s': masks and random are exclusive", name)
   end
end

-- The module owning the first and the last parameter, with their names.
local function boundary_layers(list)
   local first, last = list[1], list[#list]
   local function layer_name(p)
      return (p.name:gsub('%.[^.]*$', ''))
   end
   return { input = first.entry.module, output = last.entry.module,
      input_name = layer_name(first), output_name = layer_name(last) }
end

local function is_probability(p)
   return type(p) == 'number' and p >= 0 and p <= 1
end

-- Returns prob(name, entry) for a random spec as a function that checks
-- what a user function returns.
local function probability_function(name, prob)
   if type(prob) == 'number' then
      if not is_probability(prob) then
         fail("part '%s': random.prob is %s (expected a probability in [0, 1])", name,
            tostring(prob))
      end
      return function() return prob end
   elseif type(prob) == 'function' then
      return function(pname, entry)
         local p = prob(pname, entry)
         if not is_probability(p) then
            fail("part '%s': random.prob returned %s for '%s' (expected a probability in "
               .. '[0, 1])', name, config.render(p), pname)
         end
         return p
      end
   elseif type(prob) == 'table' then
      for pattern, p in pairs(prob) do
         if type(pattern) ~= 'string' or not is_probability(p) then
            fail("part '%s': random.prob[%s] is %s (expected a map from name pattern to a "
               .. 'probability in [0, 1])', name, config.render(pattern), tostring(p))
         end
         local ok, err = pcall(string.find, '', pattern)
         if not ok then
            fail("part '%s': random.prob pattern '%s' is not a valid Lua pattern (%s)", name,
               pattern, tostring(err):gsub('^.-: ', ''))
         end
      end
      local keys = config.sorted_keys(prob)
      return function(pname)
         for _, pattern in ipairs(keys) do
            if pname:find(pattern) then
               return prob[pattern]
            end
         end
         return 0
      end
   end
   fail("part '%s': random.prob is a %s (expected a number, a table or a function)", name,
      type(prob))
end

-- Checks a fixed mask, a Tensor of the parameter's shape holding only 0 and
-- 1, and returns its number of ones.
local function check_mask(name, pname, mask, entry)
   if type(mask) ~= 'table' or mask.c == nil then
      fail("part '%s': mask of '%s' is a %s (expected a Tensor)", name, pname, type(mask))
   end
   if T.shape_string(mask.shape) ~= T.shape_string(entry.value.shape) then
      fail("part '%s': mask of '%s' has shape %s, expected %s", name, pname,
         T.shape_string(mask.shape), T.shape_string(entry.value.shape))
   end
   local ones = 0
   for i, v in ipairs(mask:totable()) do
      if v ~= 0 and v ~= 1 then
         fail("part '%s': mask of '%s' has value %g at element %d (expected 0 or 1)", name, pname,
            v, i)
      end
      ones = ones + v
   end
   return ones
end

-- True when the parameter passes every criterion of the spec except patterns.
local function passes(s, p, layers, prob)
   local e = p.entry
   if s.kind ~= nil and e.kind ~= s.kind then
      return false
   end
   if s.random ~= nil and s.kind == nil and e.kind ~= 'weight' then
      return false
   end
   if s.layer ~= nil and e.module ~= layers[s.layer] then
      return false
   end
   if s.masks ~= nil and s.masks[p.name] == nil then
      return false
   end
   if prob ~= nil and prob(p.name, e) <= 0 then
      return false
   end
   if s.predicate ~= nil and not s.predicate(p.name, e) then
      return false
   end
   return true
end

local function matches_patterns(s, pname)
   if #s.patterns == 0 then
      return true
   end
   for _, pattern in ipairs(s.patterns) do
      if pname:find(pattern) then
         return true
      end
   end
   return false
end

-- A description of the spec's criteria, for "matches no parameter" errors.
local function describe_spec(s, layers)
   local parts = {}
   for _, pattern in ipairs(s.patterns) do
      parts[#parts + 1] = "pattern '" .. pattern .. "'"
   end
   if s.kind then
      parts[#parts + 1] = "kind '" .. s.kind .. "'"
   end
   if s.layer then
      parts[#parts + 1] = string.format("layer '%s' (the %s layer is '%s')", s.layer, s.layer,
         layers[s.layer .. '_name'])
   end
   if s.predicate then
      parts[#parts + 1] = 'a predicate'
   end
   if s.random then
      parts[#parts + 1] = 'random masks'
   end
   if s.masks then
      parts[#parts + 1] = 'fixed masks'
   end
   return table.concat(parts, ', ')
end

-- Merges the entries' flat-buffer ranges where they touch.
local function merge_ranges(entries)
   local sorted = {}
   for i, p in ipairs(entries) do
      sorted[i] = p.entry
   end
   table.sort(sorted, function(a, b) return a.offset < b.offset end)
   local ranges = {}
   for _, e in ipairs(sorted) do
      local n = e.value:numel()
      local last = ranges[#ranges]
      if last ~= nil and last.offset + last.count == e.offset then
         last.count = last.count + n
      elseif n > 0 then
         ranges[#ranges + 1] = { offset = e.offset, count = n }
      end
   end
   local state_offset = 0
   for _, r in ipairs(ranges) do
      r.state_offset = state_offset
      state_offset = state_offset + r.count
   end
   return ranges, state_offset
end

local function new_part(name, model, entries)
   local self = setmetatable({ name = name, model = model, flat = model.flat, entries = entries,
      set = {} }, Part)
   for _, p in ipairs(entries) do
      self.set[p.entry] = true
   end
   self.ranges, self.numel = merge_ranges(entries)
   return self
end

-- Attaches fixed or random masks to a part's parameters.
local function attach_masks(part, s, prob)
   if s.masks == nil and s.random == nil then
      return
   end
   part.masks, part.mask_list = {}, {}
   local device = part.model.flat.params.device
   local selected = 0
   for _, p in ipairs(part.entries) do
      local mask
      if s.masks ~= nil then
         selected = selected + check_mask(part.name, p.name, s.masks[p.name], p.entry)
         mask = s.masks[p.name]:to(device):clone()   -- the part's own, not the caller's
      else
         mask = T.zeros(p.entry.value.shape, device)
      end
      part.masks[p.name] = mask
      part.mask_list[#part.mask_list + 1] = { name = p.name, entry = p.entry, mask = mask,
         on = 1, prob = prob and prob(p.name, p.entry) }
   end
   if s.masks ~= nil and selected == 0 then
      fail("part '%s': every mask is 0, so the part has no element (set some elements to 1)",
         part.name)
   end
   if s.random ~= nil then
      part.rng = random.new(s.random_seed)
      part:redraw()
   end
end

-- Selects the parameters of one non-rest spec, or fails naming what matched nothing.
local function select(name, s, list, layers)
   local prob
   if s.random ~= nil then
      local r = config.check("partition: part '" .. name .. "': random", s.random, RANDOM_SCHEMA)
      prob = probability_function(name, r.prob)
      s.random_seed = r.seed
   end
   for _, pattern in ipairs(s.patterns) do
      local found = false
      for _, p in ipairs(list) do
         found = found or p.name:find(pattern) ~= nil
      end
      if not found then
         fail("part '%s': pattern '%s' matches no parameter", name, pattern)
      end
   end
   for pname in pairs(s.masks or {}) do
      local found = false
      for _, p in ipairs(list) do
         found = found or p.name == pname
      end
      if not found then
         fail("part '%s': mask given for '%s', which is not a parameter of the model", name,
            tostring(pname))
      end
   end
   local entries = {}
   for _, p in ipairs(list) do
      if matches_patterns(s, p.name) and passes(s, p, layers, prob) then
         entries[#entries + 1] = p
      end
   end
   if #entries == 0 then
      fail("part '%s' (%s) matches no parameter", name, describe_spec(s, layers))
   end
   return entries, prob
end

-- Gives `part` the other elements of the parameters in `shared` (a list of
-- { name =, entry =, mask =, on = }): those where the mask is not `on`.
local function attach_complements(part, shared)
   if #shared == 0 then
      return
   end
   part.masks, part.mask_list = {}, {}
   for _, m in ipairs(shared) do
      part.masks[m.name] = m.mask
      part.mask_list[#part.mask_list + 1] = { name = m.name, entry = m.entry, mask = m.mask,
         on = 1 - m.on }
   end
end

-- The rest of the model: every parameter that `claimed` (entry -> part
-- name) does not map, plus the other elements of those in `masked` (entry
-- -> { name =, entry =, mask =, on = }).
local function rest_part(model, name, claimed, masked)
   local entries, shared = {}, {}
   for _, p in ipairs(model.flat.list) do
      if claimed[p.entry] == nil or masked[p.entry] ~= nil then
         entries[#entries + 1] = p
      end
      if masked[p.entry] ~= nil then
         shared[#shared + 1] = masked[p.entry]
      end
   end
   if #entries == 0 then
      fail("part '%s' (rest) matches no parameter: the other parts claim them all", name)
   end
   local part = new_part(name, model, entries)
   attach_complements(part, shared)
   part.rest = true
   return part
end

-- The masks of a masked part as a map entry -> { name =, entry =, mask =, on = }.
local function masks_by_entry(part, into)
   into = into or {}
   for _, m in ipairs(part.mask_list or {}) do
      into[m.entry] = m
   end
   return into
end

-- Builds one part. `claimed` maps entries of other parts to their part
-- names, and `masked` maps the entries of masked parts to their masks.
local function build_part(model, name, spec, claimed, masked)
   local s = normalize(name, spec)
   check_spec(name, s)
   if s.rest then
      return rest_part(model, name, claimed, masked or {})
   end
   local entries, prob = select(name, s, model.flat.list, boundary_layers(model.flat.list))
   local part = new_part(name, model, entries)
   attach_masks(part, s, prob)
   part.rest = false
   return part
end

-- Creates a partition of a flattened model from a map of part name to spec.
function M.new(model, specs)
   check_flattened(model, 'partition.new', 2)
   if type(specs) ~= 'table' or next(specs) == nil then
      error('partition.new: specs must be a non-empty table mapping part names to specs', 2)
   end
   local names, rest_name = {}, nil
   for name, spec in pairs(specs) do
      if type(name) ~= 'string' then
         error(string.format('partition.new: part name %s is a %s (expected a string)',
            tostring(name), type(name)), 2)
      end
      if spec == 'rest' or (type(spec) == 'table' and spec.rest == true) then
         if rest_name ~= nil then
            local pair = { rest_name, name }
            table.sort(pair)
            error(string.format("partition.new: parts '%s' and '%s' are both 'rest'", pair[1],
               pair[2]), 2)
         end
         rest_name = name
      else
         names[#names + 1] = name
      end
   end
   table.sort(names)
   local self = setmetatable({ model = model, parts = {}, names = {} }, Partition)
   local claimed, masked = {}, {}
   local ok, err = pcall(function()
      for _, name in ipairs(names) do
         local part = build_part(model, name, specs[name], claimed)
         masks_by_entry(part, masked)
         for _, p in ipairs(part.entries) do
            if claimed[p.entry] ~= nil then
               local a, b = claimed[p.entry], name
               fail("parameter '%s' is in both part '%s' and part '%s'", p.name, a, b)
            end
            claimed[p.entry] = name
         end
         self.parts[name] = part
      end
      if rest_name ~= nil then
         self.parts[rest_name] = build_part(model, rest_name, specs[rest_name], claimed, masked)
      end
   end)
   if not ok then
      rethrow(err, 2)
   end
   for name in pairs(self.parts) do
      self.names[#self.names + 1] = name
   end
   table.sort(self.names)
   return self
end

-- Creates a single part of a flattened model from a spec ('rest' selects every parameter).
function M.part(model, spec, name)
   check_flattened(model, 'partition.part', 2)
   local ok, result = pcall(build_part, model, name or 'params', spec, {}, {})
   if not ok then
      rethrow(result, 2)
   end
   return result
end

-- The rest of the model beside `part`: the parameters outside it and, of
-- its masked parameters, the elements where the mask is 0.
function M.complement(part, name)
   if not M.is_part(part) then
      error('partition.complement: expected a part, got ' .. tostring(part), 2)
   end
   part:check_current('partition.complement', 2)
   local claimed = {}
   for _, p in ipairs(part.entries) do
      claimed[p.entry] = part.name
   end
   local ok, result = pcall(rest_part, part.model, name or 'rest', claimed,
      masks_by_entry(part))
   if not ok then
      rethrow(result, 2)
   end
   return result
end

-- Returns true when v is a Part.
function M.is_part(v)
   return getmetatable(v) == Part
end

function Partition:part(name)
   local part = self.parts[name]
   if part == nil then
      error(string.format("partition: no part named '%s' (parts: %s)", tostring(name),
         table.concat(self.names, ', ')), 2)
   end
   return part
end

-- Redraws the masks of every random part.
function Partition:redraw()
   for _, name in ipairs(self.names) do
      if self.parts[name].rng ~= nil then
         self.parts[name]:redraw()
      end
   end
end

function Partition:state()
   local s = {}
   for name, part in pairs(self.parts) do
      s[name] = part:state()
   end
   return s
end

function Partition:load_state(s)
   for name, part in pairs(self.parts) do
      if s[name] == nil then
         error(string.format("partition: state has no entry for part '%s'", name), 2)
      end
      part:load_state(s[name])
   end
end

-- One line per part: its name, parameter names and element count.
function Partition:describe()
   local lines = {}
   for _, name in ipairs(self.names) do
      lines[#lines + 1] = self.parts[name]:describe()
   end
   return table.concat(lines, '\n')
end

-- Raises an error unless the part still matches its model's flat buffers
-- (replace_head re-flattens a model and moves every parameter).
function Part:check_current(fn, level)
   if self.model.flat ~= self.flat then
      error(string.format("%s: part '%s' was built before the model was flattened again; "
         .. 'build the partition again', fn, self.name), (level or 1) + 1)
   end
end

function Part:contains(entry)
   return self.set[entry] == true
end

-- Returns the runs an optimizer updates over `entries` (a list of { entry
-- = }), each { offset, count, state_offset } in elements, plus mask and on
-- for the parameters that `masked` maps (entry -> { mask =, on = }): only
-- their elements whose mask equals `on` are updated. Unmasked parameters
-- that touch in the flat buffers merge into one run, and state_offset
-- places each run in state buffers of one element per parameter element.
function M.runs(entries, masked)
   local sorted = {}
   for i, p in ipairs(entries) do
      sorted[i] = p.entry
   end
   table.sort(sorted, function(a, b) return a.offset < b.offset end)
   local runs, state_offset = {}, 0
   for _, e in ipairs(sorted) do
      local n, m, last = e.value:numel(), masked[e], runs[#runs]
      if m == nil and last ~= nil and last.mask == nil
            and last.offset + last.count == e.offset then
         last.count = last.count + n
      elseif n > 0 then
         runs[#runs + 1] = { offset = e.offset, count = n, state_offset = state_offset,
            mask = m and m.mask, on = m and m.on }
      end
      state_offset = state_offset + n
   end
   return runs
end

-- Returns the part's runs (see partition.runs): its ranges, with masked
-- parameters in runs of their own.
function Part:runs()
   if self.masks == nil then
      return self.ranges
   end
   if self.run_list == nil then
      local masked = {}
      for _, m in ipairs(self.mask_list) do
         masked[m.entry] = m
      end
      self.run_list = M.runs(self.entries, masked)
   end
   return self.run_list
end

-- Draws new random masks from the part's generator (1 with each parameter's probability).
function Part:redraw()
   if self.rng == nil then
      error(string.format("partition: part '%s' has no random masks to redraw", self.name), 2)
   end
   for _, m in ipairs(self.mask_list) do
      self.rng:fill_bernoulli(m.mask, m.prob)
   end
end

-- True when the part has the elements where some mask is 0 (a rest beside
-- a masked part).
function Part:has_complements()
   for _, m in ipairs(self.mask_list or {}) do
      if m.on == 0 then
         return true
      end
   end
   return false
end

-- The generator position and current masks (copies), for checkpoints.
function Part:state()
   local s = { masks = {} }
   if self.rng ~= nil then
      s.rng = self.rng:get_state()
   end
   for _, m in ipairs(self.mask_list or {}) do
      s.masks[m.name] = m.mask:clone()
   end
   return s
end

function Part:load_state(s)
   if self.rng ~= nil then
      self.rng:set_state(s.rng)
   end
   for _, m in ipairs(self.mask_list or {}) do
      local saved = s.masks and s.masks[m.name]
      if saved == nil then
         error(string.format("partition: state of part '%s' has no mask for '%s'", self.name,
            m.name), 2)
      end
      m.mask:copy(saved)
   end
end

-- Returns one line: the part's name, its parameters and its element count.
-- Of a masked parameter only the elements in the part count, at the
-- current masks.
function Part:describe()
   local names = {}
   for _, p in ipairs(self.entries) do
      names[#names + 1] = p.name
   end
   local count = self.numel
   for _, m in ipairs(self.mask_list or {}) do
      local outside = 0
      for _, v in ipairs(m.mask:totable()) do
         outside = outside + ((v ~= 0) == (m.on == 1) and 0 or 1)
      end
      count = count - outside
   end
   return string.format('%s: %s (%d elements in %d ranges%s)', self.name,
      table.concat(names, ', '), count, #self.ranges, self.masks and ', masked' or '')
end

return M
