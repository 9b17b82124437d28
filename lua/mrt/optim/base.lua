-- mrt.optim.base: the base optimizers that update one part of a flattened
-- model (SGD, Adam, AdamW, Langevin), as "steppers" that the schemes
-- combine. A stepper owns its part's state in buffers of the part's size:
-- the SGD momentum buffer (and the last direction for nesterov on a
-- drifting part), or Adam's moments and step counter, plus per-element
-- update counts on a masked part. It updates each run of the part (a merged
-- range, or one masked parameter, see Part:runs) with one fused engine call.
--
-- Two verbs: update(lr, apply, divide, runs) folds the part's current
-- gradient into the state and, when apply is true, steps the parameters by
-- lr/divide along it (runs, optional, limits it to some of the part's
-- runs). apply(lr, divide) steps by lr/divide along the stored state
-- again without a gradient, which is the linear drift of a slow part
-- between its updates. lr is the step per update of the part (Langevin
-- derives its momentum and noise from it) and divide (default 1) the number
-- of iterations a drifting part spreads it over.
--
-- Options of a part (defaults in brackets; lr is per update of the part):
--    optimizer      'sgd' | 'adam' | 'adamw' | 'langevin'  ['sgd']
--    lr             step size, a number >= 0 or a schedule  [the scheme's]
--    weight_decay   omega, added to the gradient as omega*theta (SGD, Adam,
--                   Langevin) or decoupled as theta *= 1 - lr*omega (AdamW)
--                   [0; 0.01 for AdamW, as PyTorch]
--    momentum       mu, SGD only  [0]
--    dampening      SGD only: buffer := mu*buffer + (1-dampening)*g  [0]
--    nesterov       SGD only: step along g + mu*buffer; a drifting part
--                   re-applies the direction of its last update  [false]
--    betas          Adam/AdamW: { beta1, beta2 }  [{0.9, 0.999}]
--    eps            Adam/AdamW: added to sqrt(v_hat)  [1e-8]
--    amsgrad        Adam/AdamW: must be false (true is NYI)  [false]
--    gamma          Langevin: friction, per unit of SDE time  [required]
--    tau            Langevin: temperature (0 is SGD with momentum)  [0]
--
-- Langevin dynamics. The underdamped Langevin SDE with friction gamma and
-- temperature tau, d theta = v dt, dv = -grad U dt - gamma v dt +
-- sqrt(2 gamma tau) dW, has the stationary density exp(-U(theta)/tau) in
-- theta. Its semi-implicit Euler step of length h,
--    v := (1 - gamma h) v - h grad U + sqrt(2 gamma tau h) xi,  theta += h v,
-- becomes PyTorch's SGD with momentum after the change of variable
-- p = -v/h:  p := mu p + (grad U + sigma xi),  theta -= lr p,  with
--    lr = h^2,   mu = 1 - gamma h,   sigma = sqrt(2 gamma tau / h),
-- xi standard normal per element (drawn in the fused update). The step h
-- therefore follows from the part's lr as h = sqrt(lr), and tau = 0 gives
-- exactly SGD with momentum 1 - gamma*sqrt(lr) (dampening 0). gamma*h must
-- stay within [0, 1].

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local config = require 'mrt.optim.config'
local schedule = require 'mrt.optim.schedule'

local ffi, C = lib.ffi, lib.C

local M = {}

M.KINDS = { 'sgd', 'adam', 'adamw', 'langevin' }

-- Every per-part option; `applies` lists the base optimizers that take it.
M.PART_SCHEMA = {
   optimizer = { kind = 'string', one_of = M.KINDS },
   lr = { kind = 'lr', min = 0 },
   weight_decay = { kind = 'number', min = 0 },
   momentum = { kind = 'number', min = 0, applies = { sgd = true } },
   dampening = { kind = 'number', applies = { sgd = true } },
   nesterov = { kind = 'boolean', applies = { sgd = true } },
   betas = { kind = 'table', expect = 'a list { beta1, beta2 } of numbers in [0, 1)',
      applies = { adam = true, adamw = true } },
   eps = { kind = 'number', min = 0, applies = { adam = true, adamw = true } },
   amsgrad = { kind = 'boolean', applies = { adam = true, adamw = true } },
   gamma = { kind = 'number', min = 0, applies = { langevin = true } },
   tau = { kind = 'number', min = 0, applies = { langevin = true } },
}

local DEFAULTS = {
   sgd = { weight_decay = 0, momentum = 0, dampening = 0, nesterov = false },
   adam = { weight_decay = 0, betas = { 0.9, 0.999 }, eps = 1e-8, amsgrad = false },
   adamw = { weight_decay = 0.01, betas = { 0.9, 0.999 }, eps = 1e-8, amsgrad = false },
   langevin = { weight_decay = 0, tau = 0 },
}

local function applies_to(rule)
   local kinds = {}
   for _, kind in ipairs(M.KINDS) do
      if rule.applies[kind] then
         kinds[#kinds + 1] = kind
      end
   end
   return table.concat(kinds, ' and ')
end

local function check_betas(fn, betas, level)
   local ok = type(betas) == 'table' and #betas == 2
   for i = 1, 2 do
      ok = ok and type(betas[i]) == 'number' and betas[i] >= 0 and betas[i] < 1
   end
   if not ok then
      local text = type(betas) == 'table' and config.render_list(betas) or tostring(betas)
      config.fail_option_text(fn, 'betas', text, 'a list { beta1, beta2 } of numbers in [0, 1)',
         level + 1)
   end
end

-- Merges a part's options over scheme-wide defaults, fills the defaults of
-- the chosen base optimizer and returns the settings. A part's own option
-- that does not apply to its optimizer is an error. A scheme-wide default
-- that does not apply is skipped, so momentum can serve the SGD parts of a
-- scheme that also has an Adam part. `fn` names the caller in errors.
function M.resolve(fn, defaults, overrides, level)
   level = (level or 1) + 1
   overrides = overrides or {}
   local kind = overrides.optimizer or defaults.optimizer or 'sgd'
   local merged = {}
   for key, v in pairs(defaults) do
      local rule = M.PART_SCHEMA[key]
      if rule ~= nil and (rule.applies == nil or rule.applies[kind]) then
         merged[key] = v
      end
   end
   for key, v in pairs(overrides) do
      local rule = M.PART_SCHEMA[key]
      if rule ~= nil and rule.applies ~= nil and not rule.applies[kind] then
         error(string.format("%s: option '%s' applies to %s, not to optimizer '%s'", fn, key,
            applies_to(rule), kind), level)
      end
      if rule ~= nil then
         merged[key] = v
      end
   end
   local out = { optimizer = kind }
   for key, v in pairs(DEFAULTS[kind]) do
      out[key] = v
   end
   for key, v in pairs(merged) do
      out[key] = v
   end
   if out.betas ~= nil then
      check_betas(fn, out.betas, level)
   end
   if out.amsgrad then
      error(string.format('%s: NYI: amsgrad', fn), level)
   end
   if kind == 'langevin' and out.gamma == nil then
      error(string.format("%s: option 'gamma' is missing (expected the friction of "
         .. "optimizer 'langevin', a number >= 0)", fn), level)
   end
   if out.nesterov and (out.momentum <= 0 or out.dampening ~= 0) then
      error(string.format('%s: nesterov needs momentum > 0 and dampening 0, got momentum %g '
         .. 'and dampening %g', fn, out.momentum, out.dampening), level)
   end
   return out
end

----------------------------------------------------------------------- Stepper

local Stepper = {}
Stepper.__index = Stepper
M.Stepper = Stepper

-- Creates the stepper of a part. opts.store keeps an SGD buffer even when
-- momentum is 0, because a drifting part re-applies its last direction.
-- opts.rng is the optimizer's generator (an mrt_rng) for Langevin noise.
-- opts.runs replaces the part's runs (Part:runs) with a list of the same
-- form laid out over part.numel state elements.
--
-- A part with element masks updates only its elements (see Part:runs):
-- the others keep their values and their state. An element's state is
-- updated only while the element belongs to the part and is kept while it
-- is elsewhere. Such a part counts the updates of each element, so an
-- element that joins a random part late has its own Adam bias correction
-- and its own first SGD buffer update (which matters with dampening).
function M.stepper(part, settings, opts)
   opts = opts or {}
   local flat = part.model.flat
   local self = setmetatable({
      part = part, settings = settings, kind = settings.optimizer, flat = flat,
      ctx = flat.params:context(), initialized = false, step = 0, rng = opts.rng,
      runs = opts.runs or part:runs(),
   }, Stepper)
   local masked = part.masks ~= nil
   for _, r in ipairs(self.runs) do
      masked = masked or r.mask ~= nil
   end
   local device, n = flat.params.device, math.max(part.numel, 1)
   if self.kind == 'adam' or self.kind == 'adamw' then
      self.m = T.zeros({ n }, device)
      self.v = T.zeros({ n }, device)
      if masked then
         self.counts = T.zeros({ n }, device)
      end
      self.cparams = ffi.new('mrt_adam_params')
   else
      if self.kind == 'langevin' or settings.momentum ~= 0 or opts.store then
         self.buffer = T.zeros({ n }, device)
      end
      -- With dampening, an element's first buffer update (buffer := g)
      -- differs from later ones, so a masked part counts each element's.
      if masked and self.buffer ~= nil and (settings.dampening or 0) ~= 0 then
         self.counts = T.zeros({ n }, device)
      end
      -- A drifting nesterov part re-applies its last direction g + mu*buffer.
      if settings.nesterov and opts.store then
         self.direction = T.zeros({ n }, device)
      end
      self.cparams = ffi.new('mrt_sgd_params')
   end
   return self
end

-- Fills the engine's SGD parameters for one call.
function Stepper:sgd_params(lr, divide, update, apply)
   local s, p = self.settings, self.cparams
   local momentum, noise_std = s.momentum, 0
   if self.kind == 'langevin' then
      local h = math.sqrt(lr)
      momentum = 1 - s.gamma * h
      if momentum < 0 then
         error(string.format("langevin: part '%s': gamma*sqrt(lr) = %g exceeds 1; lower gamma "
            .. 'or lr', self.part.name, s.gamma * h), 4)
      end
      if update and s.tau > 0 then
         if h == 0 then
            error(string.format("langevin: part '%s': lr is 0, which gives infinite noise for "
               .. 'tau > 0', self.part.name), 4)
         end
         noise_std = math.sqrt(2 * s.gamma * s.tau / h)
      end
   end
   p.lr, p.momentum = lr / divide, momentum
   p.dampening, p.weight_decay = s.dampening or 0, s.weight_decay
   p.noise_std = noise_std
   p.nesterov = s.nesterov and 1 or 0
   p.first = (update and not self.initialized) and 1 or 0
   p.update_buffer, p.apply = update and 1 or 0, apply and 1 or 0
   return p
end

function Stepper:adam_params(lr, divide, update, apply)
   local s, p = self.settings, self.cparams
   p.lr, p.beta1, p.beta2, p.eps = lr / divide, s.betas[1], s.betas[2], s.eps
   p.weight_decay = s.weight_decay
   p.decoupled = self.kind == 'adamw' and 1 or 0
   p.amsgrad = 0
   p.step = self.step
   p.update_moments, p.apply = update and 1 or 0, apply and 1 or 0
   return p
end

-- Runs the fused update over the runs of the part (default: all of them).
function Stepper:run(lr, divide, update, apply, runs)
   local flat, ctx = self.flat, self.ctx
   local params, grads = flat.params.c.data, flat.grads.c.data
   if self.kind == 'adam' or self.kind == 'adamw' then
      if update then
         self.step = self.step + 1
      end
      local p = self:adam_params(lr, divide, update, apply)
      local m, v = self.m.c.data, self.v.c.data
      local counts = self.counts and self.counts.c.data
      for _, r in ipairs(runs or self.runs) do
         p.mask, p.mask_on = r.mask and r.mask.c.data or nil, r.on or 0
         p.counts = counts and counts + r.state_offset or nil
         lib.check(C.mrt_adam_update(ctx, params + r.offset, grads + r.offset,
            m + r.state_offset, v + r.state_offset, r.count, p), 3)
      end
   else
      local p = self:sgd_params(lr, divide, update, apply)
      local buffer = self.buffer and self.buffer.c.data
      local direction = self.direction and self.direction.c.data
      local counts = self.counts and self.counts.c.data
      for _, r in ipairs(runs or self.runs) do
         p.mask, p.mask_on = r.mask and r.mask.c.data or nil, r.on or 0
         p.counts = counts and counts + r.state_offset or nil
         p.direction = direction and direction + r.state_offset or nil
         lib.check(C.mrt_sgd_update(ctx, params + r.offset, grads + r.offset,
            buffer and buffer + r.state_offset or nil, r.count, p, self.rng), 3)
      end
   end
   if update then
      self.initialized = true
   end
end

-- Folds the part's gradient into the state, and steps by lr/divide along it
-- when apply. runs (optional) limits the update to some of the part's runs.
function Stepper:update(lr, apply, divide, runs)
   self:run(lr, divide or 1, true, apply, runs)
end

-- Steps by lr/divide along the stored state (no gradient needed).
function Stepper:apply(lr, divide)
   if not self.initialized then
      error(string.format("optim: part '%s' applies its state before its first update",
         self.part.name), 2)
   end
   self:run(lr, divide or 1, false, true)
end

-- The step size of this part at an iteration, given the scheme's default.
function Stepper:lr_at(default, iteration)
   return schedule.value(self.settings.lr or default, iteration)
end

-- A copy of the state, for checkpoints.
function Stepper:state()
   local s = { kind = self.kind, initialized = self.initialized, step = self.step }
   for _, key in ipairs({ 'buffer', 'direction', 'm', 'v', 'counts' }) do
      if self[key] ~= nil then
         s[key] = self[key]:clone()
      end
   end
   return s
end

function Stepper:load_state(s)
   local name = self.part.name
   if type(s) ~= 'table' or s.kind ~= self.kind then
      error(string.format("optim: state of part '%s' is for optimizer %s, expected %s", name,
         tostring(type(s) == 'table' and s.kind), self.kind), 3)
   end
   for _, key in ipairs({ 'buffer', 'direction', 'm', 'v', 'counts' }) do
      if self[key] ~= nil then
         if s[key] == nil or s[key]:numel() ~= self[key]:numel() then
            error(string.format("optim: state of part '%s' lacks a %d-element '%s'", name,
               self[key]:numel(), key), 3)
         end
         self[key]:copy(s[key])
      end
   end
   self.initialized, self.step = s.initialized, s.step
end

return M
