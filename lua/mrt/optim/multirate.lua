-- mrt.optim.multirate: multirate training. The trainable parameters are
-- split into parts that move on different time scales. The slow part takes
-- one step of h per block of k iterations, and the fast part k steps of h/k.
--
-- Multirate SGD with linear drift (drift = true), per block of k steps:
--    p_S := mu*p_S + grad_S (+ omega_S*theta_S)
--    repeat k times, each time on the next minibatch:
--       p_F := mu*p_F + grad_F (+ omega_F*theta_F)
--       theta_F := theta_F - (h/k)*p_F
--       theta_S := theta_S - (h/k)*p_S          (the drift)
-- The slow gradient and the block's first fast gradient are taken at the
-- same point, so one feval with needs_grad on both parts serves them; the
-- k-1 other iterations set needs_grad on the fast part only, and backward
-- stops at the lowest fast parameter.
--
-- Without drift (drift = false), the slow part jumps once per block,
-- p_S := mu*p_S + grad_S, theta_S := theta_S - h*p_S, then the fast part
-- takes k steps of h/k. The first fast gradient is taken after the jump,
-- so the block's first iteration calls feval twice on the same minibatch:
-- once with needs_grad on the slow part, once on the fast part.
--
-- Ablation slow_at = 'end' (with drift = false): the slow part stays
-- frozen for k-1 iterations and steps on the block's last iteration with
-- the gradient of that iteration (one feval, needs_grad on both parts).
-- The ablation "same step size for both parts" sets parts.slow.lr = h/k.
--
-- More than two scales: levels = { slowest, ..., fastest } and k = { K_1,
-- ..., K_{r-1} } give level i the step h_i = h_{i-1}/K_{i-1} (h_1 = h),
-- taken every K_i*...*K_{r-1} iterations (see mrt.optim.hierarchy).
--
-- The block counter is the optimizer's global iteration count: a block
-- that is open at the end of an epoch continues into the next one, also
-- when k does not divide the number of batches per epoch. Weight decay
-- enters with a gradient; a drifting part's steps between its updates
-- re-apply the decay folded into p_S at its last update.
--
--    local opt = optim.multirate(model, { lr = 0.005, k = 5, momentum = 0.9,
--       fast = '^fc%.' })                          -- slow = the rest
--    local opt = optim.multirate(model, { lr = 1, k = 5, slow = { kind = 'bias' } })
--    local opt = optim.multirate(model, { partition = p, levels = { 'a', 'b', 'c' },
--       k = { 4, 2 }, lr = 0.8, parts = { c = { optimizer = 'adam', lr = 1e-3 } } })
--
-- Options (default in brackets):
--    lr          h, the slowest part's step per update; a number >= 0 or a
--                schedule  [required]
--    k           iterations per block, an integer >= 1, or a list of r-1
--                integers for r levels  [required]
--    drift       linear drift of the slow parts  [true]
--    slow_at     'start' or 'end' of the block (see the ablation above)  ['start']
--    fast, slow  the two parts: part names of `partition`, parts, or part
--                specs (mrt.partition). Give one and the other is the rest
--                of the model; give both and the parameters in neither stay
--                frozen.  [with partition: 'fast' and 'slow']
--    partition   a partition whose part names fast, slow and levels use
--    levels      list of parts (names, parts or specs), slowest first, in
--                place of fast and slow
--    parts       per-part options by part name: any option of
--                mrt.optim.base (optimizer, lr, momentum, weight_decay,
--                betas, gamma, tau, ...). A part's lr is its step per
--                update, replacing h_i.  [{}]
--    seed        seed of the generator for Langevin noise  [0]
--    optimizer, momentum, dampening, nesterov, weight_decay, betas, eps,
--    amsgrad, gamma, tau
--                defaults for every part (see mrt.optim.base)  [sgd, 0, ...]
--
-- Element-mask parts: a part with fixed or random masks (mrt.partition)
-- contains only the elements where its mask is 1. The part given as the
-- rest of it (fast or slow left out) contains the others, so one weight
-- tensor can have slow and fast elements. A random part draws new masks at
-- the start of each block of the slowest level that has elements of its
-- parameters (with fast random and slow the rest, every k iterations). An
-- element's optimizer state in a part moves only while the element belongs
-- to that part.
--
-- With nesterov, a drifting slow part spreads the step of its update,
-- h*(g + mu*p_S), over the k iterations: its drift re-applies that
-- direction, so a block moves it exactly as far as a jump would.

local config = require 'mrt.optim.config'
local base = require 'mrt.optim.base'
local hierarchy = require 'mrt.optim.hierarchy'
local partition = require 'mrt.partition'

local M = {}

local FN = 'optim.multirate'

local SCHEMA = {
   lr = { kind = 'lr', min = 0, required = true },
   k = { kind = 'any', required = true, expect = 'an integer >= 1 or a list of them' },
   drift = { kind = 'boolean', default = true },
   slow_at = { kind = 'string', one_of = { 'start', 'end' }, default = 'start' },
   fast = { kind = 'any', expect = 'a part name, a part or a part spec' },
   slow = { kind = 'any', expect = 'a part name, a part or a part spec' },
   partition = { kind = 'table', expect = 'a partition (partition.new)' },
   levels = { kind = 'table', expect = 'a list of parts, slowest first' },
   parts = { kind = 'table', default = {}, expect = 'a map from part name to options' },
   seed = { kind = 'integer', min = 0, default = 0 },
}

-- A part given by name (with a partition), as a Part, or as a spec.
local function resolve_part(model, o, key, value, level)
   if o.partition ~= nil and type(value) == 'string' then
      local p = o.partition.parts[value]
      if p == nil then
         error(string.format("%s: option '%s': no part named '%s' in the partition (parts: %s)",
            FN, key, value, table.concat(o.partition.names, ', ')), level + 1)
      end
      return p
   end
   return hierarchy.part_option(model, FN, key, value, level + 1)
end

-- Every parameter outside `part`, and the other elements of its masked
-- ones, named `name`.
local function complement(part, name, level)
   local ok, rest = pcall(partition.complement, part, name)
   if not ok then
      error(string.format('%s: the %s part (the rest of the model): %s', FN, name,
         (tostring(rest):gsub('^[^:\n]*:%d+: ', '', 1))), level + 1)
   end
   return rest
end

-- The parts of the levels, slowest first.
local function level_parts(model, o, level)
   level = level + 1
   if o.levels ~= nil then
      if o.fast ~= nil or o.slow ~= nil then
         error(FN .. ': give either levels or fast/slow, not both', level)
      end
      local list = {}
      for i, item in ipairs(o.levels) do
         list[i] = resolve_part(model, o, 'levels[' .. i .. ']', item, level)
      end
      if #list == 0 then
         error(FN .. ": option 'levels' is empty (expected a list of parts, slowest first)", level)
      end
      return list
   end
   local fast, slow = o.fast, o.slow
   if o.partition ~= nil then
      fast, slow = fast or 'fast', slow or 'slow'
   elseif fast == nil and slow == nil then
      error(FN .. ": give the fast part (option 'fast'), the slow part ('slow'), both, "
         .. "or 'levels'", level)
   end
   local fast_part = fast ~= nil and resolve_part(model, o, 'fast', fast, level)
   local slow_part = slow ~= nil and resolve_part(model, o, 'slow', slow, level)
   fast_part = fast_part or complement(slow_part, 'fast', level)
   slow_part = slow_part or complement(fast_part, 'slow', level)
   return { slow_part, fast_part }
end

local function check_k(k, r, level)
   local list = type(k) == 'table' and k or {}
   if type(k) == 'number' then
      for i = 1, r - 1 do
         list[i] = k
      end
   end
   if type(k) ~= 'table' and type(k) ~= 'number' then
      config.fail_option(FN, 'k', k, 'an integer >= 1 or a list of them', level + 1)
   end
   local text = type(k) == 'table' and config.render_list(k) or tostring(k)
   if type(k) == 'table' and #k ~= r - 1 then
      config.fail_option_text(FN, 'k', text,
         string.format('%d integers >= 1, one per level but the fastest', r - 1), level + 1)
   end
   for _, v in ipairs(list) do
      if type(v) ~= 'number' or v < 1 or v ~= math.floor(v) then
         config.fail_option_text(FN, 'k', text, 'an integer >= 1 or a list of them', level + 1)
      end
   end
   return list
end

-- The base-optimizer settings of each level: scheme defaults, then parts[name].
local function level_settings(o, parts, level)
   local names = {}
   for _, part in ipairs(parts) do
      names[part.name] = true
   end
   for name, opts in pairs(o.parts) do
      if not names[name] then
         local list = {}
         for _, part in ipairs(parts) do
            list[#list + 1] = part.name
         end
         error(string.format("%s: option 'parts' names '%s', which is not a part of the "
            .. 'scheme (parts: %s)', FN, tostring(name), table.concat(list, ', ')), level + 1)
      end
      config.check(string.format("%s: parts['%s']", FN, name), opts, base.PART_SCHEMA,
         level + 1)
   end
   local defaults = {}
   for key, v in pairs(o) do
      if key ~= 'lr' then
         defaults[key] = v
      end
   end
   local out = {}
   for i, part in ipairs(parts) do
      local fn = string.format("%s: part '%s'", FN, part.name)
      out[i] = base.resolve(fn, defaults, o.parts[part.name], level + 1)
   end
   return out
end

local function mode_of(o, level)
   if o.slow_at == 'end' then
      if o.drift then
         error(FN .. ": slow_at = 'end' needs drift = false", level + 1)
      end
      return 'end'
   end
   return o.drift and 'drift' or 'jump'
end

function M.multirate(model, opts)
   hierarchy.check_model(FN, model, 2)
   local o = hierarchy.check_options(FN, opts, SCHEMA, 2)
   if o.partition ~= nil and getmetatable(o.partition) ~= partition.Partition then
      config.fail_option(FN, 'partition', o.partition, 'a partition (partition.new)', 2)
   end
   local parts = level_parts(model, o, 2)
   local ks = check_k(o.k, #parts, 2)
   local settings = level_settings(o, parts, 2)
   local mode = mode_of(o, 2)
   local levels = {}
   for i, part in ipairs(parts) do
      levels[i] = { part = part, settings = settings[i], k = ks[i] }
   end
   return hierarchy.new(model, levels, { fn = FN, kind = 'multirate', lr = o.lr, mode = mode,
      seed = o.seed }, 2)
end

return M
