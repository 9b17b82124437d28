-- tests/bench/update_bench.lua: times the fused optimizer updates of the
-- CPU backend on one flat buffer, the optimizer share of a training step.
--
--    luajit tests/bench/update_bench.lua [N] [THREADS]
--
-- N elements (default 11200000, about resnet18's parameter count) and
-- THREADS engine threads (default 0, every core). Prints the median of 10
-- calls, after 3 untimed ones, for an SGD update with momentum, a drift
-- step (the stored buffer applied again) and an Adam update.

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local util = require 'mrt.util'

local C, ffi = lib.C, lib.ffi

local n = tonumber(arg[1] or 11200000)
local threads = tonumber(arg[2] or 0)
if n == nil or n < 1 or threads == nil or threads < 0 then
   io.stderr:write('usage: luajit tests/bench/update_bench.lua [N >= 1] [THREADS >= 0]\n')
   os.exit(2)
end
lib.check(C.mrt_threads_set(threads))

local ctx = T.context('cpu')
local theta, grad = T.zeros({ n }, 'cpu'), T.zeros({ n }, 'cpu')
local first, second = T.zeros({ n }, 'cpu'), T.zeros({ n }, 'cpu')
grad:fill(0.01)

-- Median milliseconds of 10 calls of run(i), after 3 untimed calls.
local function time_ms(run)
   for i = 1, 3 do
      run(i)
   end
   local times = {}
   for i = 1, 10 do
      local t0 = util.now()
      run(3 + i)
      times[i] = 1000 * (util.now() - t0)
   end
   table.sort(times)
   return (times[5] + times[6]) / 2
end

local sgd = ffi.new('mrt_sgd_params')
sgd.lr, sgd.momentum, sgd.weight_decay, sgd.update_buffer, sgd.apply = 0.01, 0.9, 1e-4, 1, 1
local sgd_ms = time_ms(function()
   lib.check(C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, first.c.data, n, sgd, nil))
end)

local drift = ffi.new('mrt_sgd_params')
drift.lr, drift.momentum, drift.update_buffer, drift.apply = 0.01, 0.9, 0, 1
local drift_ms = time_ms(function()
   lib.check(C.mrt_sgd_update(ctx, theta.c.data, nil, first.c.data, n, drift, nil))
end)

first:fill(0)
local adam = ffi.new('mrt_adam_params')
adam.lr, adam.beta1, adam.beta2, adam.eps = 1e-3, 0.9, 0.999, 1e-8
adam.update_moments, adam.apply = 1, 1
local adam_ms = time_ms(function(i)
   adam.step = i
   lib.check(C.mrt_adam_update(ctx, theta.c.data, grad.c.data, first.c.data, second.c.data, n,
      adam))
end)

print(string.format('%d elements, %d threads: sgd %.2f ms, drift %.2f ms, adam %.2f ms', n,
   C.mrt_threads_get(), sgd_ms, drift_ms, adam_ms))
