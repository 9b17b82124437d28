-- tests/bench/mrt_worker.lua: times steady-state training steps of one mrt
-- model in one mode and prints the result as one JSON line on stdout.
-- tests/bench/bench.py starts it as a subprocess, so its peak RSS is mrt's.
--
--    luajit tests/bench/mrt_worker.lua MODEL MODE [options]
--
-- MODEL: mlp (784-1000-10), resnet_small (1x28x28), resnet18 (3x32x32,
-- ImageNet stem). MODE: full (every parameter trained), fc (only the
-- classifier head), multirate (fast part = head, k steps per block, linear
-- drift of the slow part). Every step is SGD with momentum 0.9 on one fixed
-- random minibatch. MODE paired times, in one process on one model, blocks
-- of k full steps and blocks of k multirate steps in turn (the first of
-- each pair alternating), so both see the same machine state.
--
-- Options: --batch N (128), --warmup N (steps not timed, 5), --steps N
-- (timed steps, 20), --k N (multirate block length, 5), --threads N (0 = all
-- cores), --profile (print the per-layer table of mrt.profile on stderr).
--
-- Output fields: step_ms (each timed step, ms); forward_ms, backward_ms and
-- update_ms (per step medians of the forward pass with the loss, of the
-- backward pass, and of the rest of the step, which is the optimizer);
-- cpu_ms (CPU time of the process per timed step, all threads); rss_mb
-- (peak resident memory, VmHWM); threads. Other processes on the machine
-- inflate cpu_ms far less than the wall times. Mode paired prints
-- full_block_ms and multirate_block_ms (each timed block, in pairs) instead
-- of the step fields.

local mrt = require 'mrt'
local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local optim = require 'mrt.optim'
local util = require 'mrt.util'

local MODELS = {
   mlp = { input = { 1, 28, 28 }, head = 'fc2',
      build = function() return mrt.models.mlp() end },
   resnet_small = { input = { 1, 28, 28 }, head = 'fc',
      build = function() return mrt.models.resnet_small() end },
   resnet18 = { input = { 3, 32, 32 }, head = 'fc',
      build = function() return mrt.models.resnet18({ classes = 10 }) end },
}
local MODES = { full = true, fc = true, multirate = true, paired = true }

local function usage(message)
   io.stderr:write('mrt_worker: ', message, '\nusage: luajit tests/bench/mrt_worker.lua ',
      'mlp|resnet_small|resnet18 full|fc|multirate|paired [--batch N] [--warmup N] [--steps N] ',
      '[--k N] [--threads N] [--profile]\n')
   os.exit(2)
end

local function parse(argv)
   local o = { model = argv[1], mode = argv[2], batch = 128, warmup = 5, steps = 20, k = 5,
      threads = 0 }
   if MODELS[o.model or ''] == nil then
      usage(string.format("unknown model '%s'", tostring(o.model)))
   end
   if not MODES[o.mode or ''] then
      usage(string.format("unknown mode '%s'", tostring(o.mode)))
   end
   local i = 3
   while i <= #argv do
      local key = argv[i]:match('^%-%-(.*)$')
      if key == 'profile' then
         o.profile = true
         i = i + 1
      elseif key ~= nil and o[key] ~= nil and tonumber(argv[i + 1]) ~= nil then
         o[key] = tonumber(argv[i + 1])
         i = i + 2
      else
         usage(string.format("invalid argument '%s'", argv[i]))
      end
   end
   return o
end

local ffi = require 'ffi'

-- CPU time of the process (all threads) in seconds; mrt.util declares clock_gettime.
local CLOCK_PROCESS_CPUTIME_ID = 2
local cpu_ts = ffi.new('mrt_timespec')
local function cpu_now()
   ffi.C.clock_gettime(CLOCK_PROCESS_CPUTIME_ID, cpu_ts)
   return tonumber(cpu_ts.tv_sec) + tonumber(cpu_ts.tv_nsec) * 1e-9
end

local function median(list)
   local sorted = {}
   for i, v in ipairs(list) do
      sorted[i] = v
   end
   table.sort(sorted)
   local n = #sorted
   if n == 0 then
      return 0
   end
   if n % 2 == 1 then
      return sorted[(n + 1) / 2]
   end
   return (sorted[n / 2] + sorted[n / 2 + 1]) / 2
end

-- Peak resident set size of this process in MiB, from /proc/self/status.
local function peak_rss_mb()
   local f = io.open('/proc/self/status', 'r')
   if f == nil then
      return -1
   end
   local text = f:read('*a')
   f:close()
   local kb = text:match('VmHWM:%s*(%d+)%s*kB')
   return kb and tonumber(kb) / 1024 or -1
end

local function make_optimizer(model, spec, o)
   local head = '^' .. spec.head .. '%.'
   if o.mode == 'full' then
      return optim.sgd(model, { lr = 0.01, momentum = 0.9 })
   elseif o.mode == 'fc' then
      return optim.sgd(model, { lr = 0.01, momentum = 0.9, params = head })
   end
   return optim.multirate(model, { lr = 0.01 * o.k, k = o.k, momentum = 0.9, fast = head,
      drift = true })
end

-- Times whole blocks of k full steps and k multirate steps in turn on one
-- model and prints them as one JSON line.
local function run_paired(o, spec, model, feval)
   local full = make_optimizer(model, spec, { mode = 'full', k = o.k })
   local multirate = make_optimizer(model, spec, { mode = 'multirate', k = o.k })
   local function block(opt)
      local t0 = util.now()
      for _ = 1, o.k do
         local loss = opt:step(feval)
         if loss ~= loss then
            error('mrt_worker: the loss is NaN')
         end
      end
      return 1000 * (util.now() - t0)
   end
   local pairs_count = math.ceil(o.steps / o.k)
   local full_ms, multirate_ms = {}, {}
   for pair = 1, math.ceil(o.warmup / o.k) + pairs_count do
      local a, b
      if pair % 2 == 0 then
         a = block(full)
         b = block(multirate)
      else
         b = block(multirate)
         a = block(full)
      end
      if pair > math.ceil(o.warmup / o.k) then
         full_ms[#full_ms + 1] = string.format('%.4f', a)
         multirate_ms[#multirate_ms + 1] = string.format('%.4f', b)
      end
   end
   io.write(string.format('{"framework": "mrt", "model": "%s", "mode": "paired", "batch": %d, '
      .. '"threads": %d, "k": %d, "full_block_ms": [%s], "multirate_block_ms": [%s], '
      .. '"rss_mb": %.1f}\n', o.model, o.batch, lib.C.mrt_threads_get(), o.k,
      table.concat(full_ms, ', '), table.concat(multirate_ms, ', '), peak_rss_mb()))
end

local function main(argv)
   local o = parse(argv)
   lib.check(lib.C.mrt_threads_set(o.threads))
   local spec = MODELS[o.model]
   mrt.manual_seed(1)
   local model = spec.build()
   model:flatten()
   model:train()
   local shape = { o.batch, spec.input[1], spec.input[2], spec.input[3] }
   local x = T.zeros(shape, 'cpu')
   mrt.random.new(2):fill_normal(x, 0, 1)
   local labels = T.labels(o.batch, 'cpu')
   for i = 0, o.batch - 1 do
      labels.ptr[i] = i % 10
   end
   local criterion = nn.cross_entropy()
   if o.mode == 'paired' then
      return run_paired(o, spec, model, function()
         local loss = criterion:forward(model:forward(x), labels)
         model:backward(x, criterion:backward(1), false)
         return loss
      end)
   end
   local opt = make_optimizer(model, spec, o)
   local profiler = o.profile and require('mrt.profile').attach(model) or nil
   local fwd_s, bwd_s = 0, 0
   local function feval()
      local t0 = util.now()
      local logits = model:forward(x)
      local loss = criterion:forward(logits, labels)
      local t1 = util.now()
      model:backward(x, criterion:backward(1), false)
      local t2 = util.now()
      fwd_s, bwd_s = fwd_s + (t1 - t0), bwd_s + (t2 - t1)
      return loss
   end
   local step_ms, fwd_ms, bwd_ms, upd_ms = {}, {}, {}, {}
   local cpu_start
   for step = 1, o.warmup + o.steps do
      if step == o.warmup + 1 then
         cpu_start = cpu_now()
      end
      if profiler then
         profiler:pause(step <= o.warmup)
      end
      fwd_s, bwd_s = 0, 0
      local t0 = util.now()
      local loss = opt:step(feval)
      local dt = util.now() - t0
      if loss ~= loss then
         error('mrt_worker: the loss is NaN at step ' .. step)
      end
      if step > o.warmup then
         step_ms[#step_ms + 1] = 1000 * dt
         fwd_ms[#fwd_ms + 1] = 1000 * fwd_s
         bwd_ms[#bwd_ms + 1] = 1000 * bwd_s
         upd_ms[#upd_ms + 1] = 1000 * (dt - fwd_s - bwd_s)
         if profiler then
            profiler:add_step(0, dt, fwd_s + bwd_s)
         end
      end
   end
   local cpu_ms = 1000 * (cpu_now() - cpu_start) / o.steps
   if profiler then
      io.stderr:write(profiler:report(o.model .. ' ' .. o.mode), '\n')
   end
   local parts = {}
   for i, v in ipairs(step_ms) do
      parts[i] = string.format('%.4f', v)
   end
   io.write(string.format('{"framework": "mrt", "model": "%s", "mode": "%s", "batch": %d, '
      .. '"threads": %d, "step_ms": [%s], "forward_ms": %.4f, "backward_ms": %.4f, '
      .. '"update_ms": %.4f, "cpu_ms": %.4f, "rss_mb": %.1f}\n', o.model, o.mode, o.batch,
      lib.C.mrt_threads_get(), table.concat(parts, ', '), median(fwd_ms), median(bwd_ms),
      median(upd_ms), cpu_ms, peak_rss_mb()))
end

main(arg)
