-- Specs for mrt.optim.schedule: constant, slanted triangular and step decay
-- schedules against their closed forms, and schedules per part of a
-- multirate scheme.
--
-- Schedule values are float64 on both sides and computed by the same few
-- operations, so comparisons allow 1e-12 relative (rounding of those
-- operations only). Parameters are float32 after a few additions: 1e-6.

local T = require 'mrt.tensor'
local module = require 'mrt.nn.module'
local optim = require 'mrt.optim'
local schedule = require 'mrt.optim.schedule'

local function close(actual, expected, what, tol)
   tol = tol or 1e-12
   assert.is_true(math.abs(actual - expected) <= tol * math.max(1, math.abs(expected)),
      string.format('%s: got %.17g, expected %.17g', what or 'value', actual, expected))
end

describe('schedule.constant', function()
   it('returns its value at every iteration', function()
      local s = schedule.constant(0.05)
      assert.are.equal(0.05, s:at(0))
      assert.are.equal(0.05, s:at(123456))
      assert.are.equal('constant(0.05)', s:describe())
   end)

   it('rejects a negative value', function()
      assert.has_error(function() schedule.constant(-1) end,
         'schedule.constant: lr is -1 (expected a number >= 0)')
   end)
end)

describe('schedule.slanted_triangular', function()
   local s = schedule.slanted_triangular({ max = 0.01, epochs = 100, warmup_epochs = 10,
      iterations_per_epoch = 50 })

   it('warms up linearly from max/32 to max over the warm-up epochs', function()
      close(s:at(0), 0.01 / 32, 'iteration 0')
      close(s:at(250), 0.01 / 32 + (0.01 - 0.01 / 32) * 0.5, 'epoch 5')
      close(s:at(500), 0.01, 'end of warm-up')
   end)

   it('moves per iteration, not per epoch', function()
      assert.is_true(s:at(1) > s:at(0))
      close(s:at(1) - s:at(0), (0.01 - 0.01 / 32) / 500, 'one iteration of warm-up')
   end)

   it('decays linearly to zero at the last epoch and stays there', function()
      close(s:at(500 + 45 * 50), 0.005, 'half-way through the decay')
      close(s:at(100 * 50 - 1), 0.01 / (90 * 50), 'last iteration')
      assert.are.equal(0, s:at(100 * 50))
      assert.are.equal(0, s:at(200 * 50))
   end)

   it('rejects a warm-up as long as the run and unknown options', function()
      assert.has_error(function()
         schedule.slanted_triangular({ max = 1, epochs = 10, warmup_epochs = 10,
            iterations_per_epoch = 5 })
      end, "schedule.slanted_triangular: option 'warmup_epochs' is 10 (expected fewer than "
         .. 'epochs = 10)')
      assert.has_error(function()
         schedule.slanted_triangular({ max = 1, epochs = 10, iterations_per_epoch = 5,
            warmup = 2 })
      end, "schedule.slanted_triangular: unknown option 'warmup' (valid options: epochs, "
         .. 'iterations_per_epoch, max, start_fraction, warmup_epochs)')
      assert.has_error(function()
         schedule.slanted_triangular({ max = 1, epochs = 10 })
      end, "schedule.slanted_triangular: option 'iterations_per_epoch' is missing (expected "
         .. 'an integer >= 1)')
   end)
end)

describe('schedule.step_decay', function()
   it('multiplies by gamma every few epochs, constant within an epoch', function()
      local s = schedule.step_decay({ lr = 0.1, gamma = 0.5, every_epochs = 2,
         iterations_per_epoch = 10 })
      assert.are.equal(0.1, s:at(0))
      assert.are.equal(0.1, s:at(19))
      close(s:at(20), 0.05, 'epoch 3')
      close(s:at(39), 0.05, 'end of epoch 4')
      close(s:at(40), 0.025, 'epoch 5')
   end)

   it('decays after the epochs listed in milestones', function()
      local s = schedule.step_decay({ lr = 1, milestones = { 3, 5 },
         iterations_per_epoch = 4 })
      assert.are.equal(1, s:at(11))             -- epoch 3, last iteration
      close(s:at(12), 0.1, 'epoch 4')
      close(s:at(19), 0.1, 'epoch 5')
      close(s:at(20), 0.01, 'epoch 6')
   end)

   it('needs exactly one of every_epochs and milestones', function()
      assert.has_error(function()
         schedule.step_decay({ lr = 1, iterations_per_epoch = 4 })
      end, 'schedule.step_decay: give exactly one of every_epochs and milestones')
      assert.has_error(function()
         schedule.step_decay({ lr = 1, milestones = { 5, 3 }, iterations_per_epoch = 4 })
      end, "schedule.step_decay: option 'milestones' is {5, 3} (expected increasing integers "
         .. '>= 1 (entry 2))')
   end)
end)

describe('Schedule:at', function()
   it('rejects a negative iteration', function()
      assert.has_error(function() schedule.constant(1):at(-1) end,
         'schedule constant: iteration is -1 (expected a number >= 0)')
   end)
end)

describe('schedules in optimizers', function()
   local Holder = module.class('Holder')

   local function model_with(n_slow, n_fast)
      local root = setmetatable({}, Holder):init('cpu')
      for _, layer in ipairs({ { 'body', n_slow }, { 'head', n_fast } }) do
         local child = setmetatable({}, Holder):init('cpu')
         child:add_param('weight', T.zeros({ layer[2] }, 'cpu'), 'weight')
         root:add(layer[1], child)
      end
      root:flatten()
      return root
   end

   it('gives each part of a multirate scheme its own schedule', function()
      -- Unit gradients: each part moves by its own step size per update.
      local model = model_with(2, 3)
      local slow_lr = schedule.step_decay({ lr = 0.4, gamma = 0.5, every_epochs = 1,
         iterations_per_epoch = 2 })
      local fast_lr = schedule.slanted_triangular({ max = 0.2, epochs = 3, warmup_epochs = 1,
         iterations_per_epoch = 2 })
      local opt = optim.multirate(model, { lr = 1, k = 2, drift = false, fast = '^head%.',
         parts = { slow = { lr = slow_lr }, fast = { lr = fast_lr } } })
      local function feval()
         model.flat.grads:fill(1)
         return 0
      end
      local slow, fast = 0, 0
      for t = 0, 5 do
         opt:step(feval)
         if t % 2 == 0 then
            slow = slow - slow_lr:at(t)
         end
         fast = fast - fast_lr:at(t)
         close(model.body.params[1].value:get(1), slow, 'slow after ' .. t, 1e-6)
         close(model.head.params[1].value:get(1), fast, 'fast after ' .. t, 1e-6)
      end
   end)
end)
