-- Specs for optim.brains: brains stepping at their own rates with their own
-- optimizer state, averaging of brains 1..j whenever they have all just
-- stepped, averaged batch-norm buffers, the evaluation model, the
-- two-copy Adam variant under slanted triangular schedules, and resume.
--
-- Each brain is a toy model whose gradients are written by hand (a
-- quadratic loss per minibatch) and whose buffer moves like a running
-- mean, compared with a float64 computation written out here.
-- Tolerance: at most 12 steps on values of size 1 with float32 rounding
-- (2^-24 relative) in about ten operations per step: 1e-5 relative to
-- max(1, |expected|).

local T = require 'mrt.tensor'
local random = require 'mrt.random'
local module = require 'mrt.nn.module'
local optim = require 'mrt.optim'

local TOL = 1e-5

local function all_close(actual, expected, what)
   assert.are.equal(#expected, #actual)
   for i = 1, #expected do
      local err = math.abs(actual[i] - expected[i]) / math.max(1, math.abs(expected[i]))
      assert.is_true(err <= TOL, string.format('%s[%d]: got %.9g, expected %.9g', what, i,
         actual[i], expected[i]))
   end
end

-- One layer 'fc1' with weight [3,2], bias [3] and a buffer running_mean [3];
-- seed picks the initial weights.
local Holder = module.class('Holder')

local function toy_model(seed)
   local rng = random.new(seed)
   local root = setmetatable({}, Holder):init('cpu')
   local child = setmetatable({}, Holder):init('cpu')
   child:add_param('weight', rng:fill_uniform(T.zeros({ 3, 2 }, 'cpu'), -1, 1), 'weight')
   child:add_param('bias', rng:fill_uniform(T.zeros({ 3 }, 'cpu'), -1, 1), 'bias')
   child.running_mean = child:add_buffer('running_mean', T.zeros({ 3 }, 'cpu'))
   root:add('fc1', child)
   root:flatten()
   return root
end

local function coef(b, i)
   return 1 + 0.5 * math.sin(1.3 * i + 0.7 * b), math.cos(0.9 * i + 1.1 * b)
end

local function grads(theta, b)
   local g = {}
   for i = 1, #theta do
      local a, c = coef(b, i - 1)
      g[i] = a * (theta[i] - c)
   end
   return g
end

-- The buffer after a forward pass on minibatch b: 0.9*rm + 0.1*(bias + b).
local function running(rm, theta, b)
   local out = {}
   for i = 1, 3 do
      out[i] = 0.9 * rm[i] + 0.1 * (theta[6 + i] + b)
   end
   return out
end

-- feval(model) on minibatch batch[1]; logs the model of each call.
local function brain_feval(batch, log)
   return function(model)
      local theta, grad = model.flat.params:ptr(), model.flat.grads:ptr()
      local g = grads(model.flat.params:totable(), batch[1])
      for i = 0, 8 do
         if model.flat.list[i < 6 and 1 or 2].entry.needs_grad then
            grad[i] = g[i + 1]
         end
      end
      local rm = model.fc1.running_mean
      local new = running(rm:totable(), model.flat.params:totable(), batch[1])
      for i = 1, 3 do
         rm:set(i, new[i])
      end
      log[#log + 1] = model
      return theta[0]
   end
end

local function run(opt, steps)
   local batch, log = { 0 }, {}
   local feval = brain_feval(batch, log)
   for t = 0, steps - 1 do
      batch[1] = t
      opt:step(feval)
   end
   return log
end

local function mean(lists)
   local out = {}
   for i = 1, #lists[1] do
      local s = 0
      for _, l in ipairs(lists) do
         s = s + l[i]
      end
      out[i] = s / #lists
   end
   return out
end

-- Float64 brains with SGD momentum mu: lr[j], every[j]; averages 1..j after
-- iteration t when (t+1) is a multiple of every[1..j], j >= 2.
local function reference(theta0, lr, every, mu, steps)
   local n = #lr
   local theta, buf, rm = {}, {}, {}
   for j = 1, n do
      theta[j], buf[j], rm[j] = { unpack(theta0) }, {}, { 0, 0, 0 }
   end
   for t = 0, steps - 1 do
      for j = 1, n do
         if t % every[j] == 0 then
            local g = grads(theta[j], t)
            rm[j] = running(rm[j], theta[j], t)
            for i = 1, #g do
               buf[j][i] = buf[j][i] and mu * buf[j][i] + g[i] or g[i]
               theta[j][i] = theta[j][i] - lr[j] * buf[j][i]
            end
         end
      end
      local count = 0
      while count < n and (t + 1) % every[count + 1] == 0 do
         count = count + 1
      end
      if count >= 2 then
         local avg_theta, avg_rm = {}, {}
         for j = 1, count do
            avg_theta[j], avg_rm[j] = theta[j], rm[j]
         end
         local mt, mr = mean(avg_theta), mean(avg_rm)
         for j = 1, count do
            theta[j], rm[j] = { unpack(mt) }, { unpack(mr) }
         end
      end
   end
   return theta, buf, rm
end

local function brains(n, opts)
   local models = {}
   for j = 1, n do
      models[j] = toy_model(j)
   end
   return models, optim.brains(models, opts)
end

describe('optim.brains', function()
   it('averages two brains after each block', function()
      -- Brain 2 steps once per k = 3 steps of brain 1.
      local models, opt = brains(2, { lr = { 0.1, 0.3 }, momentum = 0.9 })
      assert.are.same({ 1, 3 }, opt.every)
      local theta0 = models[1].flat.params:totable()
      run(opt, 7)
      local theta, _, rm = reference(theta0, { 0.1, 0.3 }, { 1, 3 }, 0.9, 7)
      for j = 1, 2 do
         all_close(models[j].flat.params:totable(), theta[j], 'brain ' .. j)
         all_close(models[j].fc1.running_mean:totable(), rm[j], 'running_mean ' .. j)
      end
   end)

   it('averages brains 1..j whenever they have all just stepped', function()
      local models, opt = brains(3, { lr = { 0.01, 0.02, 0.04 }, momentum = 0.5 })
      local theta0 = models[1].flat.params:totable()
      local snapshots = {}
      local batch, log = { 0 }, {}
      local feval = brain_feval(batch, log)
      for t = 0, 7 do
         batch[1] = t
         opt:step(feval)
         snapshots[t + 1] = { models[1].flat.params:totable(), models[2].flat.params:totable(),
            models[3].flat.params:totable() }
      end
      -- After iteration 1: brains 1 and 2 equal, 3 apart; after iteration 3: all equal.
      assert.are.same(snapshots[2][1], snapshots[2][2])
      assert.are_not.same(snapshots[2][1], snapshots[2][3])
      assert.are.same(snapshots[4][1], snapshots[4][3])
      assert.are_not.same(snapshots[3][1], snapshots[3][2])
      local theta = reference(theta0, { 0.01, 0.02, 0.04 }, { 1, 2, 4 }, 0.5, 8)
      for j = 1, 3 do
         all_close(models[j].flat.params:totable(), theta[j], 'brain ' .. j)
      end
   end)

   it('runs each due brain on the same minibatch with its own model', function()
      local models, opt = brains(3, { lr = { 0.01, 0.02, 0.04 } })
      local log = run(opt, 4)
      local expected = { 1, 2, 3, 1, 1, 2, 1 }
      assert.are.equal(#expected, #log)
      for i, j in ipairs(expected) do
         assert.are.equal(models[j], log[i])
      end
   end)

   it('never resets or averages the momenta', function()
      local models, opt = brains(2, { lr = { 0.1, 0.3 }, momentum = 0.9 })
      local theta0 = models[1].flat.params:totable()
      run(opt, 6)
      local _, buf = reference(theta0, { 0.1, 0.3 }, { 1, 3 }, 0.9, 6)
      local state = opt:state()
      for j = 1, 2 do
         all_close(state.brains[j].optimizer.parts.params.buffer:totable(), buf[j],
            'buffer ' .. j)
      end
      assert.are_not.same(buf[1], buf[2])
   end)

   it('copies the average of all brains into the evaluation model', function()
      local models = { toy_model(1), toy_model(2) }
      local eval = toy_model(3)
      local opt = optim.brains(models, { lr = { 0.1, 0.2 }, eval_model = eval })
      assert.are.equal(eval, opt:model())
      assert.are.same(models[1].flat.params:totable(), eval.flat.params:totable())
      run(opt, 2)                                   -- averaged after iteration 1
      assert.are.same(models[1].flat.params:totable(), eval.flat.params:totable())
      assert.are.same(models[1].fc1.running_mean:totable(), eval.fc1.running_mean:totable())
      local averaged = eval.flat.params:totable()
      opt:step(brain_feval({ 2 }, {}))              -- brain 1 steps, no average
      assert.are.same(averaged, eval.flat.params:totable())
      assert.are_not.same(averaged, models[1].flat.params:totable())
   end)

   it('evaluates the current average between averages', function()
      local models = { toy_model(1), toy_model(2), toy_model(3) }
      local eval = toy_model(4)
      local opt = optim.brains(models, { lr = { 0.1, 0.2, 0.4 }, eval_model = eval })
      run(opt, 3)                     -- brains 1 and 2 averaged after iteration 1, not brain 3
      local before = {}
      for j, m in ipairs(models) do
         before[j] = m.flat.params:totable()
      end
      opt:prepare_evaluation()
      local expected = {}
      for i = 1, #before[1] do
         -- mrt_average sums in brain order from 0 in float32, then divides by 3.
         local sum = T.from_table({ 0 }, nil, 'cpu')
         for j = 1, 3 do
            sum:set(1, sum:get(1) + before[j][i])
         end
         expected[i] = T.from_table({ sum:get(1) / 3 }, nil, 'cpu'):get(1)
      end
      assert.are.same(expected, eval.flat.params:totable())
      for j, m in ipairs(models) do
         assert.are.same(before[j], m.flat.params:totable(), 'brain ' .. j)
      end
      all_close(eval.fc1.running_mean:totable(), mean({ models[1].fc1.running_mean:totable(),
         models[2].fc1.running_mean:totable(), models[3].fc1.running_mean:totable() }),
         'running_mean')
   end)

   it('averages again after load_state and rejects a brain as eval_model', function()
      local function make(eval)
         return optim.brains({ toy_model(1), toy_model(2), toy_model(3) },
            { lr = { 0.1, 0.2, 0.4 }, eval_model = eval })
      end
      local eval = toy_model(4)
      local opt = make(eval)
      run(opt, 3)
      local state = opt:state()
      run(opt, 1)
      local eval2 = toy_model(5)
      local opt2 = make(eval2)
      opt2:load_state(state)
      local before = eval2.flat.params:totable()
      opt2:prepare_evaluation()
      assert.are_not.same(before, eval2.flat.params:totable())
      local models = { toy_model(1), toy_model(2) }
      assert.has_error(function() optim.brains(models, { lr = { 0.1, 0.2 },
         eval_model = models[2] }) end, 'optim.brains: eval_model is brain 2; give a separate '
         .. 'model of the same architecture, or leave eval_model out to evaluate brain 1')
   end)

   it('evaluates brain 1 without an evaluation model', function()
      local models = { toy_model(1), toy_model(2) }
      assert.are.equal(models[1], optim.brains(models, { lr = { 0.1, 0.2 } }):model())
   end)

   it('averages two Adam copies under two triangular schedules every k steps', function()
      local k = 3
      local function tri(max)
         return optim.schedule.slanted_triangular({ max = max, epochs = 4, warmup_epochs = 1,
            iterations_per_epoch = 3 })
      end
      local lr = { tri(0.002), tri(0.01) }
      local models, opt = brains(2, { lr = lr, every = { 1, 1 }, average_every = k,
         optimizer = 'adam' })
      local theta0 = models[1].flat.params:totable()
      run(opt, 7)
      local theta, m, v = { { unpack(theta0) }, { unpack(theta0) } }, { {}, {} }, { {}, {} }
      for t = 0, 6 do
         for j = 1, 2 do
            local g = grads(theta[j], t)
            for i = 1, #g do
               m[j][i] = 0.9 * (m[j][i] or 0) + 0.1 * g[i]
               v[j][i] = 0.999 * (v[j][i] or 0) + 0.001 * g[i] ^ 2
               local denom = math.sqrt(v[j][i]) / math.sqrt(1 - 0.999 ^ (t + 1)) + 1e-8
               theta[j][i] = theta[j][i] - lr[j]:at(t) / (1 - 0.9 ^ (t + 1)) * m[j][i] / denom
            end
         end
         if (t + 1) % k == 0 then
            local avg = mean(theta)
            theta = { { unpack(avg) }, { unpack(avg) } }
         end
      end
      for j = 1, 2 do
         all_close(models[j].flat.params:totable(), theta[j], 'brain ' .. j)
      end
   end)

   it('resumes bit-identically from state()', function()
      local function make()
         local models = { toy_model(1), toy_model(2), toy_model(3) }
         return models, optim.brains(models, { lr = { 0.01, 0.02, 0.04 }, momentum = 0.9 })
      end
      local models, opt = make()
      run(opt, 3)
      local state = opt:state()
      local batch, log = { 0 }, {}
      local feval = brain_feval(batch, log)
      for t = 3, 8 do
         batch[1] = t
         opt:step(feval)
      end
      local models2, opt2 = make()
      opt2:load_state(state)
      assert.are.equal(3, opt2.iteration)
      for t = 3, 8 do
         batch[1] = t
         opt2:step(feval)
      end
      for j = 1, 3 do
         assert.are.same(models[j].flat.params:totable(), models2[j].flat.params:totable())
         assert.are.same(models[j].fc1.running_mean:totable(),
            models2[j].fc1.running_mean:totable())
      end
   end)

   it('takes a function that builds each brain\'s optimizer', function()
      local models = { toy_model(1), toy_model(2) }
      local built = {}
      optim.brains(models, { lr = { 0.1, 0.2 }, optimizer = function(model, j, lr)
         built[j] = lr
         return optim.multirate(model, { lr = lr, k = 2, fast = '^fc1%.bias' })
      end })
      assert.are.same({ 0.1, 0.2 }, built)
   end)

   it('rejects step sizes that are not integer multiples and bad lists', function()
      assert.has_error(function() brains(2, { lr = { 0.1, 0.25 } }) end,
         'optim.brains: lr[2]/lr[1] = 2.5 is not an integer; give option every')
      assert.has_error(function() brains(2, { lr = { 0.1 } }) end,
         "optim.brains: option 'lr' is a list of 1 (expected 2 step sizes, one per brain)")
      assert.has_error(function() brains(2, { lr = { 0.1, 0.2 }, every = { 2, 2 } }) end,
         "optim.brains: option 'every' is {2, 2} (expected 2 integers >= 1 with every[1] = 1)")
      assert.has_error(function() brains(2, { lr = { 0.1, 0.3 }, average_every = 4 }) end,
         "optim.brains: option 'average_every' is 4 (expected a multiple of every[2] = 3)")
      assert.has_error(function() brains(2, { lr = { 0.1, 0.2 }, optimizer = 'adam',
         momentum = 0.9 }) end,
         "optim.brains: option 'momentum' applies to sgd, not to optimizer 'adam'")
   end)

   it('rejects brains of another architecture', function()
      local other = setmetatable({}, Holder):init('cpu')
      local child = setmetatable({}, Holder):init('cpu')
      child:add_param('weight', T.zeros({ 2, 2 }, 'cpu'), 'weight')
      other:add('fc1', child)
      other:flatten()
      assert.has_error(function() optim.brains({ toy_model(1), other }, { lr = { 1, 2 } }) end,
         'optim.brains: brain 2 does not have the parameters and buffers of brain 1')
   end)
end)
