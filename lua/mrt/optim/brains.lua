-- mrt.optim.brains: multi-brain training. N copies ("brains") of one
-- network train with step sizes h_1 < h_2 < ... < h_N in integer ratios
-- every_j = h_j/h_1. Brain j steps on iterations t with t % every_j == 0
-- (t the global 0-based iteration), each with its own optimizer and state:
-- momenta and Adam moments are never reset or averaged. After iteration t,
-- if brains 1..j have all just completed a step (t+1 is a multiple of
-- every_1, ..., every_j) for some j >= 2, the weights of brains 1..j are
-- replaced by their average (the largest such j). With two brains and
-- every = {1, k}: brain 1 takes k steps of h_1, brain 2 one step of k*h_1
-- from the same start, then both become their average.
--
-- Variant: average_every = k averages all brains every k iterations in
-- place of the ratio rule, e.g. two copies with Adam under two slanted
-- triangular schedules, every = {1, 1}, averaged every k steps.
--
-- Protocol. Each brain needs its own forward and backward, so feval takes
-- the model to run. brains:step(feval) calls feval(model_j) on the current
-- minibatch for each brain due on this iteration. The call goes through
-- that brain's optimizer, which sets needs_grad on model_j first. step
-- returns brain 1's loss. opt.iteration, opt:state() and opt:load_state(s) work as for
-- every optimizer; the state also holds every brain's weights and
-- batch-norm buffers.
--
-- Evaluation uses the averaged weights: at every average of all N brains
-- the averaged weights and batch-norm buffers are copied into `eval_model`
-- (when given; otherwise evaluate brain 1, which holds the average right
-- after an average of all brains). Between two such averages,
-- opt:prepare_evaluation(), which train.fit calls before each evaluation,
-- writes the average of the brains' current weights and buffers into
-- eval_model without changing the brains. A run shorter than one period of
-- the slowest brain is therefore not evaluated on its starting weights.
-- Batch-norm running statistics are averaged like the weights
-- (mrt_average over running_mean and running_var). They are not recomputed
-- with a pass over training batches: the brains see the same minibatches
-- and are averaged often, so their statistics estimate the same data, and
-- averaging costs nothing while a recomputation pass at every evaluation
-- would cost a share of an epoch.
-- NOTE: the average of the brains' statistics is not exactly the
-- statistics of the averaged weights; the difference grows with the
-- distance between the brains before averaging.
--
--    local opt = optim.brains({ m1, m2, m3 }, { lr = { 0.01, 0.05, 0.5 },
--       momentum = 0.9, weight_decay = 5e-4, eval_model = m_eval })
--    local loss = opt:step(function(model) ... return loss end)
--
-- Options (default in brackets):
--    lr            list of N step sizes (numbers or schedules)  [required]
--    every         list of N integers, every[1] = 1: brain j steps every
--                  every[j] iterations  [lr[j]/lr[1] when all lr are numbers]
--    average_every average all brains every this many iterations in place of
--                  the ratio rule; a multiple of every[j]  [none]
--    optimizer     'sgd', 'adam', 'adamw', 'langevin', or function(model, j,
--                  lr) returning any optimizer of mrt.optim  ['sgd']
--    momentum, dampening, nesterov, weight_decay, betas, eps, gamma, tau
--                  options of each brain's optimizer (mrt.optim.base)
--    same_start    copy brain 1's weights and buffers into the others at
--                  creation  [true]
--    eval_model    a flattened model of the same architecture  [none]
--    seed          seed for Langevin noise (brain j uses seed + j - 1)  [0]

local lib = require 'mrt.ffi'
local config = require 'mrt.optim.config'
local base = require 'mrt.optim.base'
local hierarchy = require 'mrt.optim.hierarchy'

local ffi, C = lib.ffi, lib.C

local M = {}

local Brains = {}
Brains.__index = Brains
M.Brains = Brains

local FN = 'optim.brains'

local SCHEMA = {
   lr = { kind = 'table', required = true, expect = 'a list of N step sizes' },
   every = { kind = 'table', expect = 'a list of N integers >= 1 with every[1] = 1' },
   average_every = { kind = 'integer', min = 1 },
   optimizer = { kind = 'any', default = 'sgd',
      expect = "'sgd', 'adam', 'adamw', 'langevin' or a function" },
   same_start = { kind = 'boolean', default = true },
   eval_model = { kind = 'table', expect = 'a flattened model' },
   seed = { kind = 'integer', min = 0, default = 0 },
}
for key, rule in pairs(base.PART_SCHEMA) do
   if SCHEMA[key] == nil and key ~= 'lr' then
      SCHEMA[key] = rule
   end
end

-- Fails unless `other` has model's parameter names, sizes and buffers.
local function check_same(model, other, what, level)
   hierarchy.check_model(FN, other, level + 1)
   local a, b = model.flat.list, other.flat.list
   local ok = #a == #b and model.flat.numel == other.flat.numel
   for i = 1, ok and #a or 0 do
      ok = ok and a[i].name == b[i].name
         and a[i].entry.value:numel() == b[i].entry.value:numel()
   end
   local ba, bb = model:named_buffers(), other:named_buffers()
   ok = ok and #ba == #bb
   for i = 1, ok and #ba or 0 do
      ok = ok and ba[i].name == bb[i].name and ba[i].value:numel() == bb[i].value:numel()
   end
   if not ok then
      error(string.format('%s: %s does not have the parameters and buffers of brain 1', FN, what),
         level + 1)
   end
end

local function check_lists(o, n, level)
   if #o.lr ~= n then
      config.fail_option_text(FN, 'lr', 'a list of ' .. #o.lr,
         n .. ' step sizes, one per brain', level + 1)
   end
   for j, lr in ipairs(o.lr) do
      if not config.is_schedule(lr) and (type(lr) ~= 'number' or lr < 0) then
         config.fail_option(FN, 'lr[' .. j .. ']', lr, 'a number >= 0 or a schedule', level + 1)
      end
   end
   local every = o.every
   if every == nil then
      every = {}
      for j, lr in ipairs(o.lr) do
         local ratio = type(lr) == 'number' and type(o.lr[1]) == 'number' and o.lr[1] > 0
            and lr / o.lr[1]
         if not ratio or math.abs(ratio - math.floor(ratio + 0.5)) > 1e-6 * ratio then
            error(string.format('%s: lr[%d]/lr[1] = %s is not an integer; give option every',
               FN, j, tostring(ratio)), level + 1)
         end
         every[j] = math.floor(ratio + 0.5)
      end
   end
   if #every ~= n or every[1] ~= 1 then
      config.fail_option_text(FN, 'every', config.render_list(every),
         n .. ' integers >= 1 with every[1] = 1', level + 1)
   end
   for j, e in ipairs(every) do
      if type(e) ~= 'number' or e < 1 or e ~= math.floor(e) then
         config.fail_option(FN, 'every[' .. j .. ']', e, 'an integer >= 1', level + 1)
      end
      if o.average_every ~= nil and o.average_every % e ~= 0 then
         config.fail_option(FN, 'average_every', o.average_every,
            string.format('a multiple of every[%d] = %d', j, e), level + 1)
      end
   end
   return every
end

local function make_optimizer(o, model, j, level)
   if type(o.optimizer) == 'function' then
      local opt = o.optimizer(model, j, o.lr[j])
      if type(opt) ~= 'table' or type(opt.step) ~= 'function' then
         error(string.format('%s: option optimizer returned %s for brain %d (expected an '
            .. 'optimizer)', FN, tostring(opt), j), level + 1)
      end
      return opt
   end
   local kind = o.optimizer
   local valid = { sgd = true, adam = true, adamw = true, langevin = true }
   if not valid[kind] then
      config.fail_option(FN, 'optimizer', kind, SCHEMA.optimizer.expect, level + 1)
   end
   local opts = hierarchy.with(o, { lr = o.lr[j], seed = o.seed + j - 1 })
   return hierarchy.single(model, FN, kind, opts, level + 1)
end

function M.brains(models, opts)
   if type(models) ~= 'table' or #models < 1 then
      error(FN .. ': expected a list of flattened models as argument 1', 2)
   end
   local o = config.check(FN, opts, SCHEMA, 2)
   hierarchy.check_model(FN, models[1], 2)
   for j = 2, #models do
      check_same(models[1], models[j], 'brain ' .. j, 1)
   end
   if o.eval_model ~= nil then
      for j, model in ipairs(models) do
         if model == o.eval_model then
            error(string.format('%s: eval_model is brain %d; give a separate model of the same '
               .. 'architecture, or leave eval_model out to evaluate brain 1', FN, j), 2)
         end
      end
      check_same(models[1], o.eval_model, 'eval_model', 1)
   end
   local self = setmetatable({ models = models, every = check_lists(o, #models, 1),
      average_every = o.average_every, eval_model = o.eval_model, iteration = 0,
      kind = 'brains', optimizers = {}, ctx = models[1].flat.params:context() }, Brains)
   for j, model in ipairs(models) do
      self.optimizers[j] = make_optimizer(o, model, j, 1)
      model:train()
   end
   if o.same_start then
      for j = 2, #models do
         self:copy_model(models[1], models[j])
      end
   end
   if self.eval_model ~= nil then
      self:copy_model(models[1], self.eval_model)
      self.eval_current = o.same_start
   end
   return self
end

-- Copies the weights and batch-norm buffers of one model into another.
function Brains:copy_model(src, dst)
   dst.flat.params:copy(src.flat.params)
   local sb, db = src:named_buffers(), dst:named_buffers()
   for i = 1, #sb do
      db[i].value:copy(sb[i].value)
   end
end

-- dst := mean of the tensors (all on one device, same size).
function Brains:average_into(dst, tensors)
   local srcs = ffi.new('const float *[?]', #tensors)
   for i, t in ipairs(tensors) do
      srcs[i - 1] = t.c.data
   end
   lib.check(C.mrt_average(self.ctx, dst.c.data, srcs, #tensors, dst:numel()), 3)
end

-- Replaces the weights and buffers of brains 1..j by their average.
function Brains:average(j)
   local params = {}
   for i = 1, j do
      params[i] = self.models[i].flat.params
   end
   self:average_into(params[1], params)
   local buffers = {}
   for i = 1, j do
      buffers[i] = self.models[i]:named_buffers()
   end
   for b = 1, #buffers[1] do
      local list = {}
      for i = 1, j do
         list[i] = buffers[i][b].value
      end
      self:average_into(list[1], list)
   end
   for i = 2, j do
      self:copy_model(self.models[1], self.models[i])
   end
   if j == #self.models and self.eval_model ~= nil then
      self:copy_model(self.models[1], self.eval_model)
      self.eval_current = true
   end
end

-- Makes eval_model the average of the brains' current weights and buffers
-- when no average of all brains has put it there since the last step.
function Brains:prepare_evaluation()
   if self.eval_model == nil or self.eval_current then
      return
   end
   local params = {}
   for i, model in ipairs(self.models) do
      params[i] = model.flat.params
   end
   self:average_into(self.eval_model.flat.params, params)
   local target = self.eval_model:named_buffers()
   local buffers = {}
   for i, model in ipairs(self.models) do
      buffers[i] = model:named_buffers()
   end
   for b = 1, #target do
      local list = {}
      for i = 1, #self.models do
         list[i] = buffers[i][b].value
      end
      self:average_into(target[b].value, list)
   end
   self.eval_current = true
end

-- The number of brains to average after iteration t, or 0.
function Brains:averaged_count(t)
   local c = t + 1
   if self.average_every ~= nil then
      return c % self.average_every == 0 and #self.models or 0
   end
   local j = 0
   while j < #self.models and c % self.every[j + 1] == 0 do
      j = j + 1
   end
   return j >= 2 and j or 0
end

-- Runs one iteration; feval(model) runs forward, loss and backward of the
-- given model on the current minibatch and returns the loss.
function Brains:step(feval)
   if type(feval) ~= 'function' then
      error(string.format('%s: step expects a function feval(model), got %s', FN, type(feval)),
         2)
   end
   local t = self.iteration
   local loss
   self.eval_current = false
   for j, model in ipairs(self.models) do
      if t % self.every[j] == 0 then
         local l = self.optimizers[j]:step(function() return feval(model) end, t)
         if j == 1 then
            loss = l
         end
      end
   end
   local j = self:averaged_count(t)
   if j > 0 then
      self:average(j)
   end
   self.iteration = t + 1
   return loss
end

-- The model to evaluate: eval_model when given, else brain 1.
function Brains:model()
   return self.eval_model or self.models[1]
end

local function buffer_copies(model)
   local out = {}
   for i, b in ipairs(model:named_buffers()) do
      out[i] = b.value:clone()
   end
   return out
end

function Brains:state()
   local s = { kind = self.kind, iteration = self.iteration, brains = {} }
   for j, model in ipairs(self.models) do
      s.brains[j] = { optimizer = self.optimizers[j]:state(), params = model.flat.params:clone(),
         buffers = buffer_copies(model) }
   end
   if self.eval_model ~= nil then
      s.eval = { params = self.eval_model.flat.params:clone(),
         buffers = buffer_copies(self.eval_model) }
   end
   return s
end

local function load_model(model, saved)
   model.flat.params:copy(saved.params)
   for i, b in ipairs(model:named_buffers()) do
      b.value:copy(saved.buffers[i])
   end
end

function Brains:load_state(s)
   if type(s) ~= 'table' or s.kind ~= 'brains' or #s.brains ~= #self.models then
      error(string.format('%s: load_state: expected the state of %d brains', FN, #self.models),
         2)
   end
   for j, model in ipairs(self.models) do
      self.optimizers[j]:load_state(s.brains[j].optimizer)
      load_model(model, s.brains[j])
   end
   if self.eval_model ~= nil and s.eval ~= nil then
      load_model(self.eval_model, s.eval)
   end
   self.eval_current = false      -- the saved eval weights may predate the brains' last steps
   self.iteration = s.iteration
end

return M
