-- mrt.profile: where the time of a training step goes, per layer (forward
-- and backward), in the optimizer and in data loading.
--
-- profile.attach(model) wraps the forward and backward of every leaf module
-- with a timer; train.fit then adds data and optimizer time and prints the
-- table at the end of training (bin/mrt RECIPE --profile). On the GPU each
-- timer synchronises the device first, so the profile slows training down.

local T = require 'mrt.tensor'
local lib = require 'mrt.ffi'
local util = require 'mrt.util'

local M = {}

local Profile = {}
Profile.__index = Profile

local function sync(device)
   if device ~= 'cpu' then
      lib.check(lib.C.mrt_ctx_sync(T.context(device)))
   end
end

-- Wraps `method` of one module so that its time adds to row[column].
local function wrap(self, mod, method, row, column)
   local original = mod[method]
   local device = self.device
   mod[method] = function(...)
      if self.paused then
         return original(...)
      end
      sync(device)
      local t0 = util.now()
      local a, b = original(...)
      sync(device)
      row[column] = row[column] + util.now() - t0
      return a, b
   end
end

-- Wraps every module without children; returns a Profile. The fused
-- batch-norm passes (forward_act, backward_act) count as the BatchNorm's
-- forward and backward, so a ReLU or residual sum fused into them shows no
-- time of its own.
function M.attach(model)
   local self = setmetatable({ rows = {}, steps = 0, data_s = 0, optim_s = 0, step_s = 0,
      device = model.device }, Profile)
   for _, m in ipairs(model:named_modules()) do
      local mod = m.module
      if #mod:named_children() == 0 then
         local row = { name = m.name, kind = mod.kind or '?', forward = 0, backward = 0 }
         self.rows[#self.rows + 1] = row
         wrap(self, mod, 'forward', row, 'forward')
         wrap(self, mod, 'backward', row, 'backward')
         if mod.forward_act ~= nil then
            wrap(self, mod, 'forward_act', row, 'forward')
            wrap(self, mod, 'backward_act', row, 'backward')
         end
      end
   end
   return self
end

-- Stops or resumes timing (evaluation passes are not training steps).
function Profile:pause(on)
   self.paused = on
end

-- Records one step: its data wait, its total time and the time inside feval.
function Profile:add_step(data_s, step_s, feval_s)
   self.steps = self.steps + 1
   self.data_s = self.data_s + data_s
   self.step_s = self.step_s + step_s
   self.optim_s = self.optim_s + (step_s - feval_s)
end

-- The table as text: milliseconds per step for every layer and phase.
function Profile:report(title)
   local n = math.max(self.steps, 1)
   local lines = { string.format('profile of %s: %d steps, %.2f ms per step', title or 'training',
      self.steps, 1000 * (self.step_s + self.data_s) / n) }
   lines[#lines + 1] = string.format('  %-32s %-14s %10s %10s', 'layer', 'kind', 'fwd ms',
      'bwd ms')
   local fsum, bsum = 0, 0
   for _, r in ipairs(self.rows) do
      if r.forward + r.backward > 0 then
         lines[#lines + 1] = string.format('  %-32s %-14s %10.3f %10.3f', r.name, r.kind,
            1000 * r.forward / n, 1000 * r.backward / n)
         fsum, bsum = fsum + r.forward, bsum + r.backward
      end
   end
   lines[#lines + 1] = string.format('  %-32s %-14s %10.3f %10.3f', 'all layers', '',
      1000 * fsum / n, 1000 * bsum / n)
   lines[#lines + 1] = string.format('  %-32s %-14s %10.3f', 'loss and bookkeeping', '',
      1000 * (self.step_s - self.optim_s - fsum - bsum) / n)
   lines[#lines + 1] = string.format('  %-32s %-14s %10.3f', 'optimizer', '',
      1000 * self.optim_s / n)
   lines[#lines + 1] = string.format('  %-32s %-14s %10.3f', 'data', '', 1000 * self.data_s / n)
   return table.concat(lines, '\n')
end

return M
