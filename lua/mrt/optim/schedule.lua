-- mrt.optim.schedule: step-size schedules, usable wherever an optimizer
-- option `lr` is accepted (the whole optimizer, one part, one brain).
--
-- A schedule is a table with `at(self, iteration)` returning the step size
-- for a 0-based global iteration (the optimizer's step counter, which runs
-- on across epochs). Epoch-based settings are converted with
-- `iterations_per_epoch`, so a schedule needs no epoch callback.
--
--    constant(lr)
--    slanted_triangular{ max, epochs, warmup_epochs = 10, iterations_per_epoch,
--                        start_fraction = 1/32 }
--       Linear warm-up from max*start_fraction to max over warmup_epochs, then
--       linear decay to 0 at the end of `epochs`, and 0 after that. It moves
--       per iteration (the epoch count is iteration / iterations_per_epoch,
--       fractional), so a warm-up of a few epochs has no flat first epoch.
--    step_decay{ lr, gamma = 0.1, every_epochs | milestones, iterations_per_epoch }
--       lr * gamma^d, with d the number of epoch boundaries passed among
--       `milestones` (epochs, 1-based, at which the decay happens) or the
--       multiples of every_epochs. It moves per epoch: every iteration of an
--       epoch uses the same step size, as torch.optim.lr_scheduler.StepLR and
--       MultiStepLR stepped once per epoch.

local config = require 'mrt.optim.config'

local M = {}

local Schedule = {}
Schedule.__index = Schedule
M.Schedule = Schedule

local function make(kind, fields, at)
   fields.kind = kind
   fields.compute = at
   return setmetatable(fields, Schedule)
end

-- The step size at a 0-based global iteration.
function Schedule:at(iteration)
   if type(iteration) ~= 'number' or iteration < 0 then
      error(string.format('schedule %s: iteration is %s (expected a number >= 0)', self.kind,
         tostring(iteration)), 2)
   end
   return self:compute(iteration)
end

function Schedule:describe()
   return self.text
end

Schedule.__tostring = Schedule.describe

function M.constant(lr)
   if type(lr) ~= 'number' or lr ~= lr or lr < 0 or lr == math.huge then
      error(string.format('schedule.constant: lr is %s (expected a number >= 0)', tostring(lr)),
         2)
   end
   return make('constant', { lr = lr, text = string.format('constant(%g)', lr) },
      function(self) return self.lr end)
end

local TRIANGULAR = {
   max = { kind = 'number', min = 0, required = true },
   epochs = { kind = 'number', above = 0, required = true },
   warmup_epochs = { kind = 'number', min = 0, default = 10 },
   iterations_per_epoch = { kind = 'integer', min = 1, required = true },
   start_fraction = { kind = 'number', min = 0, max = 1, default = 1 / 32 },
}

function M.slanted_triangular(opts)
   local o = config.check('schedule.slanted_triangular', opts, TRIANGULAR, 2)
   if o.warmup_epochs >= o.epochs then
      config.fail_option('schedule.slanted_triangular', 'warmup_epochs', o.warmup_epochs,
         'fewer than epochs = ' .. o.epochs, 2)
   end
   o.text = string.format('slanted_triangular(max %g, warm-up %g of %g epochs, %d iterations '
      .. 'per epoch)', o.max, o.warmup_epochs, o.epochs, o.iterations_per_epoch)
   return make('slanted_triangular', o, function(self, iteration)
      local epoch = iteration / self.iterations_per_epoch
      local low = self.max * self.start_fraction
      if epoch < self.warmup_epochs then
         return low + (self.max - low) * epoch / self.warmup_epochs
      end
      local left = 1 - (epoch - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
      return self.max * math.max(left, 0)
   end)
end

local STEP = {
   lr = { kind = 'number', min = 0, required = true },
   gamma = { kind = 'number', min = 0, default = 0.1 },
   every_epochs = { kind = 'integer', min = 1 },
   milestones = { kind = 'table', expect = 'a list of increasing epoch numbers >= 1' },
   iterations_per_epoch = { kind = 'integer', min = 1, required = true },
}

local function check_milestones(milestones)
   local last = 0
   for i, m in ipairs(milestones) do
      if type(m) ~= 'number' or m ~= math.floor(m) or m <= last then
         config.fail_option_text('schedule.step_decay', 'milestones',
            config.render_list(milestones),
            string.format('increasing integers >= 1 (entry %d)', i), 3)
      end
      last = m
   end
end

function M.step_decay(opts)
   local o = config.check('schedule.step_decay', opts, STEP, 2)
   if (o.every_epochs == nil) == (o.milestones == nil) then
      error('schedule.step_decay: give exactly one of every_epochs and milestones', 2)
   end
   if o.milestones ~= nil then
      check_milestones(o.milestones)
   end
   o.text = string.format('step_decay(lr %g, gamma %g, %s)', o.lr, o.gamma,
      o.every_epochs and ('every ' .. o.every_epochs .. ' epochs')
      or ('at epochs ' .. table.concat(o.milestones, ',')))
   return make('step_decay', o, function(self, iteration)
      -- Epochs completed before this iteration; epoch e (1-based) decays after it ends.
      local done = math.floor(iteration / self.iterations_per_epoch)
      local d
      if self.every_epochs ~= nil then
         d = math.floor(done / self.every_epochs)
      else
         d = 0
         for _, m in ipairs(self.milestones) do
            if done >= m then
               d = d + 1
            end
         end
      end
      return self.lr * self.gamma ^ d
   end)
end

-- The value of lr (a number or a schedule) at a 0-based iteration.
function M.value(lr, iteration)
   if type(lr) == 'number' then
      return lr
   end
   return lr:at(iteration)
end

return M
