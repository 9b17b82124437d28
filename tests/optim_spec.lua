-- Specs for the fused optimizer updates of engine/optim.c against
-- closed-form float64 computations, and for the single-part optimizers
-- optim.sgd, optim.adam, optim.adamw and optim.langevin: their updates,
-- the step protocol (needs_grad, frozen parameters), state and resume, and
-- option checking.
--
-- Tolerances: a float32 operation rounds with relative error at most 2^-24
-- (6e-8). One element update takes at most about ten operations, so a
-- closed-form check allows 1e-6 relative to max(1, |expected|); trajectories
-- of up to 20 steps on values of size 1 allow 1e-5.

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local random = require 'mrt.random'
local module = require 'mrt.nn.module'
local optim = require 'mrt.optim'
local partition = require 'mrt.partition'

local ffi, C = lib.ffi, lib.C
local ctx = T.context('cpu')

local STEP_TOL = 1e-6
local TRAJ_TOL = 1e-5

local function close(actual, expected, tol, what)
   local err = math.abs(actual - expected) / math.max(1, math.abs(expected))
   assert.is_true(err <= tol, string.format('%s: got %.9g, expected %.9g', what or 'value',
      actual, expected))
end

local function all_close(actual, expected, tol, what)
   assert.are.equal(#expected, #actual)
   for i = 1, #expected do
      close(actual[i], expected[i], tol, string.format('%s[%d]', what or 'value', i))
   end
end

local function message()
   return ffi.string(C.mrt_error_message())
end

-- A tensor of n values from a fixed formula, and its float32 values as a list.
local function vec(n, phase, scale)
   local values = {}
   for i = 1, n do
      values[i] = (scale or 1) * math.sin(1.7 * i + phase)
   end
   local t = T.from_table(values, { n }, 'cpu')
   return t, t:totable()
end

local function sgd_params(fields)
   local p = ffi.new('mrt_sgd_params')
   p.lr, p.momentum, p.dampening, p.weight_decay = 0.1, 0, 0, 0
   p.noise_std, p.nesterov, p.first, p.update_buffer, p.apply = 0, 0, 0, 1, 1
   for k, v in pairs(fields or {}) do
      p[k] = v
   end
   return p
end

local function adam_params(fields)
   local p = ffi.new('mrt_adam_params')
   p.lr, p.beta1, p.beta2, p.eps, p.weight_decay = 0.01, 0.9, 0.999, 1e-8, 0
   p.decoupled, p.amsgrad, p.step, p.update_moments, p.apply = 0, 0, 1, 1, 1
   for k, v in pairs(fields or {}) do
      p[k] = v
   end
   return p
end

------------------------------------------------------------------------ toy model

-- A model of plain parameter holders: children fc1 [4,3] + [4], fc2 [2,4]
-- + [2], fc3 [3,2] + [3], so names and kinds are those of an MLP.
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

-- Loss of minibatch b: 0.5 * sum_i a_bi (theta_i - c_bi)^2 over flat index i.
local function coef(b, i)
   return 1 + 0.5 * math.sin(1.3 * i + 0.7 * b), math.cos(0.9 * i + 1.1 * b)
end

-- feval for the toy model on minibatch batch[1]: writes the gradient of the
-- parameters with needs_grad only (as backward does) and logs their names.
local function toy_feval(model, batch, log)
   return function()
      local flat = model.flat
      local theta, grad = flat.params:ptr(), flat.grads:ptr()
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
      if log then
         log[#log + 1] = { batch = batch[1], needs = table.concat(needs, ',') }
      end
      return loss
   end
end

-- Float64 gradient of the toy loss at theta (a Lua list, 0-based index i+1).
local function toy_grad(theta, b, i)
   local a, c = coef(b, i)
   return a * (theta[i + 1] - c)
end

--------------------------------------------------------------------- C updates

describe('mrt_sgd_update', function()
   it('steps along grad + weight_decay*theta without momentum', function()
      local theta, th = vec(5, 0)
      local grad, g = vec(5, 1)
      local p = sgd_params({ lr = 0.25, weight_decay = 0.1 })
      assert.are.equal(0, C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, nil, 5, p, nil))
      local expected = {}
      for i = 1, 5 do
         expected[i] = th[i] - 0.25 * (g[i] + 0.1 * th[i])
      end
      all_close(theta:totable(), expected, STEP_TOL, 'theta')
   end)

   it('sets the buffer to g on its first update, ignoring dampening', function()
      local theta, th = vec(4, 0)
      local grad, g = vec(4, 1)
      local buffer = T.zeros({ 4 }, 'cpu'):fill(7)
      local p = sgd_params({ lr = 0.5, momentum = 0.9, dampening = 0.3, first = 1 })
      assert.are.equal(0, C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 4, p,
         nil))
      all_close(buffer:totable(), g, STEP_TOL, 'buffer')
      local expected = {}
      for i = 1, 4 do
         expected[i] = th[i] - 0.5 * g[i]
      end
      all_close(theta:totable(), expected, STEP_TOL, 'theta')
   end)

   it('folds later gradients in as mu*buffer + (1-dampening)*g', function()
      local theta, th = vec(4, 0)
      local grad, g = vec(4, 1)
      local buffer, b = vec(4, 2)
      local p = sgd_params({ lr = 0.5, momentum = 0.9, dampening = 0.3, weight_decay = 0.01 })
      C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 4, p, nil)
      local eb, et = {}, {}
      for i = 1, 4 do
         eb[i] = 0.9 * b[i] + 0.7 * (g[i] + 0.01 * th[i])
         et[i] = th[i] - 0.5 * eb[i]
      end
      all_close(buffer:totable(), eb, STEP_TOL, 'buffer')
      all_close(theta:totable(), et, STEP_TOL, 'theta')
   end)

   it('steps along g + mu*buffer with nesterov', function()
      local theta, th = vec(3, 0)
      local grad, g = vec(3, 1)
      local buffer, b = vec(3, 2)
      local p = sgd_params({ lr = 0.2, momentum = 0.8, nesterov = 1 })
      C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 3, p, nil)
      local et = {}
      for i = 1, 3 do
         local nb = 0.8 * b[i] + g[i]
         et[i] = th[i] - 0.2 * (g[i] + 0.8 * nb)
      end
      all_close(theta:totable(), et, STEP_TOL, 'theta')
   end)

   it('applies the stored buffer without a gradient when update_buffer is 0', function()
      local theta, th = vec(3, 0)
      local buffer, b = vec(3, 2)
      local p = sgd_params({ lr = 0.2, momentum = 0.9, weight_decay = 0.5, update_buffer = 0 })
      assert.are.equal(0, C.mrt_sgd_update(ctx, theta.c.data, nil, buffer.c.data, 3, p, nil))
      assert.are.same(b, buffer:totable())
      local et = {}
      for i = 1, 3 do
         et[i] = th[i] - 0.2 * b[i]
      end
      all_close(theta:totable(), et, STEP_TOL, 'theta')
   end)

   it('updates only the buffer when apply is 0', function()
      local theta, th = vec(3, 0)
      local grad, g = vec(3, 1)
      local buffer = T.zeros({ 3 }, 'cpu')
      local p = sgd_params({ momentum = 0, apply = 0 })
      C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 3, p, nil)
      assert.are.same(th, theta:totable())
      assert.are.same(g, buffer:totable())
   end)

   it('adds noise_std times the generator normals to g', function()
      local n = 6
      local theta, th = vec(n, 0)
      local grad, g = vec(n, 1)
      local rng, twin = ffi.new('mrt_rng'), ffi.new('mrt_rng')
      C.mrt_rng_init(rng, 42)
      C.mrt_rng_init(twin, 42)
      local xi = ffi.new('float[?]', n)
      C.mrt_rng_fill_normal(twin, xi, n, 0, 1)
      local p = sgd_params({ lr = 0.1, noise_std = 0.5 })
      C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, nil, n, p, rng)
      local et = {}
      for i = 1, n do
         et[i] = th[i] - 0.1 * (g[i] + 0.5 * xi[i - 1])
      end
      all_close(theta:totable(), et, STEP_TOL, 'theta')
      assert.are.equal(tonumber(twin.counter), tonumber(rng.counter))
      assert.are.equal(2 * n, tonumber(rng.counter))
   end)

   it('draws the same noise across chunk and thread boundaries', function()
      local n = 150001   -- past the 65536-element noise chunk and the OpenMP threshold
      local theta, grad = T.zeros({ n }, 'cpu'), T.zeros({ n }, 'cpu')
      local rng, twin = ffi.new('mrt_rng'), ffi.new('mrt_rng')
      C.mrt_rng_init(rng, 7)
      C.mrt_rng_init(twin, 7)
      local xi = ffi.new('float[?]', n)
      C.mrt_rng_fill_normal(twin, xi, n, 0, 1)
      local p = sgd_params({ lr = 1, noise_std = 1 })
      C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, nil, n, p, rng)
      local data = theta:ptr()
      for _, i in ipairs({ 0, 65535, 65536, 131072, n - 1 }) do
         assert.are.equal(-xi[i], data[i])
      end
   end)

   it('rejects invalid arguments with a message', function()
      local t = T.zeros({ 2 }, 'cpu')
      local cases = {
         { sgd_params(), -1, 'mrt_sgd_update: element count -1 is negative' },
         { sgd_params({ lr = -1 }), 2,
            'mrt_sgd_update: lr is -1 (expected a finite number >= 0)' },
         { sgd_params({ lr = 0 / 0 }), 2,
            'mrt_sgd_update: lr is nan (expected a finite number)' },
         { sgd_params({ momentum = 0.9, nesterov = 1, dampening = 0.1 }), 2,
            'mrt_sgd_update: nesterov needs momentum > 0 and dampening 0, got momentum 0.9 '
            .. 'and dampening 0.1' },
         { sgd_params({ update_buffer = 0, apply = 0 }), 2,
            'mrt_sgd_update: update_buffer and apply are both 0 (nothing to do)' },
         { sgd_params({ momentum = 0.5 }), 2,
            "mrt_sgd_update: missing array 'buffer' (needed when momentum is 0.5 and "
            .. 'update_buffer is 1)' },
         { sgd_params({ noise_std = 1 }), 2,
            "mrt_sgd_update: noise_std is 1 but no generator 'rng' was given" },
         { sgd_params({ first = 2 }), 2, 'mrt_sgd_update: first is 2 (expected 0 or 1)' },
      }
      for _, case in ipairs(cases) do
         local status = C.mrt_sgd_update(ctx, t.c.data, t.c.data, nil, case[2], case[1], nil)
         assert.are.equal(C.MRT_EINVAL, status)
         assert.are.equal(case[3], message())
      end
      assert.are.equal(C.MRT_EINVAL, C.mrt_sgd_update(ctx, nil, t.c.data, nil, 2, sgd_params(),
         nil))
      assert.are.equal("mrt_sgd_update: missing array 'theta' for 2 elements", message())
   end)
end)

describe('mrt_adam_update', function()
   -- Float64 Adam, torch 1.13 order; returns theta, m, v after `steps` updates.
   local function reference(th, gs, steps, lr, wd, decoupled)
      local theta, m, v = {}, {}, {}
      for i = 1, #th do
         theta[i], m[i], v[i] = th[i], 0, 0
      end
      for t = 1, steps do
         for i = 1, #th do
            local g = gs[t][i]
            if decoupled then
               theta[i] = theta[i] * (1 - lr * wd)
            else
               g = g + wd * theta[i]
            end
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            local denom = math.sqrt(v[i]) / math.sqrt(1 - 0.999 ^ t) + 1e-8
            theta[i] = theta[i] - lr / (1 - 0.9 ^ t) * m[i] / denom
         end
      end
      return theta, m, v
   end

   for _, decoupled in ipairs({ false, true }) do
      local name = decoupled and 'AdamW' or 'Adam'
      it('matches ' .. name .. ' with bias correction over three steps', function()
         local theta, th = vec(5, 0)
         local m, v = T.zeros({ 5 }, 'cpu'), T.zeros({ 5 }, 'cpu')
         local gs = {}
         for step = 1, 3 do
            local grad, g = vec(5, step, 0.5)
            gs[step] = g
            local p = adam_params({ lr = 0.01, weight_decay = 0.1, step = step,
               decoupled = decoupled and 1 or 0 })
            assert.are.equal(0, C.mrt_adam_update(ctx, theta.c.data, grad.c.data, m.c.data,
               v.c.data, 5, p))
         end
         local et, em, ev = reference(th, gs, 3, 0.01, 0.1, decoupled)
         all_close(theta:totable(), et, STEP_TOL, 'theta')
         all_close(m:totable(), em, STEP_TOL, 'm')
         all_close(v:totable(), ev, STEP_TOL, 'v')
      end)
   end

   it('re-applies the stored moments when update_moments is 0', function()
      local theta, th = vec(3, 0)
      local m, mv = vec(3, 1, 0.1)
      local v, vv = vec(3, 2, 0.1)
      for i = 1, 3 do
         vv[i] = math.abs(vv[i])
      end
      v = T.from_table(vv, nil, 'cpu')
      local p = adam_params({ lr = 0.01, step = 4, update_moments = 0, weight_decay = 0.5,
         decoupled = 1 })
      assert.are.equal(0, C.mrt_adam_update(ctx, theta.c.data, nil, m.c.data, v.c.data, 3, p))
      assert.are.same(mv, m:totable())
      local et = {}
      for i = 1, 3 do
         local denom = math.sqrt(vv[i]) / math.sqrt(1 - 0.999 ^ 4) + 1e-8
         et[i] = th[i] * (1 - 0.01 * 0.5) - 0.01 / (1 - 0.9 ^ 4) * mv[i] / denom
      end
      all_close(theta:totable(), et, STEP_TOL, 'theta')
   end)

   it('rejects amsgrad, step 0 and beta 1', function()
      local t = T.zeros({ 2 }, 'cpu')
      local function run(p)
         return C.mrt_adam_update(ctx, t.c.data, t.c.data, t.c.data, t.c.data, 2, p)
      end
      assert.are.equal(C.MRT_ENYI, run(adam_params({ amsgrad = 1 })))
      assert.are.equal('NYI: mrt_adam_update: amsgrad', message())
      assert.are.equal(C.MRT_EINVAL, run(adam_params({ step = 0 })))
      assert.are.equal("mrt_adam_update: step is 0 (expected the update's index, from 1)",
         message())
      assert.are.equal(C.MRT_EINVAL, run(adam_params({ beta1 = 1 })))
      assert.are.equal('mrt_adam_update: beta1 is 1 (expected a number in [0, 1))', message())
   end)
end)

describe('element masks and counts in the fused updates', function()
   local MASK = { 1, 0, 1, 1, 0 }

   it('moves only the elements whose mask is mask_on', function()
      for _, on in ipairs({ 0, 1 }) do
         local theta, th = vec(5, 0)
         local grad = vec(5, 1)
         local buffer, bv = vec(5, 2)
         local mask = T.from_table(MASK, nil, 'cpu')
         local p = sgd_params({ momentum = 0.9, mask = mask.c.data, mask_on = on })
         assert.are.equal(0, C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 5,
            p, nil))
         local t, b = theta:totable(), buffer:totable()
         for i = 1, 5 do
            assert.are.equal(MASK[i] ~= on, t[i] == th[i], 'theta ' .. i)
            assert.are.equal(MASK[i] ~= on, b[i] == bv[i], 'buffer ' .. i)
         end
      end
   end)

   it('starts an element\'s SGD buffer at its own first update', function()
      -- Counts 0 and 3: the first element's buffer becomes g, the other's
      -- mu*buffer + (1-dampening)*g; masked-out elements keep their counts.
      for _, masked in ipairs({ false, true }) do
         local theta = T.from_table({ 0, 0, 0 }, nil, 'cpu')
         local grad = T.from_table({ 1, 1, 1 }, nil, 'cpu')
         local buffer = T.from_table({ 5, 5, 5 }, nil, 'cpu')
         local counts = T.from_table({ 0, 3, 0 }, nil, 'cpu')
         local mask = T.from_table({ 1, 1, 0 }, nil, 'cpu')
         local p = sgd_params({ momentum = 0.5, dampening = 0.25, counts = counts.c.data,
            mask = masked and mask.c.data or nil, mask_on = 1 })
         assert.are.equal(0, C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, 3,
            p, nil))
         local b, c = buffer:totable(), counts:totable()
         assert.are.equal(1, b[1])
         assert.are.equal(0.5 * 5 + 0.75, b[2])
         assert.are.same(masked and { 1, 4, 0 } or { 1, 4, 1 }, c)
         assert.are.equal(masked and 5 or 1, b[3])
      end
   end)

   it('leaves Adam alone when the mask selects nothing', function()
      local theta = T.from_table({ 1, 2 }, nil, 'cpu')
      local m, v = T.zeros({ 2 }, 'cpu'), T.zeros({ 2 }, 'cpu')
      local counts = T.from_table({ 0, 0 }, nil, 'cpu')
      local mask = T.from_table({ 1, 1 }, nil, 'cpu')
      local p = adam_params({ step = 0, counts = counts.c.data, mask = mask.c.data,
         mask_on = 0 })
      assert.are.equal(0, C.mrt_adam_update(ctx, theta.c.data, theta.c.data, m.c.data, v.c.data,
         2, p))
      assert.are.same({ 1, 2 }, theta:totable())
      assert.are.same({ 0, 0 }, counts:totable())
   end)

   it('rejects counts that are not update counts', function()
      local t = T.zeros({ 2 }, 'cpu')
      for _, bad in ipairs({ 0 / 0, -1, 2.5, 2 ^ 24 }) do
         local counts = T.from_table({ 1, bad }, nil, 'cpu')
         local p = adam_params({ counts = counts.c.data })
         assert.are.equal(C.MRT_EINVAL, C.mrt_adam_update(ctx, t.c.data, t.c.data, t.c.data,
            t.c.data, 2, p))
         assert.matches("mrt_adam_update: counts[1] is " .. string.format('%g', bad)
            .. " (expected the element's update count", message(), 1, true)
         local q = sgd_params({ momentum = 0.9, counts = counts.c.data })
         assert.are.equal(C.MRT_EINVAL, C.mrt_sgd_update(ctx, t.c.data, t.c.data, t.c.data, 2,
            q, nil))
         assert.matches('mrt_sgd_update: counts[1] is', message(), 1, true)
      end
   end)

   it('rejects a mask_on other than 0 or 1', function()
      local t = T.zeros({ 2 }, 'cpu')
      local p = sgd_params({ mask = t.c.data, mask_on = 2 })
      assert.are.equal(C.MRT_EINVAL, C.mrt_sgd_update(ctx, t.c.data, t.c.data, t.c.data, 2, p,
         nil))
      assert.are.equal('mrt_sgd_update: mask_on is 2 (expected 0 or 1)', message())
   end)

   it('rejects a nesterov drift without its direction', function()
      local t = T.zeros({ 2 }, 'cpu')
      local q = sgd_params({ momentum = 0.9, nesterov = 1, update_buffer = 0 })
      assert.are.equal(C.MRT_EINVAL, C.mrt_sgd_update(ctx, t.c.data, nil, t.c.data, 2, q, nil))
      assert.are.equal("mrt_sgd_update: missing array 'direction' (needed for a drift step, "
         .. 'update_buffer 0, with nesterov)', message())
   end)
end)

describe('mrt_average', function()
   it('averages two and three sources, also into one of them', function()
      local a, av = vec(4, 0)
      local b, bv = vec(4, 1)
      local c, cv = vec(4, 2)
      local out = T.zeros({ 4 }, 'cpu')
      local srcs = ffi.new('const float *[3]', { a.c.data, b.c.data, c.c.data })
      assert.are.equal(0, C.mrt_average(ctx, out.c.data, srcs, 3, 4))
      local e3, e2 = {}, {}
      for i = 1, 4 do
         e3[i] = (av[i] + bv[i] + cv[i]) / 3
         e2[i] = (av[i] + bv[i]) / 2
      end
      all_close(out:totable(), e3, STEP_TOL, 'mean of 3')
      assert.are.equal(0, C.mrt_average(ctx, a.c.data, srcs, 2, 4))
      all_close(a:totable(), e2, STEP_TOL, 'mean of 2 in place')
   end)

   it('rejects a count below 1', function()
      local a = T.zeros({ 2 }, 'cpu')
      local srcs = ffi.new('const float *[1]', { a.c.data })
      assert.are.equal(C.MRT_EINVAL, C.mrt_average(ctx, a.c.data, srcs, 0, 2))
      assert.are.equal('mrt_average: count is 0 (expected at least 1 source)', message())
   end)
end)

describe('mrt_mask_mul', function()
   it('zeroes the elements where the mask is 0', function()
      local y = T.from_table({ 1, -2, 3, -4 }, nil, 'cpu')
      local mask = T.from_table({ 1, 0, 0, 1 }, nil, 'cpu')
      assert.are.equal(0, C.mrt_mask_mul(ctx, y.c.data, mask.c.data, 4))
      assert.are.same({ 1, 0, 0, -4 }, y:totable())
   end)
end)

------------------------------------------------------------------ optimizers

-- Runs `steps` iterations of opt on the toy model, minibatch = iteration.
local function run(opt, model, steps, log)
   local batch = { 0 }
   local feval = toy_feval(model, batch, log)
   local losses = {}
   for t = 0, steps - 1 do
      batch[1] = t
      losses[#losses + 1] = opt:step(feval)
   end
   return losses
end

local function params_list(model)
   return model.flat.params:totable()
end

describe('optim.sgd', function()
   it('follows torch.optim.SGD in float64', function()
      local model = toy_model()
      local theta = params_list(model)
      local opt = optim.sgd(model, { lr = 0.1, momentum = 0.9, dampening = 0.1,
         weight_decay = 0.01 })
      run(opt, model, 12)
      local buf = {}
      for t = 0, 11 do
         for i = 1, #theta do
            local d = toy_grad(theta, t, i - 1) + 0.01 * theta[i]
            buf[i] = t == 0 and d or 0.9 * buf[i] + 0.9 * d
         end
         for i = 1, #theta do
            theta[i] = theta[i] - 0.1 * buf[i]
         end
      end
      all_close(params_list(model), theta, TRAJ_TOL, 'theta')
   end)

   it('trains only `params` and never asks for the other gradients', function()
      local model = toy_model()
      local before = params_list(model)
      local log = {}
      local opt = optim.sgd(model, { lr = 0.1, params = { '^fc3%.' } })
      run(opt, model, 3, log)
      for _, entry in ipairs(log) do
         assert.are.equal('fc3.weight,fc3.bias', entry.needs)
      end
      local after = params_list(model)
      local first_fc3 = model.fc3.params[1].offset   -- fc3.weight, after fc1 and fc2
      for i = 1, first_fc3 do
         assert.are.equal(before[i], after[i])
      end
      for i = first_fc3 + 1, #after do
         assert.are_not.equal(before[i], after[i])
      end
   end)

   it('accepts a part of a partition as params', function()
      local model = toy_model()
      local parts = partition.new(model, { head = { '^fc3%.' } })
      local log = {}
      run(optim.sgd(model, { lr = 0.1, params = parts:part('head') }), model, 1, log)
      assert.are.equal('fc3.weight,fc3.bias', log[1].needs)
   end)

   it('reads lr from a schedule at each iteration', function()
      local model = toy_model()
      local theta = params_list(model)
      local lr = optim.schedule.step_decay({ lr = 0.2, gamma = 0.5, every_epochs = 1,
         iterations_per_epoch = 2 })
      run(optim.sgd(model, { lr = lr }), model, 4)
      for t = 0, 3 do
         local g = {}
         for i = 1, #theta do
            g[i] = toy_grad(theta, t, i - 1)
         end
         for i = 1, #theta do
            theta[i] = theta[i] - lr:at(t) * g[i]
         end
      end
      all_close(params_list(model), theta, TRAJ_TOL, 'theta')
   end)

   it('counts iterations and returns the loss of feval', function()
      local model = toy_model()
      local opt = optim.sgd(model, { lr = 0.1 })
      local loss = opt:step(function() return 1.5 end)
      assert.are.equal(1.5, loss)
      assert.are.equal(1, opt.iteration)
   end)

   it('resumes bit-identically from state()', function()
      local model = toy_model()
      local opt = optim.sgd(model, { lr = 0.1, momentum = 0.9 })
      run(opt, model, 5)
      local saved_params = model.flat.params:clone()
      local state = opt:state()
      local batch = { 0 }
      local feval = toy_feval(model, batch)
      for t = 5, 9 do
         batch[1] = t
         opt:step(feval)
      end
      local expected = params_list(model)
      local model2 = toy_model(99)
      model2.flat.params:copy(saved_params)
      local opt2 = optim.sgd(model2, { lr = 0.1, momentum = 0.9 })
      opt2:load_state(state)
      assert.are.equal(5, opt2.iteration)
      local feval2 = toy_feval(model2, batch)
      for t = 5, 9 do
         batch[1] = t
         opt2:step(feval2)
      end
      assert.are.same(expected, params_list(model2))
   end)

   it('rejects unknown and invalid options', function()
      local model = toy_model()
      assert.has_error(function() optim.sgd(model, { lr = 0.1, momentun = 0.9 }) end,
         "optim.sgd: unknown option 'momentun' (valid options: dampening, lr, momentum, "
         .. 'nesterov, params, weight_decay)')
      assert.has_error(function() optim.sgd(model, { lr = 0.1, momentum = -1 }) end,
         "optim.sgd: option 'momentum' is -1 (expected a number >= 0)")
      assert.has_error(function() optim.sgd(model, { momentum = 0.9 }) end,
         "optim.sgd: option 'lr' is missing (expected a number >= 0 or a schedule)")
      assert.has_error(function() optim.sgd(model, { lr = '0.1' }) end,
         "optim.sgd: option 'lr' is '0.1' (expected a number >= 0 or a schedule)")
      assert.has_error(function() optim.sgd(model, { lr = 0.1, nesterov = true }) end,
         'optim.sgd: nesterov needs momentum > 0 and dampening 0, got momentum 0 and '
         .. 'dampening 0')
      assert.has_error(function() optim.sgd(model, { lr = 0.1, params = '^conv' }) end,
         "optim.sgd: option 'params': partition: part 'params': pattern '^conv' matches no "
         .. 'parameter')
      assert.has_error(function() optim.sgd(model, { lr = 0.1 }):step(nil) end,
         'optim.sgd: step expects a function feval, got nil')
   end)

   it('requires a flattened model', function()
      local model = setmetatable({}, Holder):init('cpu')
      assert.has_error(function() optim.sgd(model, { lr = 0.1 }) end,
         'optim.sgd: the model is not flattened; call model:flatten() before creating the '
         .. 'optimizer')
   end)
end)

describe('optim.adam', function()
   for _, kind in ipairs({ 'adam', 'adamw' }) do
      it(kind .. ' follows torch.optim in float64', function()
         local model = toy_model()
         local theta = params_list(model)
         local opt = optim[kind](model, { lr = 0.01, betas = { 0.8, 0.99 }, eps = 1e-6,
            weight_decay = 0.05 })
         run(opt, model, 10)
         local m, v = {}, {}
         for i = 1, #theta do
            m[i], v[i] = 0, 0
         end
         for t = 0, 9 do
            local g = {}
            for i = 1, #theta do
               g[i] = toy_grad(theta, t, i - 1)
               if kind == 'adam' then
                  g[i] = g[i] + 0.05 * theta[i]
               else
                  theta[i] = theta[i] * (1 - 0.01 * 0.05)
               end
            end
            for i = 1, #theta do
               m[i] = 0.8 * m[i] + 0.2 * g[i]
               v[i] = 0.99 * v[i] + 0.01 * g[i] ^ 2
               local denom = math.sqrt(v[i]) / math.sqrt(1 - 0.99 ^ (t + 1)) + 1e-6
               theta[i] = theta[i] - 0.01 / (1 - 0.8 ^ (t + 1)) * m[i] / denom
            end
         end
         all_close(params_list(model), theta, TRAJ_TOL, 'theta')
         assert.are.equal(10, opt:state().parts.params.step)
      end)
   end

   it('defaults to PyTorch settings', function()
      local model = toy_model()
      local s = optim.adamw(model, {}).levels[1].settings
      assert.are.equal(1e-3, optim.adamw(model, {}).lr)
      assert.are.same({ 0.9, 0.999 }, s.betas)
      assert.are.equal(1e-8, s.eps)
      assert.are.equal(0.01, s.weight_decay)
      assert.are.equal(0, optim.adam(model, {}).levels[1].settings.weight_decay)
   end)

   it('rejects amsgrad and bad betas', function()
      local model = toy_model()
      assert.has_error(function() optim.adam(model, { amsgrad = true }) end,
         'optim.adam: NYI: amsgrad')
      assert.has_error(function() optim.adam(model, { betas = { 0.9, 1 } }) end,
         "optim.adam: option 'betas' is {0.9, 1} (expected a list { beta1, beta2 } of numbers "
         .. 'in [0, 1))')
      assert.has_error(function() optim.adam(model, { momentum = 0.9 }) end,
         "optim.adam: unknown option 'momentum' (valid options: amsgrad, betas, eps, lr, "
         .. 'params, weight_decay)')
   end)
end)

describe('optim.langevin', function()
   it('equals momentum SGD at zero temperature', function()
      -- Momentum 1 - gamma*sqrt(lr); the two runs must agree bit for bit.
      local a, b = toy_model(), toy_model()
      run(optim.langevin(a, { lr = 0.04, gamma = 2, tau = 0, weight_decay = 0.01 }), a, 8)
      run(optim.sgd(b, { lr = 0.04, momentum = 1 - 2 * math.sqrt(0.04), weight_decay = 0.01 }),
         b, 8)
      assert.are.same(params_list(b), params_list(a))
   end)

   it('samples the stationary variance of a quadratic', function()
      -- U = 0.5*a*theta^2 per element; the discrete chain p := mu*p + a*theta
      -- + sigma*xi, theta -= lr*p is linear, so its stationary variance is the
      -- fixed point of the covariance recursion computed below in float64.
      -- 20000 independent elements after 400 steps (the chain mixes in about
      -- 1/(gamma*h) = 20 steps) give a sample variance with relative standard
      -- error sqrt(2/20000) = 1%; the check allows 5%.
      local n, a, lr, gamma, tau = 20000, 2, 0.0025, 10, 0.3
      local holder = setmetatable({}, Holder):init('cpu')
      holder:add_param('weight', T.zeros({ n }, 'cpu'), 'weight')
      holder:flatten()
      local opt = optim.langevin(holder, { lr = lr, gamma = gamma, tau = tau, seed = 3 })
      local theta, grad = holder.flat.params:ptr(), holder.flat.grads:ptr()
      local function feval()
         for i = 0, n - 1 do
            grad[i] = a * theta[i]
         end
         return 0
      end
      for _ = 1, 400 do
         opt:step(feval)
      end
      local sum, sumsq = 0, 0
      for i = 0, n - 1 do
         sum, sumsq = sum + theta[i], sumsq + theta[i] ^ 2
      end
      local sample = sumsq / n - (sum / n) ^ 2
      local h = math.sqrt(lr)
      local mu, sigma2 = 1 - gamma * h, 2 * gamma * tau / h
      -- x = (theta, p): p' = mu p + a theta + s xi; theta' = theta - lr p'.
      local tt, tp, pp = 0, 0, 0
      for _ = 1, 100000 do
         local np = mu * mu * pp + 2 * mu * a * tp + a * a * tt + sigma2
         local ntp = mu * tp + a * tt - lr * np
         local ntt = tt - 2 * lr * (mu * tp + a * tt) + lr * lr * np
         tt, tp, pp = ntt, ntp, np
      end
      assert.is_true(math.abs(sample / tt - 1) < 0.05, string.format(
         'sample variance %.5g, stationary %.5g', sample, tt))
      -- The chain's stationary variance approaches the Gibbs value tau/a as lr -> 0.
      assert.is_true(math.abs(tt / (tau / a) - 1) < 0.1)
   end)

   it('continues the same noise after load_state', function()
      local model = toy_model()
      local opt = optim.langevin(model, { lr = 0.01, gamma = 1, tau = 0.1, seed = 5 })
      run(opt, model, 3)
      local saved, state = model.flat.params:clone(), opt:state()
      run(opt, model, 2)
      local expected = params_list(model)
      model.flat.params:copy(saved)
      local opt2 = optim.langevin(model, { lr = 0.01, gamma = 1, tau = 0.1, seed = 5 })
      opt2:load_state(state)
      local batch = { 0 }
      local feval = toy_feval(model, batch)
      for t = 0, 1 do
         batch[1] = t
         opt2:step(feval)
      end
      assert.are.same(expected, params_list(model))
   end)

   it('rejects gamma*sqrt(lr) above 1', function()
      local model = toy_model()
      local opt = optim.langevin(model, { lr = 1, gamma = 2 })
      assert.has_error(function() run(opt, model, 1) end,
         "langevin: part 'params': gamma*sqrt(lr) = 2 exceeds 1; lower gamma or lr")
      assert.has_error(function() optim.langevin(model, { lr = 1 }) end,
         "optim.langevin: option 'gamma' is missing (expected a number >= 0)")
   end)
end)
