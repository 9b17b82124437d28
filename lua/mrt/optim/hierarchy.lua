-- mrt.optim.hierarchy: the engine behind optim.sgd, optim.adam,
-- optim.adamw, optim.langevin and optim.multirate: an ordered list of
-- levels, slowest first, each one part of the model with its own base
-- optimizer (mrt.optim.base).
--
-- Level i updates every P_i iterations, P_i = K_i*K_{i+1}*...*K_{r-1}
-- (P_r = 1 for the fastest level r), and its default step per update is
-- h_i = h / (K_1*...*K_{i-1}), so h_i = h_{i-1}/K_{i-1}. A level's `lr`
-- option replaces h_i. With one level this is the plain base optimizer.
--
-- The iteration counter t (0-based, = opt.iteration before the step) is
-- global: blocks of P_i iterations continue across epoch boundaries, and
-- level i is due at iteration t when t % P_i == 0 (mode 'end': when
-- t % P_i == P_i - 1). Modes for the levels above the fastest:
--    'drift'  Multirate with linear drift. One feval per iteration, with
--             needs_grad on the due levels' parts. The due levels fold
--             their gradient into their state. Then every level steps by
--             h_i/P_i along its state, so a slow level covers h_i per block
--             in P_i equal steps.
--    'jump'   Multirate without drift. Each due level, slowest first,
--             takes its own feval with needs_grad on its part only and
--             steps by h_i. The fastest level's gradient is taken last,
--             after the jumps, so a block's first iteration calls feval
--             once per due level, on the same minibatch.
--    'end'    Ablation: slow part frozen, then one step. One feval per
--             iteration. A due level updates and steps by h_i with the
--             gradient of its block's last iteration.
-- step returns the loss of the feval that gave the fastest level's
-- gradient. Weight decay enters with a gradient (or, for AdamW, with every
-- step of the parameters): a part that gets no gradient on an iteration
-- gets no fresh decay term, and its drift re-applies the decay folded into
-- its state at its last update.

local config = require 'mrt.optim.config'
local schedule = require 'mrt.optim.schedule'
local base = require 'mrt.optim.base'
local random = require 'mrt.random'
local partition = require 'mrt.partition'

local M = {}

local Optimizer = {}
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

-- Fails when two levels share a parameter, unless one level has the
-- elements where a mask is 1 and the other those where the same mask is 0.
local function check_levels(fn, levels, level)
   local owner, names = {}, {}
   for _, lv in ipairs(levels) do
      local part = lv.part
      part:check_current(fn, level + 1)
      if names[part.name] then
         error(string.format("%s: two parts are named '%s'; give each part its own name (the "
            .. 'third argument of partition.part, or partition.new)', fn, part.name), level + 1)
      end
      names[part.name] = true
      local masked = {}
      for _, m in ipairs(part.mask_list or {}) do
         masked[m.entry] = m
      end
      for _, p in ipairs(part.entries) do
         local mine, other = masked[p.entry], owner[p.entry]
         if other ~= nil then
            local theirs = other.mask
            if mine == nil or theirs == nil or mine.mask ~= theirs.mask or mine.on == theirs.on
                  or other.shared then
               error(string.format("%s: parameter '%s' is in both part '%s' and part '%s' (two "
                  .. 'parts share a parameter only as a masked part and its complement, see '
                  .. 'partition.complement)', fn, p.name, other.name, part.name), level + 1)
            end
            other.shared = true
         else
            owner[p.entry] = { name = part.name, mask = mine }
         end
      end
   end
end

-- Creates the optimizer. levels: list, slowest first, of { part =,
-- settings = (base.resolve output), k = K_i (all but the last) }.
-- opts: fn (name for errors), lr (h, number or schedule), mode, seed, kind.
function M.new(model, levels, opts, level)
   level = (level or 1) + 1
   check_levels(opts.fn, levels, level)
   local self = setmetatable({ model = model, fn = opts.fn, kind = opts.kind, lr = opts.lr,
      mode = opts.mode or 'drift', levels = levels, iteration = 0 }, Optimizer)
   for _, lv in ipairs(levels) do
      if lv.settings.optimizer == 'langevin' then
         self.generator = random.new(opts.seed or 0)
      end
   end
   local r = #levels
   local divisor = 1
   for i, lv in ipairs(levels) do
      lv.name = lv.part.name
      lv.divisor = divisor                 -- h_i = h / divisor
      divisor = divisor * (i < r and lv.k or 1)
   end
   local period = 1
   for i = r, 1, -1 do
      levels[i].period = period
      period = period * (levels[i - 1] and levels[i - 1].k or 1)
   end
   -- A random part draws new masks at the start of each block of the slowest
   -- level that holds elements of its parameters, so no part gains or loses
   -- elements in the middle of its block.
   for _, lv in ipairs(levels) do
      if lv.part.rng ~= nil then
         lv.redraw_every = lv.period
         local mine = {}
         for _, m in ipairs(lv.part.mask_list) do
            mine[m.mask] = true
         end
         for _, other in ipairs(levels) do
            for _, m in ipairs(other.part.mask_list or {}) do
               if mine[m.mask] and other.period > lv.redraw_every then
                  lv.redraw_every = other.period
               end
            end
         end
      end
   end
   for i, lv in ipairs(levels) do
      local store = self.mode == 'drift' and i < r
      lv.stepper = base.stepper(lv.part, lv.settings,
         { store = store, rng = self.generator and self.generator.state })
   end
   return self
end

-- Sets needs_grad on exactly the parts of the given levels.
function Optimizer:set_needs(list)
   local set = {}
   for _, lv in ipairs(list) do
      for _, p in ipairs(lv.part.entries) do
         set[p.entry] = true
      end
   end
   self.model:set_needs_grad(function(_, entry) return set[entry] == true end)
end

-- Step size per update of a level at schedule time `now`.
function Optimizer:level_lr(lv, now)
   local default = schedule.value(self.lr, now) / lv.divisor
   return lv.stepper:lr_at(default, now)
end

local function due(lv, t, mode)
   if mode == 'end' then
      return t % lv.period == lv.period - 1
   end
   return t % lv.period == 0
end

function Optimizer:step_drift(feval, t, now)
   local list = {}
   for _, lv in ipairs(self.levels) do
      if due(lv, t, 'drift') then
         list[#list + 1] = lv
      end
   end
   self:set_needs(list)
   local loss = feval()
   for _, lv in ipairs(self.levels) do
      local lr = self:level_lr(lv, now)
      if due(lv, t, 'drift') then
         lv.stepper:update(lr, true, lv.period)
      else
         lv.stepper:apply(lr, lv.period)
      end
   end
   return loss
end

function Optimizer:step_jump(feval, t, now)
   local levels = self.levels
   for i = 1, #levels - 1 do
      local lv = levels[i]
      if due(lv, t, 'jump') then
         self:set_needs({ lv })
         feval()
         lv.stepper:update(self:level_lr(lv, now), true)
      end
   end
   local fastest = levels[#levels]
   self:set_needs({ fastest })
   local loss = feval()
   fastest.stepper:update(self:level_lr(fastest, now), true)
   return loss
end

function Optimizer:step_end(feval, t, now)
   local list = {}
   for _, lv in ipairs(self.levels) do
      if due(lv, t, 'end') then
         list[#list + 1] = lv
      end
   end
   self:set_needs(list)
   local loss = feval()
   for _, lv in ipairs(list) do
      lv.stepper:update(self:level_lr(lv, now), true)
   end
   return loss
end

-- Runs one training iteration. feval() runs forward, loss and backward on
-- the current minibatch for the parameters with needs_grad and returns the
-- loss. clock (optional) is the iteration at which schedules are read; it
-- defaults to opt.iteration (brains pass the global iteration).
function Optimizer:step(feval, clock)
   if type(feval) ~= 'function' then
      error(string.format('%s: step expects a function feval, got %s', self.fn, type(feval)), 2)
   end
   self.levels[1].part:check_current(self.fn, 2)
   local t = self.iteration
   local now = clock or t
   -- The masks drawn when a random part was built serve its first block.
   for _, lv in ipairs(self.levels) do
      if lv.part.rng ~= nil and t > 0 and t % lv.redraw_every == 0 then
         lv.part:redraw()
      end
   end
   local loss
   if self.mode == 'drift' then
      loss = self:step_drift(feval, t, now)
   elseif self.mode == 'jump' then
      loss = self:step_jump(feval, t, now)
   else
      loss = self:step_end(feval, t, now)
   end
   self.iteration = t + 1
   return loss
end

-- The position in the block of each level: iterations since its last update.
function Optimizer:block_position()
   local pos = {}
   for _, lv in ipairs(self.levels) do
      pos[lv.name] = self.iteration % lv.period
   end
   return pos
end

-- Everything needed to resume bit-identically: the iteration (which fixes
-- the position in every block), each part's state and the noise generator.
function Optimizer:state()
   local s = { kind = self.kind, iteration = self.iteration, parts = {} }
   for _, lv in ipairs(self.levels) do
      s.parts[lv.name] = lv.stepper:state()
      if lv.part.masks ~= nil then
         s.masks = s.masks or {}
         s.masks[lv.name] = lv.part:state()
      end
   end
   if self.generator ~= nil then
      s.rng = self.generator:get_state()
   end
   return s
end

function Optimizer:load_state(s)
   if type(s) ~= 'table' or s.kind ~= self.kind then
      error(string.format('%s: load_state: state is for %s, expected %s', self.fn,
         tostring(type(s) == 'table' and s.kind), self.kind), 2)
   end
   for _, lv in ipairs(self.levels) do
      if s.parts == nil or s.parts[lv.name] == nil then
         error(string.format("%s: load_state: state has no part '%s'", self.fn, lv.name), 2)
      end
      lv.stepper:load_state(s.parts[lv.name])
      if lv.part.masks ~= nil then
         if s.masks == nil or s.masks[lv.name] == nil then
            error(string.format("%s: load_state: state has no masks for part '%s'", self.fn,
               lv.name), 2)
         end
         lv.part:load_state(s.masks[lv.name])
      end
   end
   if self.generator ~= nil then
      self.generator:set_state(s.rng)
   end
   self.iteration = s.iteration
end

-- Fails unless model is a flattened model.
function M.check_model(fn, model, level)
   if type(model) ~= 'table' or model.parameters == nil then
      error(string.format('%s: expected a model as argument 1, got %s', fn, tostring(model)),
         (level or 1) + 1)
   end
   if model.flat == nil then
      error(string.format('%s: the model is not flattened; call model:flatten() before '
         .. 'creating the optimizer', fn), (level or 1) + 1)
   end
end

-- The part an option names: a Part of this model, or a spec that
-- mrt.partition turns into one ('rest' or nil: every parameter).
function M.part_option(model, fn, key, value, level)
   level = (level or 1) + 1
   if partition.is_part(value) then
      if value.model ~= model then
         error(string.format("%s: option '%s' is a part of another model", fn, key), level)
      end
      return value
   end
   local ok, part = pcall(partition.part, model, value == nil and 'rest' or value, key)
   if not ok then
      error(string.format("%s: option '%s': %s", fn, key,
         (tostring(part):gsub('^[^:\n]*:%d+: ', '', 1))), level)
   end
   return part
end

-- A copy of t with the fields of extra set.
function M.with(t, extra)
   local out = {}
   for k, v in pairs(t) do
      out[k] = v
   end
   for k, v in pairs(extra) do
      out[k] = v
   end
   return out
end

-- Builds a one-level optimizer (the plain base optimizer) on option
-- `params` (default: every parameter); opts were checked by the caller.
function M.single(model, fn, kind, opts, level)
   level = (level or 1) + 1
   local part = M.part_option(model, fn, 'params', opts.params, level)
   local settings = base.resolve(fn, {}, M.with(opts, { optimizer = kind }), level)
   settings.lr = nil
   return M.new(model, { { part = part, settings = settings } },
      { fn = fn, kind = kind, lr = opts.lr, seed = opts.seed }, level)
end

-- Validates the option table `opts` of a constructor against its schema
-- plus the per-part options, and returns the checked copy.
function M.check_options(fn, opts, schema, level)
   local full = {}
   for k, v in pairs(base.PART_SCHEMA) do
      full[k] = v
   end
   for k, v in pairs(schema) do
      full[k] = v
   end
   return config.check(fn, opts, full, (level or 1) + 1)
end

return M
