-- gpu_bench.lua: wall time of the CUDA backend's ops and of a ResNet-18
-- training step, next to the CPU backend's time for the same call.
--
--    luajit tests/bench/gpu_bench.lua            full sizes, cuda and cpu
--    luajit tests/bench/gpu_bench.lua --quick    small sizes (checks the script)
--    luajit tests/bench/gpu_bench.lua --no-cpu   cuda only
--    luajit tests/bench/gpu_bench.lua --device cpu --quick   no GPU needed
--
-- Each row is the median over `reps` timed calls after two warm-up calls,
-- with the device synchronised before and after every call, in
-- milliseconds. Run from the checkout root with LUA_PATH covering lua/
-- (tests/gpu/run.sh sets it).

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local F = require 'mrt.F'
local random = require 'mrt.random'
local util = require 'mrt.util'

local ffi, C = lib.ffi, lib.C

local opts = { quick = false, cpu = true, devices = nil }
local i = 1
while i <= #arg do
   local a = arg[i]
   if a == '--quick' then
      opts.quick = true
   elseif a == '--no-cpu' then
      opts.cpu = false
   elseif a == '--device' then
      i = i + 1
      opts.devices = { arg[i] }
   else
      io.stderr:write('gpu_bench.lua: unknown option ' .. a .. ' (expected --quick, --no-cpu '
         .. 'or --device cpu|cuda)\n')
      os.exit(2)
   end
   i = i + 1
end
opts.devices = opts.devices or (opts.cpu and { 'cuda', 'cpu' } or { 'cuda' })
for _, device in ipairs(opts.devices) do
   if device == 'cuda' and C.mrt_cuda_init() ~= 0 then
      io.stderr:write('gpu_bench.lua: ' .. ffi.string(C.mrt_error_message()) .. '\n')
      os.exit(1)
   end
end

-- Sizes: full ones are those of CIFAR-size ResNet training; quick ones only exercise the code.
local B = opts.quick and 4 or 128
local S = opts.quick and 8 or 32

local function sync(device)
   lib.check(C.mrt_ctx_sync(T.context(device)))
end

-- Median milliseconds of fn() over reps calls.
local function time_ms(device, reps, fn)
   fn()
   fn()
   local samples = {}
   for r = 1, reps do
      sync(device)
      local t0 = util.now()
      fn()
      sync(device)
      samples[r] = (util.now() - t0) * 1e3
   end
   table.sort(samples)
   return samples[math.floor((reps + 1) / 2)]
end

local function uniform(shape, seed, device, lo, hi)
   return random.new(seed):fill_uniform(T.zeros(shape, device), lo or -1, hi or 1)
end

local function labels_on(n, classes, device)
   local host = T.labels(n, 'cpu')
   for k = 0, n - 1 do
      host.ptr[k] = k % classes
   end
   if device == 'cpu' then
      return host
   end
   return T.copy_labels(T.labels(n, device), host)
end

------------------------------------------------------------------ cases

-- Each case builds its tensors on a device and returns the function to time.
local cases = {}

local function conv_case(name, c_in, c_out, size, k, stride, pad)
   cases[#cases + 1] = { name = name, make = function(device)
      local p = F.conv2d_params(stride, pad)
      local x = uniform({ B, c_in, size, size }, 1, device)
      local w = uniform({ c_out, c_in, k, k }, 2, device, -0.1, 0.1)
      local b = uniform({ c_out }, 3, device)
      local ys = F.conv2d_out_shape(x.shape, w.shape, p)
      local y, dy = T.zeros(ys, device), uniform(ys, 4, device)
      local dx, dw, db = T.zeros(x.shape, device), T.zeros(w.shape, device), T.zeros({ c_out },
         device)
      return function()
         F.conv2d_forward(p, x, w, b, y)
         F.conv2d_backward(p, dy, x, w, dx, dw, db, 0)
      end
   end }
end

conv_case('conv 3x3 64->64 fwd+bwd', 64, 64, S, 3, 1, 1)
conv_case('conv 3x3 256->256 /4 fwd+bwd', 256, 256, S / 4, 3, 1, 1)
conv_case('conv 7x7 3->64 stride 2 fwd+bwd', 3, 64, S, 7, 2, 3)

cases[#cases + 1] = { name = 'linear 512->1000 fwd+bwd', make = function(device)
   local x, w = uniform({ 2 * B, 512 }, 5, device), uniform({ 1000, 512 }, 6, device)
   local b, y = uniform({ 1000 }, 7, device), T.zeros({ 2 * B, 1000 }, device)
   local dy = uniform({ 2 * B, 1000 }, 8, device)
   local dx, dw, db = T.zeros(x.shape, device), T.zeros(w.shape, device), T.zeros({ 1000 },
      device)
   return function()
      F.linear_forward(x, w, b, y)
      F.linear_backward(dy, x, w, dx, dw, db, 0)
   end
end }

cases[#cases + 1] = { name = 'batchnorm 64ch fwd+bwd', make = function(device)
   local shape = { B, 64, S, S }
   local x, dy = uniform(shape, 9, device), uniform(shape, 10, device)
   local g, b = uniform({ 64 }, 11, device), uniform({ 64 }, 12, device)
   local rm, rv = T.zeros({ 64 }, device), T.zeros({ 64 }, device):fill(1)
   local sm, si = T.zeros({ 64 }, device), T.zeros({ 64 }, device)
   local y, dx = T.zeros(shape, device), T.zeros(shape, device)
   local dg, db = T.zeros({ 64 }, device), T.zeros({ 64 }, device)
   return function()
      F.batchnorm_forward(x, g, b, rm, rv, sm, si, y, true, true)
      F.batchnorm_backward(dy, x, g, sm, si, dx, dg, db, 0)
   end
end }

cases[#cases + 1] = { name = 'maxpool 3x3 stride 2 fwd+bwd', make = function(device)
   local p = F.pool2d_params(3, 2, 1)
   local x = uniform({ B, 64, 2 * S, 2 * S }, 13, device)
   local ys = F.pool2d_out_shape(x.shape, p)
   local y, dy, dx = T.zeros(ys, device), uniform(ys, 14, device), T.zeros(x.shape, device)
   return function()
      F.maxpool2d_forward(p, x, y)
      F.maxpool2d_backward(p, dy, x, y, dx)
   end
end }

cases[#cases + 1] = { name = 'softmax cross-entropy 1000 classes', make = function(device)
   local z, probs = uniform({ 2 * B, 1000 }, 15, device), T.zeros({ 2 * B, 1000 }, device)
   local labels = labels_on(2 * B, 1000, device)
   return function()
      F.xent_forward(z, labels, probs)
      F.xent_backward(probs, labels, 1, probs)
   end
end }

local N_PARAMS = opts.quick and 100000 or 11173962   -- ResNet-18 with 10 classes

cases[#cases + 1] = { name = 'sgd momentum update, ResNet-18 size', make = function(device)
   local theta, grad = uniform({ N_PARAMS }, 16, device), uniform({ N_PARAMS }, 17, device)
   local buffer = T.zeros({ N_PARAMS }, device)
   local p = ffi.new('mrt_sgd_params')
   p.lr, p.momentum, p.weight_decay, p.update_buffer, p.apply = 0.01, 0.9, 5e-4, 1, 1
   local ctx = T.context(device)
   return function()
      lib.check(C.mrt_sgd_update(ctx, theta.c.data, grad.c.data, buffer.c.data, N_PARAMS, p,
         nil))
   end
end }

cases[#cases + 1] = { name = 'adam update, ResNet-18 size', make = function(device)
   local theta, grad = uniform({ N_PARAMS }, 18, device), uniform({ N_PARAMS }, 19, device)
   local m, v = T.zeros({ N_PARAMS }, device), T.zeros({ N_PARAMS }, device)
   local p = ffi.new('mrt_adam_params')
   p.lr, p.beta1, p.beta2, p.eps, p.step, p.update_moments, p.apply = 1e-3, 0.9, 0.999, 1e-8,
      1, 1, 1
   local ctx = T.context(device)
   return function()
      lib.check(C.mrt_adam_update(ctx, theta.c.data, grad.c.data, m.c.data, v.c.data, N_PARAMS,
         p))
   end
end }

cases[#cases + 1] = { name = 'ResNet-18 training step (fwd+bwd+sgd)', make = function(device)
   local models = require 'mrt.models'
   local nn = require 'mrt.nn'
   local model = models.resnet18({ classes = 10, stem = 'small', device = device,
      rng = random.new(20) })
   local flat = model:flatten()
   local criterion = nn.cross_entropy()
   local x = uniform({ B, 3, S, S }, 21, device)
   local labels = labels_on(B, 10, device)
   local buffer = T.zeros({ flat.numel }, device)
   local p = ffi.new('mrt_sgd_params')
   p.lr, p.momentum, p.update_buffer, p.apply = 0.01, 0.9, 1, 1
   local ctx = T.context(device)
   model:train()
   return function()
      local logits = model:forward(x)
      criterion:forward(logits, labels)
      model:backward(x, criterion:backward(1), false)
      lib.check(C.mrt_sgd_update(ctx, flat.params.c.data, flat.grads.c.data, buffer.c.data,
         flat.numel, p, nil))
   end
end }

------------------------------------------------------------------ run

-- The CPU takes seconds per full-size ResNet step, so it gets fewer timed calls.
local function reps_for(device)
   if device == 'cpu' or opts.quick then
      return 3
   end
   return 20
end

-- Times every case on one device; a case that fails reports its error instead.
local function run_device(device)
   local results = {}
   for _, case in ipairs(cases) do
      local ok, fn = pcall(case.make, device)
      if ok then
         ok, fn = pcall(time_ms, device, reps_for(device), fn)
      end
      results[case.name] = ok and fn or ('error: ' .. tostring(fn))
      collectgarbage()
   end
   return results
end

print(string.format('gpu_bench: batch %d, images %dx%d, %s', B, S, S,
   opts.quick and 'quick sizes' or 'full sizes'))
local by_device = {}
for _, device in ipairs(opts.devices) do
   by_device[device] = run_device(device)
end
if by_device.cuda ~= nil then
   local ctx = T.context('cuda')
   C.mrt_ctx_set_allow_tf32(ctx, 1)
   by_device.tf32 = run_device('cuda')
   C.mrt_ctx_set_allow_tf32(ctx, 0)
   C.mrt_ctx_set_deterministic(ctx, 1)
   by_device.det = run_device('cuda')
   C.mrt_ctx_set_deterministic(ctx, 0)
end

local columns = {}
for _, key in ipairs({ 'cuda', 'tf32', 'det', 'cpu' }) do
   if by_device[key] ~= nil then
      columns[#columns + 1] = key
   end
end
local header = { string.format('%-40s', 'ms per call (median)') }
for _, key in ipairs(columns) do
   header[#header + 1] = string.format('%12s', key == 'det' and 'cuda determ' or key ==
      'tf32' and 'cuda tf32' or key)
end
print(table.concat(header))
for _, case in ipairs(cases) do
   local row = { string.format('%-40s', case.name) }
   for _, key in ipairs(columns) do
      local v = by_device[key][case.name]
      row[#row + 1] = type(v) == 'number' and string.format('%12.3f', v) or '       error'
   end
   print(table.concat(row))
end
for _, key in ipairs(columns) do
   for _, case in ipairs(cases) do
      local v = by_device[key][case.name]
      if type(v) ~= 'number' then
         print(string.format('%s on %s: %s', case.name, key, v))
      end
   end
end
