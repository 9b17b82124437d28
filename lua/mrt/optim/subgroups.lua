-- mrt.optim.subgroups: multirate with random subgroups of weights, a
-- regularizer, and its ablation without multirate (random zeroing).
--
-- optim.subgroups: at the start of each block a new random subset of
-- each selected weight tensor is drawn to be slow, each element with its
-- layer's probability `prob`. On the block's masked iterations the slow
-- elements are held at zero for feval and do not move, while every other
-- trainable element takes a step of h. On the block's full iteration the
-- slow elements are back in place for feval and everything updates in one
-- step: slow elements with step h*k, the others with h. Blocks are counted
-- on the global iteration, like every multirate scheme, and continue across
-- epochs. With full_step = 'last' (the default) a block has k iterations,
-- k-1 masked and the full one last, so each element covers the time h*k per
-- block: fast ones in k steps of h, slow ones in one step of h*k; with k = 1
-- this is the base optimizer. With full_step = 'extra' a block has k+1
-- iterations: k masked ones, then the full one.
--
-- optim.random_zeroing: on every iteration a new random subset is drawn
-- and held at zero for feval. Those elements do not move, and the others
-- take a step of h. With plain SGD this is DropConnect without rescaling,
-- with no multirate.
--
-- The base optimizer is plain SGD by default (g = grad + weight_decay*theta,
-- theta -= lr*g, no momentum). Any SGD, Adam or AdamW setting of
-- mrt.optim.base may replace it. Each element has one optimizer state,
-- which moves only on the iterations where the element steps: every
-- iteration while it is fast, the full one while it is slow. Each element
-- counts its own updates, for Adam's bias correction and SGD's first buffer
-- update. Between two calls of
-- step the model always holds its full weights (the zeroing lasts only for
-- feval), so evaluation and checkpoints see the real parameters.
--
--    local opt = optim.subgroups(model, { lr = 0.1, k = 5, seed = 1,
--       prob = { ['^0%.weight$'] = 0.8, ['^2%.weight$'] = 0.5 } })
--    local opt = optim.subgroups(model, { lr = 1e-3, k = 5, prob = 0.5,
--       optimizer = 'adam' })
--
-- Options (default in brackets):
--    lr            h, a number >= 0 or a schedule  [required]
--    k             the slow elements' step multiplier, an integer >= 1: a
--                  block has k-1 masked iterations and then the full one
--                  (full_step 'last'), or k masked ones and then the full
--                  one ('extra')  (subgroups only) [required]
--    full_step     'last' or 'extra' (subgroups only, see above)  ['last']
--    prob          probability of an element being slow: a number, a map
--                  from name pattern to probability, or function(name,
--                  entry); only weights are selected (see mrt.partition)
--    seed          seed of the mask generator  [0]
--    slow          in place of prob and seed: a part with random or fixed
--                  masks (fixed masks are never redrawn)
--    params        the trained parameters (see optim.sgd); they must
--                  include the masked ones  [every parameter]
--    optimizer     'sgd', 'adam' or 'adamw'  ['sgd']
--    weight_decay, momentum, dampening, nesterov, betas, eps, amsgrad
--                  the base optimizer's settings (see mrt.optim.base)

local lib = require 'mrt.ffi'
local base = require 'mrt.optim.base'
local config = require 'mrt.optim.config'
local hierarchy = require 'mrt.optim.hierarchy'
local partition = require 'mrt.partition'
local schedule = require 'mrt.optim.schedule'

local C = lib.C

local M = {}

local Subgroups = {}
Subgroups.__index = Subgroups
M.Subgroups = Subgroups

local function schema(with_k)
   local s = {
      lr = { kind = 'lr', min = 0, required = true },
      prob = { kind = 'any', expect = 'a probability, a map from pattern to probability, '
         .. 'or a function' },
      seed = { kind = 'integer', min = 0, default = 0 },
      slow = { kind = 'any', expect = 'a part with element masks' },
      params = { kind = 'any', expect = 'a part or a part spec' },
   }
   for key, rule in pairs(base.PART_SCHEMA) do
      if key ~= 'lr' and key ~= 'gamma' and key ~= 'tau' then
         s[key] = rule
      end
   end
   s.optimizer = { kind = 'string', one_of = { 'sgd', 'adam', 'adamw' } }
   if with_k then
      s.k = { kind = 'integer', min = 1, required = true }
      s.full_step = { kind = 'string', one_of = { 'last', 'extra' }, default = 'last' }
   end
   return s
end

local SUBGROUPS, ZEROING = schema(true), schema(false)

-- The masked part from options slow, or prob and seed.
local function masked_part(model, fn, o, level)
   level = level + 1
   if (o.slow == nil) == (o.prob == nil) then
      error(fn .. ": give exactly one of 'prob' (random masks) and 'slow' (a masked part)", level)
   end
   local part
   if o.slow ~= nil then
      part = hierarchy.part_option(model, fn, 'slow', o.slow, level)
   else
      part = hierarchy.part_option(model, fn, 'prob',
         { random = { prob = o.prob, seed = o.seed } }, level)
   end
   if part.masks == nil then
      error(string.format("%s: part '%s' has no element masks (expected a part spec with "
         .. 'random or masks)', fn, part.name), level)
   end
   return part
end

-- Returns the runs of the trained parameters with each masked tensor's
-- fast elements (mask 0), and the runs of the slow elements (mask 1) alone,
-- both laid out over the same state buffers.
local function runs_of(params, slow)
   local masked = {}
   for _, m in ipairs(slow.mask_list) do
      masked[m.entry] = { mask = m.mask, on = 0 }
   end
   local all, only = partition.runs(params.entries, masked), {}
   for _, run in ipairs(all) do
      if run.mask ~= nil then
         only[#only + 1] = { offset = run.offset, count = run.count,
            state_offset = run.state_offset, mask = run.mask, on = 1 }
      end
   end
   return all, only
end

local function new(model, fn, o, level)
   level = level + 1
   local params = hierarchy.part_option(model, fn, 'params', o.params, level)
   if params.masks ~= nil then
      error(string.format("%s: option 'params': part '%s' has element masks; give whole "
         .. "parameters there and the masks in 'slow' or 'prob'", fn, params.name), level)
   end
   local slow = masked_part(model, fn, o, level)
   if slow:has_complements() then
      error(string.format("%s: part '%s' contains the elements where a mask is 0; give the "
         .. 'masked part itself', fn, slow.name), level)
   end
   for _, p in ipairs(slow.entries) do
      if not params:contains(p.entry) then
         error(string.format("%s: masked parameter '%s' is not in the trained parameters", fn,
            p.name), level)
      end
   end
   local settings = base.resolve(fn, {}, o, level)
   settings.lr = nil
   local fast_runs, slow_runs = runs_of(params, slow)
   local self = setmetatable({ model = model, fn = fn, lr = o.lr, k = o.k or 1,
      period = (o.k or 1) + (o.full_step == 'extra' and 1 or 0),
      params = params, slow = slow, slow_runs = slow_runs, fast_runs = fast_runs,
      iteration = 0, kind = fn:gsub('^optim%.', ''), ctx = model.flat.params:context() },
      Subgroups)
   self.stepper = base.stepper(params, settings, { runs = fast_runs })
   self.saved = {}
   for i, m in ipairs(slow.mask_list) do
      self.saved[i] = m.entry.value:clone()
   end
   return self
end

function M.subgroups(model, opts)
   hierarchy.check_model('optim.subgroups', model, 2)
   local o = config.check('optim.subgroups', opts, SUBGROUPS, 2)
   local self = new(model, 'optim.subgroups', o, 2)
   self.zeroing_every_step = false
   return self
end

function M.random_zeroing(model, opts)
   hierarchy.check_model('optim.random_zeroing', model, 2)
   local o = config.check('optim.random_zeroing', opts, ZEROING, 2)
   local self = new(model, 'optim.random_zeroing', o, 2)
   if self.slow.rng == nil then
      error("optim.random_zeroing: the masked part has fixed masks; random zeroing redraws "
         .. 'its masks every step (give prob, or a part with random masks)', 2)
   end
   self.zeroing_every_step = true
   return self
end

-- saved := theta*mask, theta := theta - saved: the masked elements become
-- exactly 0 and the others keep their values.
function Subgroups:zero_masked()
   for i, m in ipairs(self.slow.mask_list) do
      local saved = self.saved[i]
      saved:copy(m.entry.value)
      lib.check(C.mrt_mask_mul(self.ctx, saved.c.data, m.mask.c.data, saved:numel()), 3)
      m.entry.value:axpby(-1, saved, 1)
   end
end

-- theta := theta + saved: puts the masked elements back exactly.
function Subgroups:restore_masked()
   for i, m in ipairs(self.slow.mask_list) do
      m.entry.value:axpby(1, self.saved[i], 1)
   end
end

-- Runs one iteration (see the file header); feval() as for every optimizer.
function Subgroups:step(feval, clock)
   if type(feval) ~= 'function' then
      error(string.format('%s: step expects a function feval, got %s', self.fn, type(feval)), 2)
   end
   self.params:check_current(self.fn, 2)
   local t = self.iteration
   local lr = schedule.value(self.lr, clock or t)
   local params = self.params
   self.model:set_needs_grad(function(_, e) return params:contains(e) end)
   local pos = t % self.period
   -- The masks drawn when the part was built serve the first block.
   if self.slow.rng ~= nil and t > 0 and (self.zeroing_every_step or pos == 0) then
      self.slow:redraw()
   end
   local loss
   if self.zeroing_every_step or pos < self.period - 1 then
      self:zero_masked()
      loss = feval()
      self:restore_masked()
      self.stepper:update(lr, true)
   else
      loss = feval()
      self.stepper:update(lr, true)
      self.stepper:update(lr * self.k, true, 1, self.slow_runs)
   end
   self.iteration = t + 1
   return loss
end

function Subgroups:state()
   return { kind = self.kind, iteration = self.iteration, masks = self.slow:state(),
      base = self.stepper:state() }
end

function Subgroups:load_state(s)
   if type(s) ~= 'table' or s.kind ~= self.kind then
      error(string.format('%s: load_state: state is for %s', self.fn,
         tostring(type(s) == 'table' and s.kind)), 2)
   end
   if s.base == nil then
      error(string.format('%s: load_state: state has no base optimizer state; it was saved by '
         .. 'an older mrt, so restart the run from its start or from a newer checkpoint',
         self.fn), 2)
   end
   self.slow:load_state(s.masks)
   self.stepper:load_state(s.base)
   self.iteration = s.iteration
end

return M
