-- Specs for the multirate schemes: optim.multirate with and without drift,
-- the ablations, more than two levels, weights fast and biases slow, per-part
-- base optimizers (SGD, Adam, Langevin), and optim.subgroups and
-- optim.random_zeroing. Each scheme runs on a toy model whose gradients are
-- written by hand: a quadratic loss per minibatch, whose gradient is written
-- only for the parameters with needs_grad, as backward does. Each run is
-- compared with a float64 computation written out here from the scheme's
-- definition. Where a parameter must not move, it is compared bit for bit.
-- A real MLP checks that backward stops at the fast part.
--
-- Tolerance: runs of at most 20 steps on values of size 1, with float32
-- rounding (2^-24 relative) in about ten operations per element and step:
-- 1e-5 relative to max(1, |expected|).

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local random = require 'mrt.random'
local module = require 'mrt.nn.module'
local optim = require 'mrt.optim'
local partition = require 'mrt.partition'

local TOL = 1e-5

local function all_close(actual, expected, what)
   assert.are.equal(#expected, #actual)
   for i = 1, #expected do
      local err = math.abs(actual[i] - expected[i]) / math.max(1, math.abs(expected[i]))
      assert.is_true(err <= TOL, string.format('%s[%d]: got %.9g, expected %.9g', what, i,
         actual[i], expected[i]))
   end
end

------------------------------------------------------------------- toy model

-- Parameter holders with MLP names: fc1 [4,3] + [4], fc2 [2,4] + [2],
-- fc3 [3,2] + [3]; offsets fc1.weight 0, fc1.bias 12, fc2.weight 16,
-- fc2.bias 24, fc3.weight 26, fc3.bias 32; 35 elements.
local Holder = module.class('Holder')

local function toy_model(seed)
   local rng = random.new(seed or 1)
   local root = setmetatable({}, Holder):init('cpu')
   for _, layer in ipairs({ { 'fc1', 4, 3 }, { 'fc2', 2, 4 }, { 'fc3', 3, 2 } }) do
      local child = setmetatable({}, Holder):init('cpu')
      child:add_param('weight', rng:fill_uniform(T.zeros({ layer[2], layer[3] }, 'cpu'), -1, 1),
         'weight')
      child:add_param('bias', rng:fill_uniform(T.zeros({ layer[2] }, 'cpu'), -1, 1), 'bias')
      root:add(layer[1], child)
   end
   root:flatten()
   return root
end

-- Minibatch b's loss: 0.5 * sum_i a_bi (theta_i - c_bi)^2 over flat index i.
local function coef(b, i)
   return 1 + 0.5 * math.sin(1.3 * i + 0.7 * b), math.cos(0.9 * i + 1.1 * b)
end

-- The float64 gradient of minibatch b at theta (a 1-based Lua list).
local function grads(theta, b)
   local g = {}
   for i = 1, #theta do
      local a, c = coef(b, i - 1)
      g[i] = a * (theta[i] - c)
   end
   return g
end

-- feval on minibatch batch[1]: writes the gradient of the parameters with
-- needs_grad only and logs { batch =, needs = 'name,name' } per call.
local function toy_feval(model, batch, log)
   return function()
      local theta, grad = model.flat.params:ptr(), model.flat.grads:ptr()
      local needs, loss = {}, 0
      for _, p in ipairs(model:parameters()) do
         local e = p.entry
         if e.needs_grad then
            needs[#needs + 1] = p.name
         end
         for j = 0, e.value:numel() - 1 do
            local i = e.offset + j
            local a, c = coef(batch[1], i)
            loss = loss + 0.5 * a * (theta[i] - c) ^ 2
            if e.needs_grad then
               grad[i] = a * (theta[i] - c)
            end
         end
      end
      log = log or {}
      log[#log + 1] = { batch = batch[1], needs = table.concat(needs, ',') }
      return loss
   end
end

-- Runs opt for `steps` iterations, minibatch b = t % epoch; returns the log
-- and the parameters (as lists) after every step.
local function run(opt, model, steps, epoch, on_step)
   local batch, log, history = { 0 }, {}, {}
   local feval = toy_feval(model, batch, log)
   for t = 0, steps - 1 do
      batch[1] = t % (epoch or steps)
      opt:step(feval)
      history[t + 1] = model.flat.params:totable()
      if on_step then
         on_step(t)
      end
   end
   return log, history
end

-- Runs make(model) for `first` iterations, then on to `last`, and checks
-- that a new optimizer given the state after `first` repeats iterations
-- first..last bit for bit. Returns that state.
local function check_resume(make, first, last)
   local model = toy_model()
   local opt = make(model)
   run(opt, model, first)
   local saved, state = model.flat.params:clone(), opt:state()
   local batch = { 0 }
   for t = first, last do
      batch[1] = t
      opt:step(toy_feval(model, batch))
   end
   local expected = model.flat.params:totable()
   model.flat.params:copy(saved)
   local opt2 = make(model)
   opt2:load_state(state)
   for t = first, last do
      batch[1] = t
      opt2:step(toy_feval(model, batch))
   end
   assert.are.same(expected, model.flat.params:totable())
   return state
end

-- 1-based flat indices of a part's elements.
local function indices(part)
   local out = {}
   for _, p in ipairs(part.entries) do
      for j = 0, p.entry.value:numel() - 1 do
         out[#out + 1] = p.entry.offset + j + 1
      end
   end
   return out
end

---------------------------------------------------------- float64 reference

-- SGD momentum state of one part, torch.optim.SGD's buffer rule.
local function fold(state, idx, theta, g, mu, wd)
   for _, i in ipairs(idx) do
      local d = g[i] + wd * theta[i]
      state[i] = state.started and mu * state[i] + d or d
   end
   state.started = true
end

local function move(theta, idx, state, lr)
   for _, i in ipairs(idx) do
      theta[i] = theta[i] - lr * state[i]
   end
end

-- Two-part multirate. s: h, k, mu_s, mu_f, wd_s, wd_f, drift, slow_lr (per
-- update of the slow part, default h), at_end, steps, epoch.
local function reference(theta, slow, fast, s)
   theta = { unpack(theta) }
   local ps, pf = {}, {}
   local slow_lr = s.slow_lr or s.h
   for t = 0, s.steps - 1 do
      local b = t % (s.epoch or s.steps)
      if s.drift then
         local g = grads(theta, b)
         if t % s.k == 0 then
            fold(ps, slow, theta, g, s.mu_s, s.wd_s)
         end
         fold(pf, fast, theta, g, s.mu_f, s.wd_f)
         move(theta, fast, pf, s.h / s.k)
         move(theta, slow, ps, slow_lr / s.k)
      elseif s.at_end then
         local g = grads(theta, b)
         fold(pf, fast, theta, g, s.mu_f, s.wd_f)
         if t % s.k == s.k - 1 then
            fold(ps, slow, theta, g, s.mu_s, s.wd_s)
            move(theta, slow, ps, slow_lr)
         end
         move(theta, fast, pf, s.h / s.k)
      else
         if t % s.k == 0 then
            fold(ps, slow, theta, grads(theta, b), s.mu_s, s.wd_s)
            move(theta, slow, ps, slow_lr)
         end
         fold(pf, fast, theta, grads(theta, b), s.mu_f, s.wd_f)
         move(theta, fast, pf, s.h / s.k)
      end
   end
   return theta
end

local function fast_slow(model, fast_spec)
   local p = partition.new(model, { fast = fast_spec or '^fc3%.', slow = 'rest' })
   return p, indices(p:part('slow')), indices(p:part('fast'))
end

--------------------------------------------------------------------- specs

describe('optim.multirate with drift', function()
   it('follows the definition across epochs when k does not divide them', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         parts = { slow = { weight_decay = 0.05, momentum = 0.5 } } })
      run(opt, model, 17, 5)
      local expected = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.5, mu_f = 0.9,
         wd_s = 0.05, wd_f = 0, drift = true, steps = 17, epoch = 5 })
      all_close(model.flat.params:totable(), expected, 'theta')
   end)

   it('asks for the slow gradient once per block, also across an epoch', function()
      local model = toy_model()
      local p = fast_slow(model)
      local log = run(optim.multirate(model, { partition = p, lr = 0.6, k = 3 }), model, 8, 5)
      local all = 'fc1.weight,fc1.bias,fc2.weight,fc2.bias,fc3.weight,fc3.bias'
      local fast = 'fc3.weight,fc3.bias'
      -- Iterations 0, 3, 6 start blocks; 6 is in the second epoch (batch 1).
      local expected = { all, fast, fast, all, fast, fast, all, fast }
      for t, entry in ipairs(log) do
         assert.are.equal(expected[t], entry.needs, 'iteration ' .. (t - 1))
         assert.are.equal((t - 1) % 5, entry.batch)
      end
      assert.are.equal(8, #log)
   end)

   it('leaves the slow gradient buffer untouched on fast-only iterations', function()
      local model = toy_model()
      local p = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 4 })
      local grads_after = {}
      run(opt, model, 8, nil, function(t)
         grads_after[t] = model.flat.grads:totable()
      end)
      for t = 1, 7 do
         if t % 4 ~= 0 then
            for i = 1, 26 do   -- fc1 and fc2: the slow part
               assert.are.equal(grads_after[t - 1][i], grads_after[t][i])
            end
         end
      end
   end)

   it('starts the first block with the buffer equal to the gradient', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         dampening = 0.5, weight_decay = 0.1 })
      run(opt, model, 1)
      local g = grads(theta0, 0)
      local theta = model.flat.params:totable()
      for _, i in ipairs(slow) do
         local expected = theta0[i] - 0.2 * (g[i] + 0.1 * theta0[i])
         assert.is_true(math.abs(theta[i] - expected) <= TOL)
      end
   end)

   it('drifts along the block\'s buffer without fresh weight decay', function()
      -- Between its updates the slow part re-applies p_S, which holds the
      -- weight decay of the block start; the buffer must not change.
      local model = toy_model()
      local p = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         weight_decay = 0.5 })
      local buffers = {}
      run(opt, model, 3, nil, function(t)
         buffers[t] = opt:state().parts.slow.buffer:totable()
      end)
      assert.are.same(buffers[0], buffers[1])
      assert.are.same(buffers[0], buffers[2])
   end)

   it('takes the same step size for both parts in the step-size ablation', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         parts = { slow = { lr = 0.2 } } })
      run(opt, model, 9)
      local expected = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.9, mu_f = 0.9,
         wd_s = 0, wd_f = 0, drift = true, slow_lr = 0.2, steps = 9 })
      all_close(model.flat.params:totable(), expected, 'theta')
   end)

   it('returns the loss of the feval that gave the fast gradient', function()
      local model = toy_model()
      local opt = optim.multirate(model, { lr = 0.6, k = 2, fast = '^fc3%.' })
      local calls = 0
      local loss = opt:step(function()
         calls = calls + 1
         return calls * 10
      end)
      assert.are.equal(1, calls)
      assert.are.equal(10, loss)
   end)
end)

describe('optim.multirate without drift', function()
   it('follows the definition, the slow jump before the first fast gradient', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         drift = false, parts = { slow = { weight_decay = 0.01 } } })
      run(opt, model, 11, 4)
      local expected = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.9, mu_f = 0.9,
         wd_s = 0.01, wd_f = 0, drift = false, steps = 11, epoch = 4 })
      all_close(model.flat.params:totable(), expected, 'theta')
   end)

   it('calls feval twice on a block\'s first minibatch', function()
      local model = toy_model()
      local p = fast_slow(model)
      local log = run(optim.multirate(model, { partition = p, lr = 0.6, k = 2, drift = false }),
         model, 3)
      local slow, fast = 'fc1.weight,fc1.bias,fc2.weight,fc2.bias', 'fc3.weight,fc3.bias'
      assert.are.same({ { batch = 0, needs = slow }, { batch = 0, needs = fast },
         { batch = 1, needs = fast }, { batch = 2, needs = slow }, { batch = 2, needs = fast } },
         log)
   end)

   it('keeps the slow part still between jumps', function()
      local model = toy_model()
      local p, slow = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, drift = false,
         weight_decay = 0.1 })
      local _, history = run(opt, model, 6)
      for _, t in ipairs({ 2, 3, 5, 6 }) do
         for _, i in ipairs(slow) do
            assert.are.equal(history[t - 1][i], history[t][i])
         end
      end
   end)

   it('updates the slow part at the block end in the frozen ablation', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         drift = false, slow_at = 'end', parts = { slow = { lr = 0.2 } } })
      local log, history = run(opt, model, 7)
      local expected = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.9, mu_f = 0.9,
         wd_s = 0, wd_f = 0, at_end = true, slow_lr = 0.2, steps = 7 })
      all_close(model.flat.params:totable(), expected, 'theta')
      for _, i in ipairs(slow) do
         assert.are.equal(theta0[i], history[2][i])   -- frozen for k-1 = 2 iterations
      end
      assert.are.equal(7, #log)                       -- one feval per iteration
   end)
end)

describe('optim.multirate with more than two levels', function()
   -- Levels slow (fc1), mid (fc2), fast (fc3) with K = {2, 3}: periods 6, 3, 1
   -- and steps h, h/2, h/6.
   local function three_levels(model)
      return partition.new(model, { slow = '^fc1%.', mid = '^fc2%.', fast = '^fc3%.' })
   end

   local function ref3(theta, p, drift, steps)
      theta = { unpack(theta) }
      local idx = { indices(p:part('slow')), indices(p:part('mid')), indices(p:part('fast')) }
      local period, lr = { 6, 3, 1 }, { 1.2, 0.6, 0.2 }
      local state = { {}, {}, {} }
      for t = 0, steps - 1 do
         if drift then
            local g = grads(theta, t)
            for i = 1, 3 do
               if t % period[i] == 0 then
                  fold(state[i], idx[i], theta, g, 0.9, 0)
               end
            end
            for i = 1, 3 do
               move(theta, idx[i], state[i], lr[i] / period[i])
            end
         else
            for i = 1, 3 do
               if t % period[i] == 0 then
                  fold(state[i], idx[i], theta, grads(theta, t), 0.9, 0)
                  move(theta, idx[i], state[i], lr[i])
               end
            end
         end
      end
      return theta
   end

   for _, drift in ipairs({ true, false }) do
      it((drift and 'drifts' or 'jumps') .. ' with h_i = h_{i-1}/K_{i-1}', function()
         local model = toy_model()
         local theta0 = model.flat.params:totable()
         local p = three_levels(model)
         local opt = optim.multirate(model, { partition = p, levels = { 'slow', 'mid', 'fast' },
            k = { 2, 3 }, lr = 1.2, momentum = 0.9, drift = drift })
         run(opt, model, 13)
         all_close(model.flat.params:totable(), ref3(theta0, p, drift, 13), 'theta')
      end)
   end

   it('asks for each level\'s gradient on its own period', function()
      local model = toy_model()
      local p = three_levels(model)
      local log = run(optim.multirate(model, { partition = p, levels = { 'slow', 'mid', 'fast' },
         k = { 2, 3 }, lr = 1.2 }), model, 7)
      local needs = {}
      for t, entry in ipairs(log) do
         needs[t] = entry.needs
      end
      local all = 'fc1.weight,fc1.bias,fc2.weight,fc2.bias,fc3.weight,fc3.bias'
      local mid = 'fc2.weight,fc2.bias,fc3.weight,fc3.bias'
      local fast = 'fc3.weight,fc3.bias'
      assert.are.same({ all, fast, fast, mid, fast, fast, all }, needs)
   end)
end)

describe('optim.multirate with weights fast and biases slow', function()
   for _, case in ipairs({ { nil, { 13, 14, 15, 16, 25, 26, 33, 34, 35 } },
      { 'input', { 13, 14, 15, 16 } }, { 'output', { 33, 34, 35 } } }) do
      local which, slow_idx = case[1], case[2]
      it('moves ' .. (which or 'all') .. ' biases once per block', function()
         local model = toy_model()
         local opt = optim.multirate(model, { lr = 1, k = 5, drift = false,
            slow = { kind = 'bias', layer = which } })
         local _, history = run(opt, model, 10)
         local is_slow = {}
         for _, i in ipairs(slow_idx) do
            is_slow[i] = true
         end
         for t = 2, 10 do
            for i = 1, 35 do
               local moved = history[t][i] ~= history[t - 1][i]
               if is_slow[i] then
                  assert.are.equal((t - 1) % 5 == 0, moved, 'element ' .. i .. ' step ' .. t)
               else
                  assert.is_true(moved, 'element ' .. i .. ' step ' .. t)
               end
            end
         end
      end)
   end
end)

describe('optim.multirate with a base optimizer per part', function()
   it('runs Adam on the slow part, counting its own steps for bias correction', function()
      local model = toy_model()
      local theta = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         parts = { slow = { optimizer = 'adam', lr = 0.03 } } })
      run(opt, model, 7)
      assert.are.equal(3, opt:state().parts.slow.step)   -- iterations 0, 3, 6
      -- float64: Adam's t counts the slow updates (1, 2, 3), not iterations.
      local m, v, pf, n = {}, {}, {}, 0
      for _, i in ipairs(slow) do
         m[i], v[i] = 0, 0
      end
      for t = 0, 6 do
         local g = grads(theta, t)
         if t % 3 == 0 then
            n = n + 1
            for _, i in ipairs(slow) do
               m[i] = 0.9 * m[i] + 0.1 * g[i]
               v[i] = 0.999 * v[i] + 0.001 * g[i] ^ 2
            end
         end
         fold(pf, fast, theta, g, 0.9, 0)
         move(theta, fast, pf, 0.2)
         for _, i in ipairs(slow) do   -- drift: 1/3 of the slow step per iteration
            local denom = math.sqrt(v[i]) / math.sqrt(1 - 0.999 ^ n) + 1e-8
            theta[i] = theta[i] - 0.01 / (1 - 0.9 ^ n) * m[i] / denom
         end
      end
      all_close(model.flat.params:totable(), theta, 'theta')
   end)

   it('runs Langevin on one part, which is SGD at tau = 0', function()
      local a, b = toy_model(), toy_model()
      local pa, pb = fast_slow(a), fast_slow(b)
      run(optim.multirate(a, { partition = pa, lr = 0.6, k = 3, momentum = 0.9,
         parts = { fast = { optimizer = 'langevin', gamma = 1, tau = 0 } } }), a, 6)
      run(optim.multirate(b, { partition = pb, lr = 0.6, k = 3, momentum = 0.9,
         parts = { fast = { momentum = 1 - math.sqrt(0.2) } } }), b, 6)
      assert.are.same(b.flat.params:totable(), a.flat.params:totable())
   end)
end)

describe('optim.multirate state', function()
   it('resumes bit-identically in the middle of a block', function()
      local function make(model)
         return optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9, fast = '^fc3%.',
            parts = { slow = { optimizer = 'adamw', lr = 0.01 } } })
      end
      local model = toy_model()
      local opt = make(model)
      run(opt, model, 4)                          -- position 1 of the second block
      local saved, state = model.flat.params:clone(), opt:state()
      local batch = { 0 }
      local feval = toy_feval(model, batch)
      for t = 4, 9 do
         batch[1] = t
         opt:step(feval)
      end
      local expected = model.flat.params:totable()
      local model2 = toy_model(5)
      model2.flat.params:copy(saved)
      local opt2 = make(model2)
      opt2:load_state(state)
      assert.are.same({ slow = 1, fast = 0 }, opt2:block_position())
      local feval2 = toy_feval(model2, batch)
      for t = 4, 9 do
         batch[1] = t
         opt2:step(feval2)
      end
      assert.are.same(expected, model2.flat.params:totable())
   end)
end)

describe('optim.multirate state in a checkpoint', function()
   it('resumes bit-identically through checkpoint.save and load', function()
      local checkpoint = require 'mrt.checkpoint'
      local function make(model)
         return optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9, fast = '^fc3%.',
            parts = { slow = { optimizer = 'langevin', gamma = 1, tau = 0.01 } }, seed = 3 })
      end
      local model = toy_model()
      local opt = make(model)
      run(opt, model, 5)
      local path = os.tmpname()
      checkpoint.save(path, { model = model, optimizer = opt })
      local batch = { 0 }
      for t = 5, 9 do
         batch[1] = t
         opt:step(toy_feval(model, batch))
      end
      local model2 = toy_model(8)
      local opt2 = make(model2)
      checkpoint.load(path, { model = model2, optimizer = opt2 })
      os.remove(path)
      for t = 5, 9 do
         batch[1] = t
         opt2:step(toy_feval(model2, batch))
      end
      assert.are.same(model.flat.params:totable(), model2.flat.params:totable())
   end)
end)

describe('optim.multirate options', function()
   it('rejects bad options with the key and what was expected', function()
      local model = toy_model()
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         drfit = true }) end, "optim.multirate: unknown option 'drfit' (valid options: amsgrad, "
         .. 'betas, dampening, drift, eps, fast, gamma, k, levels, lr, momentum, nesterov, '
         .. 'optimizer, partition, parts, seed, slow, slow_at, tau, weight_decay)')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 0, fast = '^fc3' }) end,
         "optim.multirate: option 'k' is 0 (expected an integer >= 1 or a list of them)")
      assert.has_error(function() optim.multirate(model, { lr = 1, k = { 2, 2 },
         fast = '^fc3' }) end,
         "optim.multirate: option 'k' is {2, 2} (expected 1 integers >= 1, one per level but "
         .. 'the fastest)')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2 }) end,
         "optim.multirate: give the fast part (option 'fast'), the slow part ('slow'), both, "
         .. "or 'levels'")
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         parts = { head = { momentum = 0.9 } } }) end,
         "optim.multirate: option 'parts' names 'head', which is not a part of the scheme "
         .. '(parts: slow, fast)')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         parts = { fast = { optimizer = 'adam', momentum = 0.9 } } }) end,
         "optim.multirate: part 'fast': option 'momentum' applies to sgd, not to optimizer "
         .. "'adam'")
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         slow_at = 'end' }) end, "optim.multirate: slow_at = 'end' needs drift = false")
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         nesterov = true }) end,
         "optim.multirate: part 'slow': nesterov needs momentum > 0 and dampening 0, got "
         .. 'momentum 0 and dampening 0')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, fast = '^fc3',
         slow = '^fc3%.b' }) end,
         "optim.multirate: parameter 'fc3.bias' is in both part 'slow' and part 'fast' (two "
         .. 'parts share a parameter only as a masked part and its complement, see '
         .. 'partition.complement)')
   end)

   it('rejects overlapping masked parts', function()
      local model = toy_model()
      local a = partition.part(model, { '^fc1%.w', random = { prob = 0.5, seed = 1 } }, 'a')
      local b = partition.part(model, { '^fc1%.w', random = { prob = 0.5, seed = 2 } }, 'b')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, slow = a, fast = b })
      end, "optim.multirate: parameter 'fc1.weight' is in both part 'a' and part 'b' (two "
         .. 'parts share a parameter only as a masked part and its complement, see '
         .. 'partition.complement)')
      local c = partition.part(model, '^fc2%.', 'a')
      assert.has_error(function() optim.multirate(model, { lr = 1, k = 2, slow = a, fast = c })
      end, "optim.multirate: two parts are named 'a'; give each part its own name (the third "
         .. 'argument of partition.part, or partition.new)')
   end)

   it('rejects a complement as the subgroups part', function()
      local model = toy_model()
      local a = partition.part(model, { '^fc1%.w', random = { prob = 0.5, seed = 1 } }, 'a')
      local rest = partition.complement(a, 'rest')
      assert.has_error(function() optim.subgroups(model, { lr = 1, k = 2, slow = rest }) end,
         "optim.subgroups: part 'rest' contains the elements where a mask is 0; give the "
         .. 'masked part itself')
   end)
end)

--------------------------------------------------------------- random subgroups

-- Masks as the partition draws them: Bernoulli per selected weight, in
-- parameter order, from a generator with the given seed.
local function mask_drawer(seed, shapes, prob)
   local rng = random.new(seed)
   return function()
      local masks = {}
      for i, shape in ipairs(shapes) do
         masks[i] = rng:fill_bernoulli(T.zeros(shape, 'cpu'), prob[i]):totable()
      end
      return masks
   end
end

-- fc1.weight (offset 0, 12) and fc2.weight (offset 16, 8) carry masks.
local MASKED = { { offset = 0, n = 12 }, { offset = 16, n = 8 } }

-- One element's step in the float64 references: plain SGD, SGD with
-- momentum mu (buffer g on the element's first update, as PyTorch), or Adam
-- (s.adam = { lr-independent betas and eps }) with the element's own count.
local function element_step(st, i, theta, g, lr, s)
   if s.adam then
      st.c[i] = (st.c[i] or 0) + 1
      st.m[i] = 0.9 * (st.m[i] or 0) + 0.1 * g
      st.v[i] = 0.999 * (st.v[i] or 0) + 0.001 * g * g
      local denom = math.sqrt(st.v[i]) / math.sqrt(1 - 0.999 ^ st.c[i]) + 1e-8
      return theta - lr / (1 - 0.9 ^ st.c[i]) * st.m[i] / denom
   end
   local d = g
   if (s.mu or 0) ~= 0 then
      st.b[i] = st.b[i] and s.mu * st.b[i] + (1 - (s.damp or 0)) * g or g
      d = st.b[i]
   end
   return theta - lr * d
end

-- Float64 subgroups (every_step = false) or random zeroing (true). s: h,
-- k, seed, wd, steps, and optionally mu, adam, extra (full_step 'extra').
local function ref_subgroups(theta, s, every_step)
   theta = { unpack(theta) }
   local draw = mask_drawer(s.seed, { { 4, 3 }, { 2, 4 } }, { 0.8, 0.5 })
   local period = s.k + (s.extra and 1 or 0)
   local st = { b = {}, m = {}, v = {}, c = {} }
   local masks
   for t = 0, s.steps - 1 do
      local pos = t % period
      if t == 0 or every_step or pos == 0 then
         masks = draw()
      end
      local slow = {}
      for m, w in ipairs(MASKED) do
         for j = 1, w.n do
            slow[w.offset + j] = masks[m][j] == 1
         end
      end
      local fast_step = every_step or pos < period - 1
      local point = { unpack(theta) }
      if fast_step then
         for i in pairs(slow) do
            if slow[i] then
               point[i] = 0
            end
         end
      end
      local g = grads(point, t)
      for i = 1, #theta do
         if not (slow[i] and fast_step) then
            local lr = slow[i] and s.h * s.k or s.h
            theta[i] = element_step(st, i, theta[i], g[i] + s.wd * point[i], lr, s)
         end
      end
   end
   return theta
end

local PROB = { ['^fc1%.'] = 0.8, ['^fc2%.'] = 0.5 }

describe('optim.multirate with nesterov momentum', function()
   -- float64: the slow part's update stores d_S = g_S + mu*p_S, and each of
   -- the block's k iterations moves it by (h/k)*d_S.
   local function ref_nesterov(theta, slow, fast, s)
      theta = { unpack(theta) }
      local ps, pf, ds = {}, {}, {}
      for t = 0, s.steps - 1 do
         local g = grads(theta, t % s.epoch)
         if t % s.k == 0 then
            for _, i in ipairs(slow) do
               local d = g[i] + s.wd * theta[i]
               ps[i] = ps[i] and s.mu * ps[i] + d or d
               ds[i] = d + s.mu * ps[i]
            end
         end
         for _, i in ipairs(fast) do
            pf[i] = pf[i] and s.mu * pf[i] + g[i] or g[i]
            theta[i] = theta[i] - s.h / s.k * (g[i] + s.mu * pf[i])
         end
         for _, i in ipairs(slow) do
            theta[i] = theta[i] - s.h / s.k * ds[i]
         end
      end
      return theta
   end

   it('drifts the slow part along the direction of its last update', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local p, slow, fast = fast_slow(model)
      local opt = optim.multirate(model, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         nesterov = true, parts = { slow = { weight_decay = 0.05 } } })
      run(opt, model, 14, 5)
      local expected = ref_nesterov(theta0, slow, fast, { h = 0.6, k = 3, mu = 0.9, wd = 0.05,
         steps = 14, epoch = 5 })
      all_close(model.flat.params:totable(), expected, 'theta')
   end)

   it('resumes bit-identically in the middle of a block', function()
      local function make(model)
         return optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9, nesterov = true,
            fast = '^fc3%.' })
      end
      local state = check_resume(make, 4, 8)
      assert.is_not_nil(state.parts.slow.direction)
   end)
end)

describe('optim.multirate with element-mask parts', function()
   -- 1-based flat indices of the elements where a 0/1 table is `on`, from offset.
   local function where(mask, offset, on, out)
      for j, v in ipairs(mask) do
         if v == on then
            out[#out + 1] = offset + j
         end
      end
      return out
   end

   local function fixed_masks()
      local m1 = T.from_table({ 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0 }, { 4, 3 }, 'cpu')
      local m2 = T.from_table({ 0, 1, 1, 0, 1, 0, 0, 1 }, { 2, 4 }, 'cpu')
      return { ['fc1.weight'] = m1, ['fc2.weight'] = m2 }
   end

   -- Slow: the masked elements of fc1.weight and fc2.weight; fast: the rest.
   local function masked_indices(masks)
      local slow, fast = {}, {}
      where(masks['fc1.weight']:totable(), 0, 1, slow)
      where(masks['fc2.weight']:totable(), 16, 1, slow)
      where(masks['fc1.weight']:totable(), 0, 0, fast)
      where(masks['fc2.weight']:totable(), 16, 0, fast)
      for _, range in ipairs({ { 13, 16 }, { 25, 35 } }) do
         for i = range[1], range[2] do
            fast[#fast + 1] = i
         end
      end
      return slow, fast
   end

   it('splits a weight tensor into slow and fast elements with fixed masks', function()
      local a, b = toy_model(), toy_model()
      local theta0 = a.flat.params:totable()
      local masks = fixed_masks()
      local slow, fast = masked_indices(masks)
      local s = { h = 0.6, k = 3, mu_s = 0.5, mu_f = 0.9, wd_s = 0.05, wd_f = 0, drift = true,
         steps = 13, epoch = 5 }
      run(optim.multirate(a, { lr = 0.6, k = 3, momentum = 0.9, slow = { masks = masks },
         parts = { slow = { momentum = 0.5, weight_decay = 0.05 } } }), a, 13, 5)
      all_close(a.flat.params:totable(), reference(theta0, slow, fast, s), 'drift')
      -- The same split from a partition whose rest takes the other elements.
      local p = partition.new(b, { slow = { masks = masks }, fast = 'rest' })
      local opt = optim.multirate(b, { partition = p, lr = 0.6, k = 3, momentum = 0.9,
         parts = { slow = { momentum = 0.5, weight_decay = 0.05 } } })
      run(opt, b, 13, 5)
      assert.are.same(a.flat.params:totable(), b.flat.params:totable())
      -- No element's state moves in a part it does not belong to.
      local buffer = opt:state().parts.slow.buffer:totable()
      for j, v in ipairs(masks['fc1.weight']:totable()) do
         if v == 0 then
            assert.are.equal(0, buffer[j])
         end
      end
      local jump = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.5, mu_f = 0.9,
         wd_s = 0.05, wd_f = 0, drift = false, steps = 13, epoch = 5 })
      local c = toy_model()
      run(optim.multirate(c, { lr = 0.6, k = 3, momentum = 0.9, drift = false,
         slow = { masks = masks }, parts = { slow = { momentum = 0.5, weight_decay = 0.05 } } }),
         c, 13, 5)
      all_close(c.flat.params:totable(), jump, 'jump')
      local at_end = reference(theta0, slow, fast, { h = 0.6, k = 3, mu_s = 0.5, mu_f = 0.9,
         wd_s = 0.05, wd_f = 0, at_end = true, slow_lr = 0.2, steps = 13, epoch = 5 })
      local d = toy_model()
      run(optim.multirate(d, { lr = 0.6, k = 3, momentum = 0.9, drift = false, slow_at = 'end',
         slow = { masks = masks }, parts = { slow = { momentum = 0.5, weight_decay = 0.05,
            lr = 0.2 } } }), d, 13, 5)
      all_close(d.flat.params:totable(), at_end, 'slow_at end')
   end)

   -- float64 multirate with drift whose slow elements are random masks,
   -- redrawn at each block start. Options: s.adam puts Adam with
   -- per-element counts on the slow part, s.damp sets SGD's dampening, and
   -- s.masked_fast makes the masked elements the fast ones.
   local function ref_random(theta, s)
      theta = { unpack(theta) }
      local draw = mask_drawer(s.seed, { { 4, 3 }, { 2, 4 } }, { 0.8, 0.5 })
      local st_s, pf = { b = {}, m = {}, v = {}, c = {} }, {}
      local slow, fast, dir
      for t = 0, s.steps - 1 do
         if t % s.k == 0 then
            local masks = draw()
            slow, fast = {}, {}
            where(masks[1], 0, 1, slow)
            where(masks[2], 16, 1, slow)
            where(masks[1], 0, 0, fast)
            where(masks[2], 16, 0, fast)
            for _, range in ipairs({ { 13, 16 }, { 25, 35 } }) do
               for i = range[1], range[2] do
                  fast[#fast + 1] = i
               end
            end
            if s.masked_fast then
               slow, fast = fast, slow
            end
         end
         local g = grads(theta, t)
         local damp = 1 - (s.damp or 0)
         if t % s.k == 0 then
            dir = {}
            for _, i in ipairs(slow) do
               if s.adam then   -- the step per unit of lr, from the updated moments
                  dir[i] = theta[i] - element_step(st_s, i, theta[i], g[i], 1, s)
               else
                  st_s.b[i] = st_s.b[i] and s.mu * st_s.b[i] + damp * g[i] or g[i]
                  dir[i] = st_s.b[i]
               end
            end
         end
         for _, i in ipairs(fast) do
            pf[i] = pf[i] and s.mu * pf[i] + damp * g[i] or g[i]
            theta[i] = theta[i] - s.h / s.k * pf[i]
         end
         for _, i in ipairs(slow) do
            theta[i] = theta[i] - s.slow_lr / s.k * dir[i]
         end
      end
      return theta
   end

   it('redraws random masks per block', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local opt = optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9,
         slow = { random = { prob = PROB, seed = 9 } } })
      run(opt, model, 11)
      all_close(model.flat.params:totable(), ref_random(theta0, { h = 0.6, slow_lr = 0.6, k = 3,
         mu = 0.9, seed = 9, steps = 11 }), 'sgd')
      local m2 = toy_model()
      run(optim.multirate(m2, { lr = 0.6, k = 3, momentum = 0.9,
         slow = { random = { prob = PROB, seed = 9 } },
         parts = { slow = { optimizer = 'adam', lr = 0.03 } } }), m2, 11)
      all_close(m2.flat.params:totable(), ref_random(theta0, { h = 0.6, slow_lr = 0.03, k = 3,
         mu = 0.9, seed = 9, steps = 11, adam = true }), 'adam')
      local m3 = toy_model()
      run(optim.multirate(m3, { lr = 0.6, k = 3, momentum = 0.9, dampening = 0.5,
         slow = { random = { prob = PROB, seed = 9 } } }), m3, 11)
      all_close(m3.flat.params:totable(), ref_random(theta0, { h = 0.6, slow_lr = 0.6, k = 3,
         mu = 0.9, damp = 0.5, seed = 9, steps = 11 }), 'dampening')
   end)

   it('redraws a random fast part per slow block', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      run(optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9,
         fast = { random = { prob = PROB, seed = 9 } } }), model, 11)
      all_close(model.flat.params:totable(), ref_random(theta0, { h = 0.6, slow_lr = 0.6, k = 3,
         mu = 0.9, seed = 9, steps = 11, masked_fast = true }), 'theta')
   end)

   it('resumes a random split bit-identically in the middle of a block', function()
      local function make(model)
         return optim.multirate(model, { lr = 0.6, k = 3, momentum = 0.9,
            slow = { random = { prob = PROB, seed = 9 } } })
      end
      local state = check_resume(make, 5, 10)
      assert.is_not_nil(state.masks.slow)
   end)
end)

describe('optim.multirate on an MLP', function()
   it('runs backward only through the fast layer on fast-only iterations', function()
      local model = nn.sequential(nil, { device = 'cpu' })
      model:add('fc1', nn.linear(5, 4, { rng = random.new(1), device = 'cpu' }))
      model:add('relu', nn.relu({ device = 'cpu' }))
      model:add('fc2', nn.linear(4, 3, { rng = random.new(2), device = 'cpu' }))
      model:flatten()
      local called = {}
      for _, name in ipairs({ 'fc1', 'relu', 'fc2' }) do
         local m = model[name]
         local original = m.update_grad
         m.update_grad = function(self, x, dy, need_dx)
            called[#called + 1] = name
            return original(self, x, dy, need_dx)
         end
      end
      local x = random.new(3):fill_normal(T.zeros({ 6, 5 }, 'cpu'), 0, 1)
      local labels = T.labels(6, 'cpu')
      for i = 0, 5 do
         labels.ptr[i] = i % 3
      end
      local criterion = nn.cross_entropy()
      local function feval()
         local loss = criterion:forward(model:forward(x), labels)
         model:backward(x, criterion:backward(1), false)
         return loss
      end
      local opt = optim.multirate(model, { lr = 0.3, k = 3, momentum = 0.9, fast = '^fc2%.' })
      local fc1_grad = model.fc1.params[1].grad
      local seen = {}
      for t = 0, 3 do
         called = {}
         local before = fc1_grad:totable()
         opt:step(feval)
         seen[t + 1] = table.concat(called, ',')
         if t % 3 ~= 0 then
            assert.are.same(before, fc1_grad:totable())
         end
      end
      assert.are.same({ 'fc2,relu,fc1', 'fc2', 'fc2', 'fc2,relu,fc1' }, seen)
   end)
end)

describe('optim.subgroups', function()
   it('follows the definition with masks redrawn every k steps', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local opt = optim.subgroups(model, { lr = 0.1, k = 3, prob = PROB, seed = 9,
         weight_decay = 0.01 })
      run(opt, model, 10)
      local expected = ref_subgroups(theta0, { h = 0.1, k = 3, seed = 9, wd = 0.01, steps = 10 })
      all_close(model.flat.params:totable(), expected, 'theta')
   end)

   it('shows feval the slow elements as zero on fast steps only', function()
      local model = toy_model()
      local opt = optim.subgroups(model, { lr = 0.1, k = 2, prob = PROB, seed = 9 })
      local zeros = {}
      local before
      for t = 0, 3 do
         before = model.flat.params:totable()
         opt:step(function()
            local count = 0
            for _, v in ipairs(model.flat.params:totable()) do
               count = count + (v == 0 and 1 or 0)
            end
            zeros[t + 1] = count
            return 0
         end)
      end
      local slow = 0
      for _, v in ipairs(opt.slow.masks['fc1.weight']:totable()) do
         slow = slow + v
      end
      assert.is_true(zeros[1] > 0)
      assert.are.equal(0, zeros[2])
      assert.are.equal(0, zeros[4])
      -- Between steps the model contains its full weights.
      for _, v in ipairs(before) do
         assert.are_not.equal(0, v)
      end
      assert.is_true(slow > 0)
   end)

   it('follows the definition with SGD momentum as its base', function()
      for _, damp in ipairs({ 0, 0.5 }) do
         local model = toy_model()
         local theta0 = model.flat.params:totable()
         run(optim.subgroups(model, { lr = 0.1, k = 3, prob = PROB, seed = 9, momentum = 0.9,
            dampening = damp, weight_decay = 0.01 }), model, 11)
         local expected = ref_subgroups(theta0, { h = 0.1, k = 3, seed = 9, wd = 0.01,
            steps = 11, mu = 0.9, damp = damp })
         all_close(model.flat.params:totable(), expected, 'dampening ' .. damp)
      end
   end)

   it('rejects trained parameters with element masks', function()
      local model = toy_model()
      local masked = partition.part(model, { '^fc1%.w', random = { prob = 0.5 } }, 'masked')
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2, prob = 0.5,
         params = masked }) end, "optim.subgroups: option 'params': part 'masked' has element "
         .. "masks; give whole parameters there and the masks in 'slow' or 'prob'")
   end)

   it('follows the definition with Adam as its base', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local opt = optim.subgroups(model, { lr = 0.01, k = 3, prob = PROB, seed = 9,
         optimizer = 'adam', weight_decay = 0.01 })
      run(opt, model, 11)
      local expected = ref_subgroups(theta0, { h = 0.01, k = 3, seed = 9, wd = 0.01, steps = 11,
         adam = true })
      all_close(model.flat.params:totable(), expected, 'theta')
      -- fc3 steps on every iteration; a masked element steps 1 to 11 times.
      local counts = opt:state().base.counts:totable()
      assert.are.equal(11, counts[27])
      local seen = {}
      for i = 1, 12 do
         seen[counts[i]] = true
      end
      assert.is_true(next(seen, next(seen)) ~= nil, 'counts of fc1.weight all equal')
   end)

   it('adds the full step with full_step = extra', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      local opt = optim.subgroups(model, { lr = 0.1, k = 3, prob = PROB, seed = 9,
         full_step = 'extra' })
      local zeros = {}
      run(opt, model, 10)
      local expected = ref_subgroups(theta0, { h = 0.1, k = 3, seed = 9, wd = 0, steps = 10,
         extra = true })
      all_close(model.flat.params:totable(), expected, 'theta')
      -- Iterations 3 and 7 are full, so no element is zero during their feval.
      local model2 = toy_model()
      local opt2 = optim.subgroups(model2, { lr = 0.1, k = 3, prob = PROB, seed = 9,
         full_step = 'extra' })
      for t = 0, 7 do
         opt2:step(function()
            local count = 0
            for _, v in ipairs(model2.flat.params:totable()) do
               count = count + (v == 0 and 1 or 0)
            end
            zeros[t + 1] = count
            return 0
         end)
      end
      for t = 0, 7 do
         assert.are.equal(t % 4 == 3, zeros[t + 1] == 0, 'iteration ' .. t)
      end
   end)

   it('is plain SGD with k = 1', function()
      local a, b = toy_model(), toy_model()
      run(optim.subgroups(a, { lr = 0.1, k = 1, prob = 0.5, weight_decay = 0.01 }), a, 5)
      run(optim.sgd(b, { lr = 0.1, weight_decay = 0.01 }), b, 5)
      assert.are.same(b.flat.params:totable(), a.flat.params:totable())
   end)

   it('resumes with the same masks after load_state', function()
      check_resume(function(model)
         return optim.subgroups(model, { lr = 0.1, k = 3, prob = PROB, seed = 2 })
      end, 4, 8)
      check_resume(function(model)
         return optim.subgroups(model, { lr = 0.01, k = 3, prob = PROB, seed = 2,
            optimizer = 'adam' })
      end, 4, 8)
   end)

   it('rejects a slow part without masks and missing prob', function()
      local model = toy_model()
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2 }) end,
         "optim.subgroups: give exactly one of 'prob' (random masks) and 'slow' (a masked part)")
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2, slow = '^fc1' }) end,
         "optim.subgroups: part 'slow' has no element masks (expected a part spec with random "
         .. 'or masks)')
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2, prob = 0.5,
         gamma = 0.9 }) end, "optim.subgroups: unknown option 'gamma' (valid options: amsgrad, "
         .. 'betas, dampening, eps, full_step, k, lr, momentum, nesterov, optimizer, params, '
         .. 'prob, seed, slow, weight_decay)')
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2, prob = 0.5,
         optimizer = 'langevin' }) end, "optim.subgroups: option 'optimizer' is 'langevin' "
         .. "(expected one of sgd, adam, adamw)")
      assert.has_error(function() optim.subgroups(model, { lr = 0.1, k = 2, prob = 0.5,
         full_step = 'first' }) end, "optim.subgroups: option 'full_step' is 'first' "
         .. "(expected one of last, extra)")
   end)
end)

describe('optim.random_zeroing', function()
   it('follows the definition with masks redrawn every step', function()
      local model = toy_model()
      local theta0 = model.flat.params:totable()
      run(optim.random_zeroing(model, { lr = 0.1, prob = PROB, seed = 4 }), model, 6)
      local expected = ref_subgroups(theta0, { h = 0.1, k = 1, seed = 4, wd = 0, steps = 6 },
         true)
      all_close(model.flat.params:totable(), expected, 'theta')
   end)
end)
