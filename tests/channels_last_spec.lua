-- Specs for channels-last activations ([N,H,W,C]) and the fused batch-norm
-- ops: the layout conversions, the channels-last forms of conv2d, pooling
-- and global pooling (engine/layout.c, dnnl_conv.c, conv2d.c, pool.c), the
-- fused batchnorm_act ops (batchnorm.c) and the modules that use them
-- (mrt.nn). Each channels-last op is checked against its NCHW form, whose
-- gradients tests/layers_spec.lua checks by finite differences.
--
-- Tolerances. A convolution output is a sum of K = C*KH*KW products in
-- float32, and the channels-last kernels (oneDNN) add them in another order
-- than the NCHW path (im2col and a matrix product). Each ordering is off the
-- exact sum by at most about K*u*sum|terms| with u = 2^-24, so the two
-- differ by at most 2*K*u times the largest sum of |terms|. With K <= 245
-- here that is 3e-5 of it; CONV_TOL = 1e-4 of the largest |value| of the
-- compared tensor leaves room since |terms| sums exceed the largest value
-- by a small factor on these random inputs (observed differences: below
-- 1e-6 of it). Pooling and layout conversion do the same float operations
-- in both layouts and must agree exactly. A whole network (resnet_small)
-- chains 20 layers; its logits and gradients must agree within
-- MODEL_TOL = 1e-3 of their largest |value| (observed: below 1e-5).

local F = require 'mrt.F'
local T = require 'mrt.tensor'
local ffi = require 'ffi'
local lib = require 'mrt.ffi'
local random = require 'mrt.random'

local device = T.default_device()
local supported = F.channels_last_supported(device)

local CONV_TOL = 1e-4
local MODEL_TOL = 1e-3

---------------------------------------------------------------- helpers

local function normal(gen, shape)
   return gen:fill_normal(T.zeros(shape, 'cpu'), 0, 1):to(device)
end

local function last_shape(s)
   return { s[1], s[3], s[4], s[2] }
end

local function to_last(x)
   return F.to_channels_last(x, T.zeros(last_shape(x.shape), device))
end

-- The largest |a - b| relative to the largest |a|.
local function rel_diff(a, b)
   local av, bv = a:totable(), b:totable()
   assert.are.equal(#av, #bv)
   local diff, scale = 0, 0
   for i = 1, #av do
      diff = math.max(diff, math.abs(av[i] - bv[i]))
      scale = math.max(scale, math.abs(av[i]))
   end
   assert(scale > 0, 'reference is all zeros: the comparison would prove nothing')
   return diff / scale
end

local function assert_rel(a, b, tol, label)
   local d = rel_diff(a, b)
   assert(d <= tol, string.format('%s: relative difference %.3g exceeds %.3g', label, d, tol))
end

-- Element-wise equality, NaN equal to NaN.
local function assert_same(a, b, label)
   local av, bv = a:totable(), b:totable()
   assert.are.equal(#av, #bv)
   for i = 1, #av do
      local same = av[i] == bv[i] or (av[i] ~= av[i] and bv[i] ~= bv[i])
      assert(same, string.format('%s[%d]: %.9g vs %.9g', label, i, av[i], bv[i]))
   end
end

local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert.is_false(ok, 'expected an error')
   return (tostring(err):gsub('^[^:\n]*:%d+: ', ''))
end

local function skip_unless_supported()
   if not supported then
      pending('the ' .. device .. ' backend has no channels-last operands')
      return true
   end
   return false
end

-------------------------------------------------------------- conversions

describe('F.to_channels_last', function()
   it('moves the channels to the last dimension', function()
      if skip_unless_supported() then return end
      local x = T.from_table({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, { 1, 3, 2, 2 }, device)
      local y = to_last(x)
      assert.are.same({ 1, 5, 9, 2, 6, 10, 3, 7, 11, 4, 8, 12 }, y:totable())
   end)

   it('is undone by F.to_channels_first', function()
      if skip_unless_supported() then return end
      local x = normal(random.new(1), { 3, 37, 5, 7 })
      local back = F.to_channels_first(to_last(x), T.zeros(x.shape, device))
      assert.are.same(x:totable(), back:totable())
   end)

   it('rejects an output of the wrong shape', function()
      if skip_unless_supported() then return end
      local x = T.zeros({ 1, 3, 2, 2 }, device)
      assert.are.equal("mrt_to_channels_last: 'y' has shape [1,3,2,2], expected [1,2,2,3] "
         .. '(-1 = any)', error_of(F.to_channels_last, x, T.zeros({ 1, 3, 2, 2 }, device)))
   end)

   it('rejects an output sharing the input storage', function()
      if skip_unless_supported() then return end
      local x = T.zeros({ 1, 2, 2, 2 }, device)
      assert.are.equal("mrt_to_channels_last: 'y' must not share storage with 'x'",
         error_of(F.to_channels_last, x, x))
   end)
end)

------------------------------------------------------------------ conv2d

-- Cases: n, c, h, w, o, kernel, stride, pad, dilation. The 1x1 and 2x2
-- inputs with padding 1 have kernel taps that read only padding, and the
-- channels-last path drops them. Those two cases and the kernel that covers
-- its whole input have one output position, so that path runs them as a
-- matrix product.
local CONV_CASES = {
   { name = '3x3 padded', n = 2, c = 3, h = 5, w = 5, o = 4, k = 3, s = 1, p = 1, d = 1 },
   { name = '3x3 on a 1x1 input', n = 2, c = 16, h = 1, w = 1, o = 8, k = 3, s = 1, p = 1, d = 1 },
   { name = '3x3 stride 2 on 2x2', n = 2, c = 8, h = 2, w = 2, o = 8, k = 3, s = 2, p = 1, d = 1 },
   { name = 'dilated, strided', n = 3, c = 5, h = 7, w = 6, o = 6, k = 3, s = 2, p = 0, d = 2 },
   { name = '1x1 stride 2', n = 2, c = 4, h = 4, w = 4, o = 3, k = 1, s = 2, p = 0, d = 1 },
   { name = '7x7 stride 2', n = 2, c = 3, h = 9, w = 9, o = 4, k = 7, s = 2, p = 3, d = 1 },
   { name = 'kernel above input', n = 1, c = 2, h = 3, w = 3, o = 2, k = 5, s = 1, p = 2, d = 1 },
   { name = 'kernel covering the input', n = 3, c = 4, h = 3, w = 3, o = 5, k = 3, s = 1, p = 0,
      d = 1 },
}

-- NCHW and channels-last forward and backward of one case.
local function conv_pair(case, gen)
   local p = F.conv2d_params(case.s, case.p, case.d)
   local pl = F.conv2d_params(case.s, case.p, case.d, true)
   local x = normal(gen, { case.n, case.c, case.h, case.w })
   local w = normal(gen, { case.o, case.c, case.k, case.k })
   local b = normal(gen, { case.o })
   local y = F.conv2d_forward(p, x, w, b, T.zeros(F.conv2d_out_shape(x.shape, w.shape, p), device))
   local xl = to_last(x)
   local yl = F.conv2d_forward(pl, xl, w, b,
      T.zeros(F.conv2d_out_shape(xl.shape, w.shape, pl), device))
   return { p = p, pl = pl, x = x, w = w, b = b, y = y, xl = xl, yl = yl }
end

describe('F.conv2d_forward with channels last', function()
   for _, case in ipairs(CONV_CASES) do
      it('matches NCHW: ' .. case.name, function()
         if skip_unless_supported() then return end
         local r = conv_pair(case, random.new(2))
         assert_rel(to_last(r.y), r.yl, CONV_TOL, 'y')
      end)
   end

   it('gives the channels-last output shape', function()
      local p = F.conv2d_params(2, 1, 1, true)
      assert.are.same({ 4, 3, 3, 8 }, F.conv2d_out_shape({ 4, 5, 5, 2 }, { 8, 2, 3, 3 }, p))
   end)

   it('rejects a channel count that does not match w', function()
      if skip_unless_supported() then return end
      local p = F.conv2d_params(1, 0, 1, true)
      local x = T.zeros({ 1, 4, 4, 3 }, device)
      assert.are.equal("mrt_conv2d_forward: 'w' [2,2,1,1] expects 2 input channels but 'x' "
         .. '[1,4,4,3] has 3', error_of(F.conv2d_forward, p, x, T.zeros({ 2, 2, 1, 1 }, device),
            nil, T.zeros({ 1, 4, 4, 2 }, device)))
   end)

   it('rejects a channels_last flag other than 0 or 1', function()
      local p = F.conv2d_params(1, 0, 1)
      p.channels_last = 2
      local x, w = T.zeros({ 1, 1, 2, 2 }, device), T.zeros({ 1, 1, 1, 1 }, device)
      assert.are.equal('mrt_conv2d_forward: channels_last is 2 (expected 0 or 1)',
         error_of(F.conv2d_forward, p, x, w, nil, T.zeros({ 1, 1, 2, 2 }, device)))
   end)
end)

describe('F.conv2d_backward with channels last', function()
   for _, case in ipairs(CONV_CASES) do
      it('matches NCHW: ' .. case.name, function()
         if skip_unless_supported() then return end
         local gen = random.new(3)
         local r = conv_pair(case, gen)
         local dy = normal(gen, r.y.shape)
         local dx, dw, db = T.zeros(r.x.shape, device), T.zeros(r.w.shape, device),
            T.zeros({ case.o }, device)
         F.conv2d_backward(r.p, dy, r.x, r.w, dx, dw, db, 0)
         local dxl = T.zeros(r.xl.shape, device)
         local dwl, dbl = T.zeros(r.w.shape, device):fill(7), T.zeros({ case.o }, device):fill(7)
         F.conv2d_backward(r.pl, to_last(dy), r.xl, r.w, dxl, dwl, dbl, 0)
         assert_rel(to_last(dx), dxl, CONV_TOL, 'dx')
         assert_rel(dw, dwl, CONV_TOL, 'dw')
         assert_rel(db, dbl, CONV_TOL, 'db')
      end)
   end

   it('accumulates dw and db with beta', function()
      if skip_unless_supported() then return end
      local gen = random.new(4)
      local r = conv_pair(CONV_CASES[2], gen)
      local dy = to_last(normal(gen, r.y.shape))
      local dw, db = T.zeros(r.w.shape, device), T.zeros({ 8 }, device)
      F.conv2d_backward(r.pl, dy, r.xl, r.w, nil, dw, db, 0)
      local dw2, db2 = T.zeros(r.w.shape, device):fill(2), T.zeros({ 8 }, device):fill(2)
      F.conv2d_backward(r.pl, dy, r.xl, r.w, nil, dw2, db2, 0.5)
      assert_rel(dw:clone():axpby(1, T.zeros(r.w.shape, device):fill(1), 1), dw2, CONV_TOL, 'dw')
      assert_rel(db:clone():axpby(1, T.zeros({ 8 }, device):fill(1), 1), db2, CONV_TOL, 'db')
   end)

   it('scales dw by beta for an empty batch', function()
      if skip_unless_supported() then return end
      local p = F.conv2d_params(1, 1, 1, true)
      local x, dy = T.zeros({ 0, 3, 3, 2 }, device), T.zeros({ 0, 3, 3, 4 }, device)
      local w, dw = T.zeros({ 4, 2, 3, 3 }, device), T.zeros({ 4, 2, 3, 3 }, device):fill(3)
      F.conv2d_backward(p, dy, x, w, nil, dw, nil, 0.5)
      for _, v in ipairs(dw:totable()) do
         assert.are.equal(1.5, v)
      end
   end)
end)

------------------------------------------------------------------ pooling

-- Max pooling input with ties inside windows and a NaN.
local function pool_input(gen)
   local x = normal(gen, { 2, 5, 6, 6 })
   local host = x:to('cpu')
   host:set(2, host:get(1))
   host:set(8, host:get(1))
   host:set(40, 0 / 0)
   return host:to(device)
end

describe('channels-last pooling', function()
   local kinds = {
      { name = 'max 3x3 stride 2 pad 1', max = true, k = 3, s = 2, p = 1 },
      { name = 'max 2x2', max = true, k = 2, s = 2, p = 0 },
      { name = 'average 3x3 stride 2 pad 1', k = 3, s = 2, p = 1, include = true },
      { name = 'average without padding count', k = 3, s = 1, p = 1, include = false },
   }
   for _, kind in ipairs(kinds) do
      it('matches NCHW forward and backward: ' .. kind.name, function()
         if skip_unless_supported() then return end
         local gen = random.new(5)
         local x = pool_input(gen)
         local p = F.pool2d_params(kind.k, kind.s, kind.p, kind.include)
         local pl = F.pool2d_params(kind.k, kind.s, kind.p, kind.include, true)
         local xl = to_last(x)
         local y = T.zeros(F.pool2d_out_shape(x.shape, p), device)
         local yl = T.zeros(F.pool2d_out_shape(xl.shape, pl), device)
         local dy = normal(gen, y.shape)
         local dx, dxl = T.zeros(x.shape, device), T.zeros(xl.shape, device)
         if kind.max then
            F.maxpool2d_forward(p, x, y)
            F.maxpool2d_forward(pl, xl, yl)
            F.maxpool2d_backward(p, dy, x, y, dx)
            F.maxpool2d_backward(pl, to_last(dy), xl, yl, dxl)
         else
            F.avgpool2d_forward(p, x, y)
            F.avgpool2d_forward(pl, xl, yl)
            F.avgpool2d_backward(p, dy, dx)
            F.avgpool2d_backward(pl, to_last(dy), dxl)
         end
         assert_same(to_last(y), yl, 'y')
         assert_same(to_last(dx), dxl, 'dx')
      end)
   end

   it('averages every position of a 3-D [N,S,C] input', function()
      if skip_unless_supported() then return end
      local gen = random.new(6)
      local x = normal(gen, { 3, 70, 4, 5 })
      local y = F.global_avgpool_forward(x, T.zeros({ 3, 70 }, device))
      local xl = to_last(x)
      local yl = F.global_avgpool_forward(xl:view({ 3, 20, 70 }), T.zeros({ 3, 70 }, device))
      assert_same(y, yl, 'y')
      local dy = normal(gen, { 3, 70 })
      local dx = F.global_avgpool_backward(dy, T.zeros(x.shape, device))
      local dxl = T.zeros(xl.shape, device)
      F.global_avgpool_backward(dy, dxl:view({ 3, 20, 70 }))
      assert_same(to_last(dx), dxl, 'dx')
   end)

   it('rejects 2-D input to global pooling', function()
      assert.are.equal("mrt_global_avgpool_forward: expected 4-D 'x' [N,C,H,W] or 3-D [N,S,C], "
         .. 'got 2-D [2,3]', error_of(F.global_avgpool_forward, T.zeros({ 2, 3 }, device),
            T.zeros({ 2, 3 }, device)))
   end)
end)

--------------------------------------------------------------- fused ops

-- Runs batch norm, residual sum and ReLU as separate ops and fused; returns both.
local function bn_both(gen, shape, with_residual, relu)
   local c = shape[2]
   local x = normal(gen, shape)
   local gamma, beta = normal(gen, { c }), normal(gen, { c })
   local residual = with_residual and normal(gen, shape) or nil
   local function stats()
      return T.zeros({ c }, device), T.zeros({ c }, device):fill(1), T.zeros({ c }, device),
         T.zeros({ c }, device)
   end
   local rm, rv, sm, si = stats()
   local z = F.batchnorm_forward(x, gamma, beta, rm, rv, sm, si, T.zeros(shape, device), true,
      true)
   if residual then
      z = T.zeros(shape, device):add(z, residual)
   end
   local y = relu and F.relu_forward(z, T.zeros(shape, device)) or z
   local frm, frv, fsm, fsi = stats()
   local fy = F.batchnorm_act_forward(x, gamma, beta, frm, frv, fsm, fsi, residual,
      T.zeros(shape, device), true, true, nil, nil, relu)
   return { x = x, gamma = gamma, sm = sm, si = si, z = z, y = y, fy = fy, rm = rm, frm = frm,
      rv = rv, frv = frv, residual = residual }
end

-- The fused kernels do the float32 operations of the separate ops in the
-- same order, so the results must agree exactly.
describe('F.batchnorm_act_forward', function()
   for _, case in ipairs({ { 'ReLU', false, true }, { 'residual and ReLU', true, true },
         { 'residual only', true, false } }) do
      it('equals the separate ops: ' .. case[1], function()
         if not F.batchnorm_act_supported(device) then
            pending('no fused batch norm on ' .. device)
            return
         end
         local r = bn_both(random.new(7), { 64, 24 }, case[2], case[3])
         assert_same(r.y, r.fy, 'y')
         assert_same(r.rm, r.frm, 'running_mean')
         assert_same(r.rv, r.frv, 'running_var')
      end)
   end

   it('rejects a relu flag other than a boolean', function()
      local c = T.zeros({ 2 }, device)
      local x = T.zeros({ 4, 2 }, device)
      assert.are.equal('batchnorm_act_forward: relu must be a boolean, got 1',
         error_of(F.batchnorm_act_forward, x, c, c, c, c, c, c, nil, x, true, true, 0.1, 1e-5, 1))
   end)

   it('rejects a residual of another shape than x', function()
      local c = T.zeros({ 2 }, device)
      local x = T.zeros({ 4, 2 }, device)
      assert.are.equal("mrt_batchnorm_act_forward: 'residual' has shape [2,2], expected [4,2] "
         .. '(-1 = any)', error_of(F.batchnorm_act_forward, x, c, c, c, c, c, c,
            T.zeros({ 2, 2 }, device), x, true, true, 0.1, 1e-5, true))
   end)
end)

describe('F.batchnorm_act_backward', function()
   for _, shape in ipairs({ { 64, 24 }, { 4, 6, 3, 5 } }) do
      it('equals the separate ops for ' .. #shape .. '-D input', function()
         if not F.batchnorm_act_supported(device) then
            pending('no fused batch norm on ' .. device)
            return
         end
         local gen = random.new(8)
         local r = bn_both(gen, shape, true, true)
         local dy = normal(gen, shape)
         local c = shape[2]
         local dz = F.relu_backward(dy, r.y, T.zeros(shape, device))
         local dx, dg, db = T.zeros(shape, device), T.zeros({ c }, device), T.zeros({ c }, device)
         F.batchnorm_backward(dz, r.x, r.gamma, r.sm, r.si, dx, dg, db, 0)
         local fdx, fdres = T.zeros(shape, device), T.zeros(shape, device)
         local fdg, fdb = T.zeros({ c }, device), T.zeros({ c }, device)
         F.batchnorm_act_backward(dy, r.x, r.fy, r.gamma, r.sm, r.si, fdx, fdres, fdg, fdb, 0,
            true)
         assert_same(dx, fdx, 'dx')
         assert_same(dz, fdres, 'dresidual')
         assert_same(dg, fdg, 'dgamma')
         assert_same(db, fdb, 'dbeta')
      end)
   end

   it('needs y when relu is true', function()
      local c = T.zeros({ 2 }, device)
      local x = T.zeros({ 4, 2 }, device)
      assert.are.equal("mrt_batchnorm_act_backward: missing tensor 'y' (the forward output, "
         .. 'needed when relu is 1)', error_of(F.batchnorm_act_backward, x, x, nil, c, c, c, x,
            nil, nil, nil, 0, true))
   end)
end)

----------------------------------------------------------------- modules

local nn = require 'mrt.nn'
local models = require 'mrt.models'

-- Logits and flat gradients of resnet_small on one batch, with or without channels last.
local function resnet_run(channels_last)
   local model = models.resnet_small({ rng = random.new(9), device = device })
   model:flatten()
   model:set_channels_last(channels_last)
   model:train()
   local x = normal(random.new(10), { 6, 1, 28, 28 })
   local labels = T.labels(6, 'cpu')
   for i = 0, 5 do
      labels.ptr[i] = i
   end
   if device ~= 'cpu' then
      labels = T.copy_labels(T.labels(6, device), labels)
   end
   local criterion = nn.cross_entropy()
   local logits = model:forward(x)
   criterion:forward(logits, labels)
   model:backward(x, criterion:backward(1), false)
   return logits:clone(), model.flat.grads:clone()
end

describe('channels-last modules', function()
   it('give resnet_small the logits and gradients of NCHW', function()
      if skip_unless_supported() then return end
      local logits, grads = resnet_run(false)
      local logits_last, grads_last = resnet_run(true)
      assert_rel(logits, logits_last, MODEL_TOL, 'logits')
      assert_rel(grads, grads_last, MODEL_TOL, 'gradients')
   end)

   it('return NCHW from a model that ends in a convolution', function()
      if skip_unless_supported() then return end
      local gen = random.new(11)
      local net = nn.sequential({ nn.conv2d(2, 3, 3, { padding = 1, rng = gen }), nn.relu() })
      local x = normal(gen, { 2, 2, 4, 4 })
      local y = net:forward(x)
      assert.are.same({ 2, 3, 4, 4 }, y.shape)
      assert.is_nil(y.channels_last)
      net:set_channels_last(false)
      assert_rel(net:forward(x), y, CONV_TOL, 'y')
   end)

   it('take an NCHW gradient and return an NCHW dx at the model boundary', function()
      if skip_unless_supported() then return end
      local gen = random.new(12)
      local conv = nn.conv2d(2, 3, 3, { padding = 1, rng = gen })
      local x, dy = normal(gen, { 2, 2, 4, 4 }), normal(gen, { 2, 3, 4, 4 })
      conv:forward(x)
      local dx = conv:backward(x, dy, true):clone()
      local dw = conv.params[1].grad:clone()
      conv:set_channels_last(false)
      conv:forward(x)
      assert_rel(conv:backward(x, dy, true), dx, CONV_TOL, 'dx')
      assert_rel(conv.params[1].grad, dw, CONV_TOL, 'dw')
   end)

   it('flatten channels-last maps in PyTorch feature order', function()
      if skip_unless_supported() then return end
      local gen = random.new(13)
      local conv = nn.conv2d(1, 2, 1, { bias = false, rng = gen })
      conv.params[1].value:copy(T.from_table({ 1, -1 }, { 2, 1, 1, 1 }, device))
      local net = nn.sequential({ conv, nn.flatten() })
      local x = T.from_table({ 1, 2, 3, 4 }, { 1, 1, 2, 2 }, device)
      assert.are.same({ 1, 2, 3, 4, -1, -2, -3, -4 }, net:forward(x):totable())
   end)
end)

describe('mrt_channels_last_supported', function()
   it('reports the CPU backend as supporting channels last', function()
      if device ~= 'cpu' then
         pending('checks the CPU backend')
         return
      end
      assert.are.equal(1, lib.C.mrt_channels_last_supported(T.context('cpu')))
      assert.is_true(ffi.istype('mrt_conv2d_params', F.conv2d_params(1, 0, 1, true)))
   end)
end)

-------------------------------------------------------- forward without keep

-- Flat gradients and running means of resnet_small after one step on a
-- fixed batch; `prepare(model)` runs between flatten and the step.
local function step_grads(prepare, need_dx)
   local model = models.resnet_small({ rng = random.new(14), device = device })
   model:flatten()
   model:train()
   local x = normal(random.new(15), { 4, 1, 28, 28 })
   local labels = T.labels(4, 'cpu')
   for i = 0, 3 do
      labels.ptr[i] = i
   end
   if device ~= 'cpu' then
      labels = T.copy_labels(T.labels(4, device), labels)
   end
   local criterion = nn.cross_entropy()
   criterion:forward(prepare(model, x), labels)
   local dx = model:backward(x, criterion:backward(1), need_dx)
   return model.flat.grads:clone(), model.bn1.running_mean:clone(), dx and dx:clone(), model
end

local function only_fc(model)
   model:set_needs_grad(function(name) return name:match('^fc%.') ~= nil end)
end

describe('forward without keep', function()
   it('overwrites convolution outputs below the trained head', function()
      local _, _, _, model = step_grads(function(model, x)
         only_fc(model)
         return model:forward(x)
      end)
      if not F.batchnorm_act_supported(device) then
         pending('no fused batch norm on ' .. device)
         return
      end
      assert.is_true(model.layer1['1'].bn2.act.inplace)
      assert.is_false(model.layer1['1'].keep)
      assert.is_true(model.fc.keep)
   end)

   it('gives the head the gradient of a kept forward', function()
      local kept = step_grads(function(model, x)
         local y = model:forward(x)
         only_fc(model)
         return y
      end)
      local short = step_grads(function(model, x)
         only_fc(model)
         return model:forward(x)
      end)
      assert_rel(kept, short, 0, 'gradients')
   end)

   it('runs the forward again when backward needs more', function()
      local full = step_grads(function(model, x) return model:forward(x) end)
      local grads, mean = step_grads(function(model, x)
         only_fc(model)
         local y = model:forward(x)
         model:set_needs_grad(function() return true end)
         return y
      end)
      local _, ref_mean = step_grads(function(model, x) return model:forward(x) end)
      assert_rel(full, grads, 0, 'gradients')
      assert_same(ref_mean, mean, 'running_mean')
   end)

   it('runs the forward again when the caller needs dx', function()
      local function frozen(model, x)
         model:set_needs_grad(function() return false end)
         return model:forward(x)
      end
      local _, _, dx = step_grads(frozen, true)
      local _, _, ref_dx = step_grads(function(model, x)
         model:set_needs_grad(function() return false end)
         model.input_grad = true
         return model:forward(x)
      end, true)
      assert_rel(ref_dx, dx, 0, 'dx')
   end)
end)
