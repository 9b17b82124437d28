-- mrt.optim.subgroups: multirate with random subgroups of weights, a
-- regularizer, and its ablation without multirate (random zeroing).
--
-- optim.subgroups: every k iterations (at the start of each block, counted
-- on the global iteration like every multirate scheme) a new random subset
-- of each selected weight tensor is drawn to be slow, each element with its
-- layer's probability `prob`. On the block's first k-1 iterations the slow
-- elements are held at zero for feval and do not move, while every other
-- trainable element takes a plain SGD step of h. On the block's last
-- iteration the slow elements are back in place for feval and everything
-- updates in one step: slow elements with step h*k, the others with h. So
-- each element covers the time h*k per block: fast ones in k steps of h,
-- slow ones in one step of h*k. With k = 1 this is plain SGD.
--
-- optim.random_zeroing: on every iteration a new random subset is drawn
-- and held at zero for feval. Those elements do not move, and the others
-- take a plain SGD step of h. This is DropConnect without rescaling, with
-- no multirate.
--
-- The update is plain SGD by definition of the scheme: g = grad +
-- weight_decay*theta, theta -= lr*g (engine call mrt_masked_sgd), with no
-- momentum; Adam as the base of this scheme is NYI. Between two calls of
-- step the model always holds its full weights (the zeroing lasts only for
-- feval), so evaluation and checkpoints see the real parameters.
--
--    local opt = optim.subgroups(model, { lr = 0.1, k = 5, seed = 1,
--       prob = { ['^0%.weight$'] = 0.8, ['^2%.weight$'] = 0.5 } })
--
-- Options (default in brackets):
--    lr            h, a number >= 0 or a schedule  [required]
--    k             iterations per block, an integer >= 1 (subgroups only)
--                  [required]
--    prob          probability of an element being slow: a number, a map
--                  from name pattern to probability, or function(name,
--                  entry); only weights are selected (see mrt.partition)
--    seed          seed of the mask generator  [0]
--    slow          in place of prob and seed: a part with random or fixed
--                  masks (fixed masks are never redrawn)
--    weight_decay  [0]
--    params        the trained parameters (see optim.sgd); they must
--                  include the masked ones  [every parameter]

local lib = require 'mrt.ffi'
local config = require 'mrt.optim.config'
local hierarchy = require 'mrt.optim.hierarchy'
local partition = require 'mrt.partition'
local schedule = require 'mrt.optim.schedule'

local ffi, C = lib.ffi, lib.C

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
      weight_decay = { kind = 'number', min = 0, default = 0 },
      params = { kind = 'any', expect = 'a part or a part spec' },
   }
   if with_k then
      s.k = { kind = 'integer', min = 1, required = true }
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

local function new(model, fn, o, level)
   level = level + 1
   local params = hierarchy.part_option(model, fn, 'params', o.params, level)
   local slow = masked_part(model, fn, o, level)
   for _, p in ipairs(slow.entries) do
      if not params:contains(p.entry) then
         error(string.format("%s: masked parameter '%s' is not in the trained parameters", fn,
            p.name), level)
      end
   end
   local plain
   if #params.entries > #slow.entries then
      plain = partition.part(model, function(_, e)
         return params:contains(e) and not slow:contains(e)
      end, 'plain')
   end
   local self = setmetatable({ model = model, fn = fn, lr = o.lr, k = o.k or 1,
      weight_decay = o.weight_decay, params = params, slow = slow, plain = plain,
      iteration = 0, kind = fn:gsub('^optim%.', ''), ctx = model.flat.params:context(),
      sgd = ffi.new('mrt_sgd_params') }, Subgroups)
   self.saved = {}
   for i, m in ipairs(slow.mask_list) do
      self.saved[i] = m.entry.value:clone()
   end
   return self
end

function M.subgroups(model, opts)
   hierarchy.check_model('optim.subgroups', model, 2)
   local o = config.check('optim.subgroups', opts, SUBGROUPS, 2)
   local self = new(model, 'optim.subgroups', o, 1)
   self.zeroing_every_step = false
   return self
end

function M.random_zeroing(model, opts)
   hierarchy.check_model('optim.random_zeroing', model, 2)
   local o = config.check('optim.random_zeroing', opts, ZEROING, 2)
   local self = new(model, 'optim.random_zeroing', o, 1)
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

-- Plain SGD on the masked tensors (lr_slow for masked elements) and on the rest.
function Subgroups:update(lr, lr_slow)
   local flat, ctx, wd = self.model.flat, self.ctx, self.weight_decay
   for _, m in ipairs(self.slow.mask_list) do
      local e = m.entry
      lib.check(C.mrt_masked_sgd(ctx, flat.params.c.data + e.offset, flat.grads.c.data + e.offset,
         m.mask.c.data, e.value:numel(), lr, lr_slow, wd), 3)
   end
   if self.plain ~= nil then
      local p = self.sgd
      p.lr, p.momentum, p.dampening, p.weight_decay, p.noise_std = lr, 0, 0, wd, 0
      p.nesterov, p.first, p.update_buffer, p.apply = 0, 1, 1, 1
      for _, r in ipairs(self.plain.ranges) do
         lib.check(C.mrt_sgd_update(ctx, flat.params.c.data + r.offset,
            flat.grads.c.data + r.offset, nil, r.count, p, nil), 3)
      end
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
   local pos = t % self.k
   -- The masks drawn when the part was built serve the first block.
   if self.slow.rng ~= nil and t > 0 and (self.zeroing_every_step or pos == 0) then
      self.slow:redraw()
   end
   local loss
   if self.zeroing_every_step or pos < self.k - 1 then
      self:zero_masked()
      loss = feval()
      self:update(lr, 0)
      self:restore_masked()
   else
      loss = feval()
      self:update(lr, lr * self.k)
   end
   self.iteration = t + 1
   return loss
end

function Subgroups:state()
   return { kind = self.kind, iteration = self.iteration, masks = self.slow:state() }
end

function Subgroups:load_state(s)
   if type(s) ~= 'table' or s.kind ~= self.kind then
      error(string.format('%s: load_state: state is for %s', self.fn,
         tostring(type(s) == 'table' and s.kind)), 2)
   end
   self.slow:load_state(s.masks)
   self.iteration = s.iteration
end

return M
