-- Specs for the CUDA backend (build/libmrt_cuda.so).
--
-- Without a GPU: asking for a CUDA context raises the device error, and the
-- kernels' per-element arithmetic, built for the host (make cuda-host-check),
-- matches the CPU backend bit for bit. Everything else is pending.
--
-- With a GPU: every op of the backend table against the CPU backend on the
-- same inputs, 20 steps of each optimizer update, deterministic mode run to
-- run, and the caching allocator in a steady loop.
--
-- Tolerances, relative to max(1, |CPU value|):
--   0 (equal values) for elementwise ops, ReLU, pooling, transforms and the
--     optimizer updates without noise: the kernels make the CPU's float32
--     operations in the same order, one rounding each (built -fmad=false);
--   1e-6 for Langevin updates, sums, softmax cross-entropy and global
--     average pooling: double arithmetic in another order or another libm
--     (CUDA's log and cos are within 2 ulp in double), rounded once to float;
--   1e-4 for linear, convolution and batch normalisation: float32 sums of
--     up to K = 576 products in another order, whose error bound
--     K * 2^-24 * max|term| is about 3.4e-5 for terms of size 1.

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local F = require 'mrt.F'
local random = require 'mrt.random'

local ffi, C = lib.ffi, lib.C

local EXACT, DOUBLE_TOL, SUM_TOL = 0, 1e-6, 1e-4

local has_gpu = C.mrt_cuda_available() == 1
local NO_GPU_SUFFIX = '; run on a machine with an NVIDIA GPU or use --device cpu'

-- MRT_CUDA_SPEC_DEVICE=cpu runs the GPU specs with the CPU backend on both
-- sides: that checks this file's own code on a machine without a GPU (and
-- nothing of the CUDA backend).
local SELF_TEST = os.getenv('MRT_CUDA_SPEC_DEVICE') == 'cpu'
local DEV = SELF_TEST and 'cpu' or 'cuda'

-- Declares a spec that needs a GPU, or a pending one without.
local function gpu_it(name, fn)
   if has_gpu or SELF_TEST then
      it(name, fn)
   else
      pending(name .. ' (needs a GPU)')
   end
end

-- Declares a spec of the CUDA library itself, which the self-test skips.
local function cuda_it(name, fn)
   if has_gpu and not SELF_TEST then
      it(name, fn)
   else
      pending(name .. ' (needs a GPU)')
   end
end

local function file_exists(path)
   local f = io.open(path, 'r')
   if f ~= nil then
      f:close()
   end
   return f ~= nil
end

-- The error message without the "file:line: " that error() may have added.
local function bare(message)
   return (tostring(message):gsub('^[^:]*:%d+: ', ''))
end

------------------------------------------------------------------ comparison

-- Asserts that gpu and cpu tensors agree elementwise: |a - b| <= tol *
-- max(1, |b|), equal values when tol is 0, NaN only where the CPU has NaN.
local function assert_close(gpu, cpu, tol, label)
   local a, b = gpu:totable(), cpu:totable()
   assert.are.equal(#b, #a, label .. ': element count')
   local worst, worst_i = -1, nil
   for i = 1, #b do
      local err
      if b[i] ~= b[i] or a[i] ~= a[i] then
         err = (a[i] ~= a[i] and b[i] ~= b[i]) and 0 or math.huge
      elseif a[i] == b[i] then
         err = 0
      else
         err = math.abs(a[i] - b[i]) / math.max(1, math.abs(b[i]))
      end
      if err > worst then
         worst, worst_i = err, i
      end
   end
   assert.is_true(worst <= tol, string.format('%s: element %d is %.9g on cuda and %.9g on cpu '
      .. '(relative error %.3g, tolerance %g)', label, worst_i or 0, a[worst_i or 1] or 0,
      b[worst_i or 1] or 0, worst, tol))
end

local function assert_number_close(a, b, tol, label)
   local err = math.abs(a - b) / math.max(1, math.abs(b))
   assert.is_true(err <= tol, string.format('%s: %.12g on cuda, %.12g on cpu (tolerance %g)',
      label, a, b, tol))
end

-- The bit patterns of a tensor's elements, for run-to-run comparisons.
local function bits(t)
   local host = t:to('cpu')
   local words = ffi.cast('const uint32_t *', host.c.data)
   local out = {}
   for i = 0, host:numel() - 1 do
      out[i + 1] = tonumber(words[i])
   end
   return out
end

------------------------------------------------------------------ test data

-- A CPU tensor of uniform values in [lo, hi) from a seeded generator.
local function uniform(shape, seed, lo, hi)
   return random.new(seed):fill_uniform(T.zeros(shape, 'cpu'), lo or -1, hi or 1)
end

-- Small integers, so that pooling windows and argmaxes hold ties.
local function integers(shape, seed)
   local t = uniform(shape, seed, 0, 4)
   local p = t.c.data
   for i = 0, t:numel() - 1 do
      p[i] = math.floor(p[i])
   end
   return t
end

-- The same values on both sides: the CPU tensor and a copy on DEV.
local function pair(t)
   return t, DEV == 'cpu' and t:clone() or t:to(DEV)
end

-- Zero tensors of one shape on both devices.
local function zeros2(shape)
   return T.zeros(shape, 'cpu'), T.zeros(shape, DEV)
end

-- Label buffers with the same labels on both devices.
local function labels2(values)
   local cpu = T.labels(#values, 'cpu')
   for i, v in ipairs(values) do
      cpu.ptr[i - 1] = v
   end
   local cuda = T.labels(#values, DEV)
   T.copy_labels(cuda, cpu)
   return cpu, cuda
end

---------------------------------------------------------------- the library

describe('mrt_cuda_backend', function()
   it('raises the device error when no GPU answers', function()
      if has_gpu then
         return pending('a GPU answers on this machine')
      end
      local ok, err = pcall(T.context, 'cuda')
      assert.is_false(ok)
      local message = bare(err)
      if file_exists(lib.root .. '/build/libmrt_cuda.so') then
         assert.are.equal('cudaGetDeviceCount failed: ', message:sub(1, 27))
         assert.are.equal(NO_GPU_SUFFIX, message:sub(-#NO_GPU_SUFFIX))
         assert.is_truthy(message:find('(status %d+)'))
      else
         assert.are.equal('CUDA backend not available (', message:sub(1, 28))
      end
   end)

   it('reports no GPU through mrt_cuda_available without a message', function()
      if has_gpu then
         return pending('a GPU answers on this machine')
      end
      C.mrt_error_clear()
      assert.are.equal(0, C.mrt_cuda_available())
      assert.are.equal('', ffi.string(C.mrt_error_message()))
   end)

   cuda_it('creates a context that syncs', function()
      local ctx = T.context('cuda')
      assert.are.equal(1, C.mrt_ctx_device(ctx))
      assert.are.equal(0, C.mrt_ctx_sync(ctx))
   end)
end)

describe('kernel arithmetic on the host', function()
   it('matches the CPU backend bit for bit', function()
      if not file_exists('/usr/local/cuda/include/cuda_runtime_api.h') then
         return pending('the CUDA headers are not installed')
      end
      local pipe = io.popen('make -s -C "' .. lib.root .. '" cuda-host-check 2>&1')
      local output = pipe:read('*a')
      pipe:close()
      assert.is_nil(output:find('FAIL', 1, true), output)
      assert.is_truthy(output:find('\n0 failed\n$'), output)
      -- A run that compared nothing would pass the two checks above.
      local checks = select(2, output:gsub('\nok ', ''))
      assert.is_true(checks >= 100, 'only ' .. checks .. ' checks ran')
   end)
end)

------------------------------------------------------------------ memory

describe('mrt_memcpy', function()
   gpu_it('copies host to device, device to device and back', function()
      local cpu = uniform({ 1000 }, 1)
      local a = select(2, pair(cpu))
      local b = T.zeros({ 1000 }, DEV):copy(a)
      assert_close(b, cpu, EXACT, 'round trip')
   end)
end)

------------------------------------------------------------------ elementwise

describe('elementwise ops', function()
   gpu_it('fill, axpby, add and mul equal the CPU results', function()
      local xc, xg = pair(uniform({ 3001 }, 2))
      local yc, yg = pair(uniform({ 3001 }, 3))
      local mc, mg = pair(integers({ 3001 }, 4))
      assert_close(T.zeros({ 3001 }, DEV):fill(0.3), T.zeros({ 3001 }, 'cpu'):fill(0.3),
         EXACT, 'fill')
      assert_close(yg:clone():axpby(0.7, xg, -1.3), yc:clone():axpby(0.7, xc, -1.3), EXACT,
         'axpby')
      -- beta = 0 must not read y: start from NaN.
      assert_close(T.zeros({ 3001 }, DEV):fill(0 / 0):axpby(2, xg, 0),
         T.zeros({ 3001 }, 'cpu'):axpby(2, xc, 0), EXACT, 'axpby with beta 0')
      assert_close(T.zeros({ 3001 }, DEV):add(xg, yg), T.zeros({ 3001 }, 'cpu'):add(xc, yc),
         EXACT, 'add')
      local mulc, mulg = zeros2({ 3001 })
      lib.check(C.mrt_mul(T.context('cpu'), xc.c, mc.c, mulc.c))
      lib.check(C.mrt_mul(T.context(DEV), xg.c, mg.c, mulg.c))
      assert_close(mulg, mulc, EXACT, 'mul')
   end)

   gpu_it('sum and sumsq agree with the CPU in double', function()
      local xc, xg = pair(uniform({ 100003 }, 5, -2, 3))
      assert_number_close(xg:sum(), xc:sum(), DOUBLE_TOL, 'sum')
      assert_number_close(xg:sumsq(), xc:sumsq(), DOUBLE_TOL, 'sumsq')
   end)

   gpu_it('nonfinite finds a NaN or an infinity anywhere', function()
      local x = T.zeros({ 70000 }, DEV)
      assert.is_false(x:has_nonfinite())
      x:set(69999, 1 / 0)
      assert.is_true(x:has_nonfinite())
      x:set(69999, 0):set(5, 0 / 0)
      assert.is_true(x:has_nonfinite())
   end)
end)

------------------------------------------------------------------ layers

describe('F.linear', function()
   gpu_it('forward with and without bias matches the CPU', function()
      local xc, xg = pair(uniform({ 33, 70 }, 6))
      local wc, wg = pair(uniform({ 17, 70 }, 7))
      local bc, bg = pair(uniform({ 17 }, 8))
      local yc, yg = zeros2({ 33, 17 })
      assert_close(F.linear_forward(xg, wg, bg, yg), F.linear_forward(xc, wc, bc, yc), SUM_TOL,
         'y with bias')
      assert_close(F.linear_forward(xg, wg, nil, yg), F.linear_forward(xc, wc, nil, yc),
         SUM_TOL, 'y without bias')
   end)

   gpu_it('backward overwrites dx and accumulates dw and db with beta', function()
      local xc, xg = pair(uniform({ 33, 70 }, 9))
      local wc, wg = pair(uniform({ 17, 70 }, 10))
      local dyc, dyg = pair(uniform({ 33, 17 }, 11))
      local dxc, dxg = pair(uniform({ 33, 70 }, 12))
      local dwc, dwg = pair(uniform({ 17, 70 }, 13))
      local dbc, dbg = pair(uniform({ 17 }, 14))
      F.linear_backward(dyc, xc, wc, dxc, dwc, dbc, 1)
      F.linear_backward(dyg, xg, wg, dxg, dwg, dbg, 1)
      assert_close(dxg, dxc, SUM_TOL, 'dx')
      assert_close(dwg, dwc, SUM_TOL, 'dw accumulated')
      assert_close(dbg, dbc, SUM_TOL, 'db accumulated')
      F.linear_backward(dyc, xc, wc, nil, dwc, nil, 0)
      F.linear_backward(dyg, xg, wg, nil, dwg, nil, 0)
      assert_close(dwg, dwc, SUM_TOL, 'dw overwritten')
   end)
end)

-- Convolution geometries: {N, C, H, W, O, KH, KW, stride, pad, dilation}.
local CONVS = {
   { 4, 3, 16, 16, 8, 3, 3, 1, 1, 1 },
   { 4, 8, 15, 15, 16, 3, 3, 2, 1, 1 },
   { 2, 16, 8, 8, 32, 1, 1, 1, 0, 1 },
   { 2, 3, 32, 32, 8, 7, 7, 2, 3, 1 },
   { 2, 64, 9, 9, 8, 3, 3, 1, 2, 2 },
}

local function conv_case(g, seed)
   local p = F.conv2d_params(g[8], g[9], g[10])
   local xs, ws = { g[1], g[2], g[3], g[4] }, { g[5], g[2], g[6], g[7] }
   local ys = F.conv2d_out_shape(xs, ws, p)
   local case = { p = p, name = table.concat(g, ',') }
   case.xc, case.xg = pair(uniform(xs, seed))
   case.wc, case.wg = pair(uniform(ws, seed + 1, -0.2, 0.2))
   case.bc, case.bg = pair(uniform({ g[5] }, seed + 2))
   case.dyc, case.dyg = pair(uniform(ys, seed + 3))
   case.ys = ys
   return case
end

describe('F.conv2d', function()
   gpu_it('forward matches the CPU for every geometry', function()
      for i, g in ipairs(CONVS) do
         local k = conv_case(g, 100 + 10 * i)
         local yc, yg = zeros2(k.ys)
         F.conv2d_forward(k.p, k.xc, k.wc, k.bc, yc)
         F.conv2d_forward(k.p, k.xg, k.wg, k.bg, yg)
         assert_close(yg, yc, SUM_TOL, 'y of conv ' .. k.name)
      end
   end)

   gpu_it('backward matches the CPU, accumulating dw and db', function()
      for i, g in ipairs(CONVS) do
         local k = conv_case(g, 200 + 10 * i)
         local dxc, dxg = zeros2(k.xc.shape)
         local dwc, dwg = pair(uniform(k.wc.shape, 300 + i))
         local dbc, dbg = pair(uniform(k.bc.shape, 400 + i))
         F.conv2d_backward(k.p, k.dyc, k.xc, k.wc, dxc, dwc, dbc, 1)
         F.conv2d_backward(k.p, k.dyg, k.xg, k.wg, dxg, dwg, dbg, 1)
         assert_close(dxg, dxc, SUM_TOL, 'dx of conv ' .. k.name)
         assert_close(dwg, dwc, SUM_TOL, 'dw of conv ' .. k.name)
         assert_close(dbg, dbc, SUM_TOL, 'db of conv ' .. k.name)
      end
   end)
end)

-- A CUDA copy of t that starts `offset` floats into a larger storage, as a
-- parameter inside a flat buffer does: its address is only 4-byte aligned.
local function misaligned(t, offset)
   local storage = T.storage(t:numel() + offset, DEV)
   return T.view_of(storage, offset, t.shape, DEV):copy(t)
end

describe('F.conv2d on views into flat buffers', function()
   gpu_it('accepts tensors at any float offset', function()
      local k = conv_case(CONVS[1], 800)
      local xg, wg = misaligned(k.xc, 3), misaligned(k.wc, 1)
      local dxg, dwg = misaligned(T.zeros(k.xc.shape, 'cpu'), 1),
         misaligned(T.zeros(k.wc.shape, 'cpu'), 5)
      local yc, yg = T.zeros(k.ys, 'cpu'), misaligned(T.zeros(k.ys, 'cpu'), 7)
      local dxc, dwc = T.zeros(k.xc.shape, 'cpu'), T.zeros(k.wc.shape, 'cpu')
      F.conv2d_forward(k.p, k.xc, k.wc, k.bc, yc)
      F.conv2d_forward(k.p, xg, wg, k.bg, yg)
      assert_close(yg, yc, SUM_TOL, 'y')
      F.conv2d_backward(k.p, k.dyc, k.xc, k.wc, dxc, dwc, nil, 0)
      F.conv2d_backward(k.p, k.dyg, xg, wg, dxg, dwg, nil, 0)
      assert_close(dxg, dxc, SUM_TOL, 'dx')
      assert_close(dwg, dwc, SUM_TOL, 'dw')
   end)
end)

describe('F.batchnorm', function()
   for _, shape in ipairs({ { 8, 6, 5, 7 }, { 32, 12 } }) do
      local name = #shape .. '-D'
      gpu_it(name .. ' training updates running statistics as the CPU does', function()
         local c = shape[2]
         local xc, xg = pair(uniform(shape, 20, -2, 3))
         local gc, gg = pair(uniform({ c }, 21, 0.5, 1.5))
         local bc, bg = pair(uniform({ c }, 22))
         local rmc, rmg = pair(uniform({ c }, 23))
         local rvc, rvg = pair(uniform({ c }, 24, 0.5, 2))
         local smc, smg = zeros2({ c })
         local sic, sig = zeros2({ c })
         local yc, yg = zeros2(shape)
         F.batchnorm_forward(xc, gc, bc, rmc, rvc, smc, sic, yc, true, true, 0.1, 1e-5)
         F.batchnorm_forward(xg, gg, bg, rmg, rvg, smg, sig, yg, true, true, 0.1, 1e-5)
         assert_close(yg, yc, SUM_TOL, 'y')
         assert_close(smg, smc, SUM_TOL, 'save_mean')
         assert_close(sig, sic, SUM_TOL, 'save_invstd')
         assert_close(rmg, rmc, SUM_TOL, 'running_mean')
         assert_close(rvg, rvc, SUM_TOL, 'running_var (unbiased)')

         local dyc, dyg = pair(uniform(shape, 25))
         local dxc, dxg = zeros2(shape)
         local dgc, dgg = pair(uniform({ c }, 26))
         local dbc, dbg = pair(uniform({ c }, 27))
         F.batchnorm_backward(dyc, xc, gc, smc, sic, dxc, dgc, dbc, 1)
         F.batchnorm_backward(dyg, xg, gg, smg, sig, dxg, dgg, dbg, 1)
         assert_close(dxg, dxc, SUM_TOL, 'dx')
         assert_close(dgg, dgc, SUM_TOL, 'dgamma accumulated')
         assert_close(dbg, dbc, SUM_TOL, 'dbeta accumulated')
         F.batchnorm_backward(dyc, xc, gc, smc, sic, nil, dgc, nil, 0)
         F.batchnorm_backward(dyg, xg, gg, smg, sig, nil, dgg, nil, 0)
         assert_close(dgg, dgc, SUM_TOL, 'dgamma alone')
      end)

      gpu_it(name .. ' evaluation uses the running statistics', function()
         local c = shape[2]
         local xc, xg = pair(uniform(shape, 30, -2, 3))
         local gc, gg = pair(uniform({ c }, 31, 0.5, 1.5))
         local bc, bg = pair(uniform({ c }, 32))
         local rmc, rmg = pair(uniform({ c }, 33))
         local rvc, rvg = pair(uniform({ c }, 34, 0.5, 2))
         local yc, yg = zeros2(shape)
         F.batchnorm_forward(xc, gc, bc, rmc, rvc, nil, nil, yc, false, false)
         F.batchnorm_forward(xg, gg, bg, rmg, rvg, nil, nil, yg, false, false)
         assert_close(yg, yc, SUM_TOL, 'y')
         assert_close(rmg, rmc, EXACT, 'running_mean untouched')
      end)
   end
end)

describe('F.relu', function()
   gpu_it('forward and in-place backward equal the CPU results', function()
      local xc, xg = pair(uniform({ 5000 }, 40))
      local dyc, dyg = pair(uniform({ 5000 }, 41))
      local yc, yg = zeros2({ 5000 })
      F.relu_forward(xc, yc)
      F.relu_forward(xg, yg)
      assert_close(yg, yc, EXACT, 'y')
      F.relu_backward(dyc, yc, dyc)
      F.relu_backward(dyg, yg, dyg)
      assert_close(dyg, dyc, EXACT, 'dx aliasing dy')
   end)
end)

-- Pooling geometries: {kernel, stride, pad, count_include_pad}.
local POOLS = { { 3, 2, 1, true }, { 2, 2, 0, true }, { 3, 1, 1, false }, { { 3, 2 }, 1, 1,
   false } }

describe('F.pool2d', function()
   gpu_it('max pooling with ties matches the CPU forward and backward', function()
      for i, g in ipairs(POOLS) do
         local p = F.pool2d_params(g[1], g[2], g[3], g[4])
         local xc, xg = pair(integers({ 2, 3, 11, 10 }, 50 + i))
         local ys = F.pool2d_out_shape(xc.shape, p)
         local yc, yg = zeros2(ys)
         local dyc, dyg = pair(uniform(ys, 60 + i))
         local dxc, dxg = zeros2(xc.shape)
         F.maxpool2d_forward(p, xc, yc)
         F.maxpool2d_forward(p, xg, yg)
         assert_close(yg, yc, EXACT, 'maxpool y ' .. i)
         F.maxpool2d_backward(p, dyc, xc, yc, dxc)
         F.maxpool2d_backward(p, dyg, xg, yg, dxg)
         assert_close(dxg, dxc, EXACT, 'maxpool dx ' .. i)
      end
   end)

   gpu_it('average pooling matches the CPU forward and backward', function()
      for i, g in ipairs(POOLS) do
         local p = F.pool2d_params(g[1], g[2], g[3], g[4])
         local xc, xg = pair(uniform({ 2, 3, 11, 10 }, 70 + i))
         local ys = F.pool2d_out_shape(xc.shape, p)
         local yc, yg = zeros2(ys)
         local dyc, dyg = pair(uniform(ys, 80 + i))
         local dxc, dxg = zeros2(xc.shape)
         F.avgpool2d_forward(p, xc, yc)
         F.avgpool2d_forward(p, xg, yg)
         assert_close(yg, yc, EXACT, 'avgpool y ' .. i)
         F.avgpool2d_backward(p, dyc, dxc)
         F.avgpool2d_backward(p, dyg, dxg)
         assert_close(dxg, dxc, EXACT, 'avgpool dx ' .. i)
      end
   end)

   gpu_it('global average pooling matches the CPU forward and backward', function()
      local xc, xg = pair(uniform({ 8, 40, 7, 7 }, 90))
      local yc, yg = zeros2({ 8, 40 })
      local dyc, dyg = pair(uniform({ 8, 40 }, 91))
      local dxc, dxg = zeros2({ 8, 40, 7, 7 })
      F.global_avgpool_forward(xc, yc)
      F.global_avgpool_forward(xg, yg)
      assert_close(yg, yc, DOUBLE_TOL, 'y')
      F.global_avgpool_backward(dyc, dxc)
      F.global_avgpool_backward(dyg, dxg)
      assert_close(dxg, dxc, EXACT, 'dx')
   end)
end)

describe('F.xent', function()
   gpu_it('forward returns the CPU loss, correct count and softmax', function()
      for _, classes in ipairs({ 10, 1000 }) do
         local rows = 37
         local zc, zg = pair(integers({ rows, classes }, 100 + classes))
         local values = {}
         local pick = random.new(7)
         for i = 1, rows do
            values[i] = pick:integer(0, classes - 1)
         end
         local lc, lg = labels2(values)
         local pc, pg = zeros2({ rows, classes })
         local loss_c, correct_c = F.xent_forward(zc, lc, pc)
         local loss_g, correct_g = F.xent_forward(zg, lg, pg)
         assert_number_close(loss_g, loss_c, DOUBLE_TOL, 'loss with ' .. classes .. ' classes')
         assert.are.equal(correct_c, correct_g)
         assert_close(pg, pc, DOUBLE_TOL, 'probs')
         local dc, dg = zeros2({ rows, classes })
         F.xent_backward(pc, lc, 0.5, dc)
         F.xent_backward(pg, lg, 0.5, dg)
         assert_close(dg, dc, DOUBLE_TOL, 'dlogits')
      end
   end)

   gpu_it('rejects a label out of range with the CPU message', function()
      local zc, zg = pair(uniform({ 4, 5 }, 110))
      local lc, lg = labels2({ 0, 4, 7, -1 })
      local pc, pg = zeros2({ 4, 5 })
      local ok_c, err_c = pcall(F.xent_forward, zc, lc, pc)
      local ok_g, err_g = pcall(F.xent_forward, zg, lg, pg)
      assert.is_false(ok_c)
      assert.is_false(ok_g)
      assert.are.equal('mrt_xent_forward: label 7 in row 2 is out of range (expected 0 to 4)',
         bare(err_g))
      assert.are.equal(bare(err_c), bare(err_g))
      local ok_b, err_b = pcall(F.xent_backward, pg, lg, 1, pg)
      assert.is_false(ok_b)
      assert.are.equal('mrt_xent_backward: label 7 in row 2 is out of range (expected 0 to 4)',
         bare(err_b))
   end)
end)

------------------------------------------------------------------ optimizers

local function sgd_params(fields)
   local p = ffi.new('mrt_sgd_params')
   p.lr, p.momentum, p.dampening, p.weight_decay = 0.05, 0, 0, 0
   p.noise_std, p.nesterov, p.first, p.update_buffer, p.apply = 0, 0, 0, 1, 1
   for k, v in pairs(fields) do
      p[k] = v
   end
   return p
end

local function adam_params(fields)
   local p = ffi.new('mrt_adam_params')
   p.lr, p.beta1, p.beta2, p.eps, p.weight_decay = 0.01, 0.9, 0.999, 1e-8, 0
   p.decoupled, p.amsgrad, p.step, p.update_moments, p.apply = 0, 0, 1, 1, 1
   for k, v in pairs(fields) do
      p[k] = v
   end
   return p
end

local N_OPT = 4099

-- Runs 20 SGD steps on both devices from the same state, with a fresh
-- gradient each step and a drift step (update_buffer 0) every fifth.
local function sgd_steps(fields, tol, label)
   local thc, thg = pair(uniform({ N_OPT }, 120))
   local bfc, bfg = zeros2({ N_OPT })
   local rng_c, rng_g = ffi.new('mrt_rng', 9, 3), ffi.new('mrt_rng', 9, 3)
   for step = 1, 20 do
      local gc, gg = pair(uniform({ N_OPT }, 1000 + step))
      local p = sgd_params(fields)
      p.first = step == 1 and 1 or 0
      if step % 5 == 0 and p.momentum ~= 0 and p.nesterov == 0 then
         p.update_buffer = 0
      end
      lib.check(C.mrt_sgd_update(T.context('cpu'), thc.c.data, gc.c.data, bfc.c.data, N_OPT, p,
         rng_c))
      lib.check(C.mrt_sgd_update(T.context(DEV), thg.c.data, gg.c.data, bfg.c.data, N_OPT,
         p, rng_g))
   end
   assert_close(thg, thc, tol, label .. ': theta')
   assert_close(bfg, bfc, tol, label .. ': buffer')
   assert.are.equal(tonumber(rng_c.counter), tonumber(rng_g.counter))
end

describe('mrt_sgd_update', function()
   gpu_it('plain SGD with weight decay matches 20 CPU steps', function()
      sgd_steps({ weight_decay = 1e-3 }, EXACT, 'plain')
   end)
   gpu_it('momentum with dampening and drift steps matches 20 CPU steps', function()
      sgd_steps({ momentum = 0.9, dampening = 0.1 }, EXACT, 'momentum')
   end)
   gpu_it('nesterov with weight decay matches 20 CPU steps', function()
      sgd_steps({ momentum = 0.9, nesterov = 1, weight_decay = 5e-4 }, EXACT, 'nesterov')
   end)
   gpu_it('Langevin noise draws the CPU normals and advances the counter alike', function()
      sgd_steps({ momentum = 0.5, noise_std = 0.01 }, DOUBLE_TOL, 'langevin')
   end)
end)

describe('mrt_adam_update', function()
   for _, decoupled in ipairs({ 0, 1 }) do
      gpu_it((decoupled == 1 and 'AdamW' or 'Adam') .. ' matches 20 CPU steps', function()
         local thc, thg = pair(uniform({ N_OPT }, 130))
         local mc, mg = zeros2({ N_OPT })
         local vc, vg = zeros2({ N_OPT })
         for step = 1, 20 do
            local gc, gg = pair(uniform({ N_OPT }, 2000 + step))
            local p = adam_params({ step = step, decoupled = decoupled, weight_decay = 0.01 })
            lib.check(C.mrt_adam_update(T.context('cpu'), thc.c.data, gc.c.data, mc.c.data,
               vc.c.data, N_OPT, p))
            lib.check(C.mrt_adam_update(T.context(DEV), thg.c.data, gg.c.data, mg.c.data,
               vg.c.data, N_OPT, p))
         end
         assert_close(thg, thc, EXACT, 'theta')
         assert_close(mg, mc, EXACT, 'm')
         assert_close(vg, vc, EXACT, 'v')
      end)
   end
end)

describe('mrt_average, mrt_mask_mul and masked updates', function()
   gpu_it('average into one of the sources matches the CPU', function()
      local ac, ag = pair(uniform({ N_OPT }, 140))
      local bc, bg = pair(uniform({ N_OPT }, 141))
      local cc, cg = pair(uniform({ N_OPT }, 142))
      local src_c = ffi.new('const float *[3]', ac.c.data, bc.c.data, cc.c.data)
      local src_g = ffi.new('const float *[3]', ag.c.data, bg.c.data, cg.c.data)
      lib.check(C.mrt_average(T.context('cpu'), bc.c.data, src_c, 3, N_OPT))
      lib.check(C.mrt_average(T.context(DEV), bg.c.data, src_g, 3, N_OPT))
      assert_close(bg, bc, EXACT, 'average')
   end)

   gpu_it('mask_mul and 20 masked SGD steps match the CPU', function()
      local thc, thg = pair(uniform({ N_OPT }, 150))
      local bfc, bfg = zeros2({ N_OPT })
      local cnc, cng = zeros2({ N_OPT })
      local mc = T.zeros({ N_OPT }, 'cpu')
      random.new(151):fill_bernoulli(mc, 0.5)
      local mg = select(2, pair(mc))
      for step = 1, 20 do
         local gc, gg = pair(uniform({ N_OPT }, 3000 + step))
         -- Half the steps update the elements where the mask is 1, the others the rest.
         local p = sgd_params({ momentum = 0.9, dampening = 0.1, weight_decay = 1e-3,
            mask_on = step % 2 })
         p.mask, p.counts = mc.c.data, cnc.c.data
         lib.check(C.mrt_sgd_update(T.context('cpu'), thc.c.data, gc.c.data, bfc.c.data, N_OPT,
            p, nil))
         p.mask, p.counts = mg.c.data, cng.c.data
         lib.check(C.mrt_sgd_update(T.context(DEV), thg.c.data, gg.c.data, bfg.c.data, N_OPT,
            p, nil))
      end
      assert_close(thg, thc, EXACT, 'masked sgd')
      assert_close(bfg, bfc, EXACT, 'masked sgd buffer')
      assert_close(cng, cnc, EXACT, 'masked sgd counts')
      lib.check(C.mrt_mask_mul(T.context('cpu'), thc.c.data, mc.c.data, N_OPT))
      lib.check(C.mrt_mask_mul(T.context(DEV), thg.c.data, mg.c.data, N_OPT))
      assert_close(thg, thc, EXACT, 'mask_mul')
   end)
end)

------------------------------------------------------------------ transforms

describe('image transforms', function()
   gpu_it('resize, normalize and crop_flip equal the CPU results', function()
      local xc, xg = pair(uniform({ 2, 3, 13, 9 }, 160, 0, 1))
      local rc, rg = zeros2({ 2, 3, 32, 20 })
      lib.check(C.mrt_resize_bilinear(T.context('cpu'), xc.c, rc.c))
      lib.check(C.mrt_resize_bilinear(T.context(DEV), xg.c, rg.c))
      assert_close(rg, rc, EXACT, 'resize')

      local mean = ffi.new('float[3]', 0.485, 0.456, 0.406)
      local std = ffi.new('float[3]', 0.229, 0.224, 0.225)
      lib.check(C.mrt_normalize(T.context('cpu'), rc.c, mean, std, rc.c))
      lib.check(C.mrt_normalize(T.context(DEV), rg.c, mean, std, rg.c))
      assert_close(rg, rc, EXACT, 'normalize in place')

      local top = ffi.new('int32_t[2]', -3, 5)
      local left = ffi.new('int32_t[2]', 2, -1)
      local flip = ffi.new('uint8_t[2]', 1, 0)
      local cc, cg = zeros2({ 2, 3, 24, 24 })
      lib.check(C.mrt_crop_flip(T.context('cpu'), rc.c, top, left, flip, cc.c))
      lib.check(C.mrt_crop_flip(T.context(DEV), rg.c, top, left, flip, cg.c))
      assert_close(cg, cc, EXACT, 'crop_flip')
   end)
end)

------------------------------------------------------------------ switches

-- A private context on DEV with the given switches, freed by the collector.
local function cuda_ctx(deterministic, allow_tf32)
   local ctx = C.mrt_ctx_new(T.DEVICES[DEV])
   if ctx == nil then
      lib.fail(nil, 2)
   end
   ctx = ffi.gc(ctx, C.mrt_ctx_free)
   C.mrt_ctx_set_deterministic(ctx, deterministic)
   C.mrt_ctx_set_allow_tf32(ctx, allow_tf32)
   return ctx
end

-- Convolution forward and backward, linear backward and a sum on ctx; returns
-- the bit patterns of every output.
local function conv_linear_run(ctx, k)
   local y, dx = T.zeros(k.ys, DEV), T.zeros(k.xg.shape, DEV)
   local dw, db = T.zeros(k.wg.shape, DEV), T.zeros(k.bg.shape, DEV)
   lib.check(C.mrt_conv2d_forward(ctx, k.p, k.xg.c, k.wg.c, k.bg.c, y.c))
   lib.check(C.mrt_conv2d_backward(ctx, k.p, k.dyg.c, k.xg.c, k.wg.c, dx.c, dw.c, db.c, 0))
   local flat = y:view({ k.ys[1], k.ys[2] * k.ys[3] * k.ys[4] })
   local lw = T.zeros({ 10, flat.shape[2] }, DEV):fill(0.01)
   local dflat = T.zeros(flat.shape, DEV)
   local dlw = T.zeros(lw.shape, DEV)
   local dl = T.zeros({ k.ys[1], 10 }, DEV):fill(1)
   lib.check(C.mrt_linear_backward(ctx, dl.c, flat.c, lw.c, dflat.c, dlw.c, nil, 0))
   local total = ffi.new('double[1]')
   lib.check(C.mrt_sum(ctx, dx.c, total))
   return { bits(y), bits(dx), bits(dw), bits(db), bits(dflat), bits(dlw), total[0] }
end

describe('deterministic mode', function()
   gpu_it('gives bit-identical results from run to run', function()
      local ctx = cuda_ctx(1, 0)
      local k = conv_case(CONVS[2], 500)
      local first = conv_linear_run(ctx, k)
      for _ = 1, 3 do
         assert.are.same(first, conv_linear_run(ctx, k))
      end
   end)
end)

describe('allow_tf32', function()
   gpu_it('stays within TF32 accuracy of the CPU', function()
      -- TF32 keeps 10 mantissa bits: products carry relative error 2^-11, so a sum of
      -- K = 72 products of size 1 may be off by about K * 2^-11 = 0.035.
      local ctx = cuda_ctx(0, 1)
      local k = conv_case(CONVS[2], 600)
      local yc, yg = zeros2(k.ys)
      F.conv2d_forward(k.p, k.xc, k.wc, k.bc, yc)
      lib.check(C.mrt_conv2d_forward(ctx, k.p, k.xg.c, k.wg.c, k.bg.c, yg.c))
      assert_close(yg, yc, 0.05, 'y with TF32')
   end)
end)

------------------------------------------------------------------ allocator

describe('caching allocator', function()
   cuda_it('makes no cudaMalloc call in a steady training step', function()
      pcall(ffi.cdef, 'void mrt_cuda_memory_stats(int64_t counts[4]);')
      local cuda = ffi.load(lib.root .. '/build/libmrt_cuda.so')
      local counts = ffi.new('int64_t[4]')
      local k = conv_case(CONVS[1], 700)
      local y, dx = T.zeros(k.ys, DEV), T.zeros(k.xg.shape, DEV)
      local dw, db = T.zeros(k.wg.shape, DEV), T.zeros(k.bg.shape, DEV)
      local labels = select(2, labels2({ 1, 2, 3, 4 }))
      local flat = y:view({ k.ys[1], k.ys[2] * k.ys[3] * k.ys[4] })
      local lw = T.zeros({ 5, flat.shape[2] }, DEV):fill(0.01)
      local z, probs = T.zeros({ k.ys[1], 5 }, DEV), T.zeros({ k.ys[1], 5 }, DEV)
      local function step()
         F.conv2d_forward(k.p, k.xg, k.wg, k.bg, y)
         F.linear_forward(flat, lw, nil, z)
         F.xent_forward(z, labels, probs)
         F.xent_backward(probs, labels, 1, probs)
         F.conv2d_backward(k.p, k.dyg, k.xg, k.wg, dx, dw, db, 0)
      end
      step()
      cuda.mrt_cuda_memory_stats(counts)
      local before = tonumber(counts[0])
      for _ = 1, 5 do
         step()
      end
      cuda.mrt_cuda_memory_stats(counts)
      assert.are.equal(before, tonumber(counts[0]))
   end)
end)
