-- Specs for mrt.F and the layers behind it (engine/linear.c, conv2d.c,
-- batchnorm.c, activation.c, pool.c, xent.c): finite-difference gradient
-- checks, values computed by hand, gradient accumulation, skipped outputs
-- and the exact messages of argument errors. They run on the default device
-- (MRT_DEVICE), so the same checks cover every backend.
--
-- Gradient checks. Each layer output y is reduced to the scalar objective
-- f = sum(y * r) for a fixed random r, evaluated in double from the float32
-- outputs, so backward with dy = r must return df/dinput. The numeric
-- gradient is the central difference (f(v+h) - f(v-h)) / (v+h - v-h), whose
-- denominator uses the perturbed values as stored in float32.
--
-- Step H = 1e-2. Rounding: every float32 output carries a relative error of
-- a few units of u = 2^-24 = 6e-8, so f is off by about 3u * sum|y*r| and a
-- numeric derivative by 3u * sum|y*r| / H. On these shapes sum|y*r| is at
-- most 50 times the largest gradient element, which bounds the rounding
-- part near 1e-3 of that element. Truncation: none for the layers that are
-- linear in each input (linear, convolution, average pooling), nor for max
-- pooling and ReLU, whose inputs here stay more than 2H away from every kink
-- (see 'distinct'); O(H^2) = 1e-4 relative for batch normalisation and
-- softmax.
--
-- Tolerance GRAD_TOL = 1e-2: the largest |numeric - analytic| over one
-- gradient must stay below 1% of its largest |analytic| element. That is
-- 10 times the rounding bound above; the observed errors are at most 2e-5.
-- A wrong gradient (a missing term, a wrong index, stride or dilation, a
-- transposed matrix) moves some element by a sizeable part of the largest
-- one, and the 'grad_error' specs show that 2% in one element fails.

local F = require 'mrt.F'
local T = require 'mrt.tensor'
local random = require 'mrt.random'

local device = T.default_device()

local H = 1e-2
local GRAD_TOL = 1e-2

---------------------------------------------------------------- helpers

local function zeros(shape)
   return T.zeros(shape, device)
end

local function uniform(gen, shape, lo, hi)
   return gen:fill_uniform(zeros(shape), lo or -1, hi or 1)
end

local function filled(shape, value)
   return zeros(shape):fill(value)
end

local function from(values, shape)
   return T.from_table(values, shape, device)
end

-- A tensor whose elements are distinct multiples of 0.1 (spaced far more
-- than 2H apart) in random order, centred on zero: no ties and no element
-- within 2H of another or of zero.
local function distinct(gen, shape)
   local n = T.shape_numel(shape)
   local order = gen:permutation(n)
   local values = {}
   for i = 1, n do
      values[i] = (order[i] - (n + 1) / 2) * 0.1
      if values[i] == 0 then
         values[i] = 0.05
      end
   end
   return from(values, shape)
end

-- sum(y * r) in double.
local function dot(y, r)
   local yv, rv = y:totable(), r:totable()
   local sum = 0
   for i = 1, #yv do
      sum = sum + yv[i] * rv[i]
   end
   return sum
end

-- Central differences of objective() with respect to every element of t.
local function numeric_grad(objective, t)
   local grad = {}
   for i = 1, t:numel() do
      local v = t:get(i)
      t:set(i, v + H)
      local up, f_up = t:get(i), objective()
      t:set(i, v - H)
      local down, f_down = t:get(i), objective()
      t:set(i, v)
      grad[i] = (f_up - f_down) / (up - down)
   end
   return grad
end

-- Largest |numeric - analytic| relative to the largest |analytic|.
local function grad_error(numeric, analytic)
   local max_diff, max_value = 0, 0
   for i = 1, #analytic do
      max_diff = math.max(max_diff, math.abs(numeric[i] - analytic[i]))
      max_value = math.max(max_value, math.abs(analytic[i]))
   end
   assert(max_value > 0, 'analytic gradient is all zeros: the check would prove nothing')
   return max_diff / max_value
end

local function assert_grad(name, objective, t, analytic)
   local numeric = numeric_grad(objective, t)
   local values = analytic:totable()
   assert.are.equal(#values, #numeric)
   local err = grad_error(numeric, values)
   assert(err <= GRAD_TOL, string.format('%s: relative gradient error %.3g exceeds %.3g', name,
      err, GRAD_TOL))
end

-- Asserts a flat list of numbers against expected values within tol.
local function assert_close(expected, actual, tol, label)
   assert.are.equal(#expected, #actual, label)
   for i = 1, #expected do
      local diff = math.abs(expected[i] - actual[i])
      assert(diff <= tol, string.format('%s[%d]: expected %.9g, got %.9g', label or 'value', i,
         expected[i], actual[i]))
   end
end

-- The message of the error fn raises, without a leading "file:line: ".
local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert.is_false(ok, 'expected an error')
   return (tostring(err):gsub('^[^:\n]*:%d+: ', ''))
end

-- A label buffer on the test device holding a Lua list.
local function labels_of(list)
   local host = T.labels(#list, 'cpu')
   for i = 1, #list do
      host.ptr[i - 1] = list[i]
   end
   if device == 'cpu' then
      return host
   end
   return T.copy_labels(T.labels(#list, device), host)
end

local NAN = 0 / 0

local function all_finite(t)
   for _, v in ipairs(t:totable()) do
      if v ~= v or v == math.huge or v == -math.huge then
         return false
      end
   end
   return true
end

------------------------------------------------------------------ checker

describe('grad_error', function()
   it('rejects one element off by 2% of the largest', function()
      local analytic = { 1.0, -0.5, 0.25, 0.0 }
      local numeric = { 1.0, -0.5, 0.25 + 0.02, 0.0 }
      assert.is_true(grad_error(numeric, analytic) > GRAD_TOL)
   end)

   it('accepts float32 rounding noise', function()
      local analytic = { 1.0, -0.5, 0.25, 0.0 }
      local numeric = { 1.0 + 1e-4, -0.5 - 1e-4, 0.25, 1e-4 }
      assert.is_true(grad_error(numeric, analytic) <= GRAD_TOL)
   end)
end)

------------------------------------------------------------------- linear

describe('F.linear_forward', function()
   it('computes x w^T + b', function()
      local x = from({ 1, 2, 3, 4 }, { 2, 2 })
      local w = from({ 1, 0, 0, 1, 1, 1 }, { 3, 2 })
      local b = from({ 0.5, -1, 2 }, { 3 })
      local y = filled({ 2, 3 }, NAN)
      F.linear_forward(x, w, b, y)
      assert.are.same({ 1.5, 1, 5, 3.5, 3, 9 }, y:totable())
   end)

   it('works without a bias', function()
      local x = from({ 1, 2, 3, 4 }, { 2, 2 })
      local w = from({ 2, -1 }, { 1, 2 })
      local y = filled({ 2, 1 }, NAN)
      F.linear_forward(x, w, nil, y)
      assert.are.same({ 0, 2 }, y:totable())
   end)

   it('rejects mismatched input features', function()
      local x, w, y = zeros({ 4, 6 }), zeros({ 3, 5 }), zeros({ 4, 3 })
      assert.are.equal("mrt_linear_forward: 'w' [3,5] expects 5 input features but 'x' [4,6] "
         .. 'has 6', error_of(F.linear_forward, x, w, nil, y))
   end)

   it('rejects a wrong output shape', function()
      local x, w, y = zeros({ 4, 5 }), zeros({ 3, 5 }), zeros({ 4, 2 })
      assert.are.equal("mrt_linear_forward: 'y' has shape [4,2], expected [4,3] (-1 = any)",
         error_of(F.linear_forward, x, w, nil, y))
   end)

   it('rejects a wrong bias shape', function()
      local x, w = zeros({ 4, 5 }), zeros({ 3, 5 })
      local b, y = zeros({ 4 }), zeros({ 4, 3 })
      assert.are.equal("mrt_linear_forward: 'b' has shape [4], expected [3] (-1 = any)",
         error_of(F.linear_forward, x, w, b, y))
   end)

   it('rejects 3-D input', function()
      local x, w, y = zeros({ 2, 4, 5 }), zeros({ 3, 5 }), zeros({ 8, 3 })
      assert.are.equal("mrt_linear_forward: expected 2-D 'x', got 3-D [2,4,5]",
         error_of(F.linear_forward, x, w, nil, y))
   end)

   it('raises at the caller', function()
      local x, w, y = zeros({ 4, 6 }), zeros({ 3, 5 }), zeros({ 4, 3 })
      local ok, err = pcall(function() F.linear_forward(x, w, nil, y) end)
      assert.is_false(ok)
      assert.is_truthy(err:find('layers_spec%.lua:%d+: mrt_linear_forward: '))
   end)
end)

describe('F.linear_backward', function()
   local function setup(seed)
      local gen = random.new(seed)
      local s = {
         x = uniform(gen, { 3, 4 }), w = uniform(gen, { 5, 4 }), b = uniform(gen, { 5 }),
         r = uniform(gen, { 3, 5 }), y = zeros({ 3, 5 }),
      }
      s.objective = function()
         F.linear_forward(s.x, s.w, s.b, s.y)
         return dot(s.y, s.r)
      end
      return s
   end

   it('matches finite differences for dx, dw and db', function()
      local s = setup(1)
      local dx, dw = filled({ 3, 4 }, NAN), filled({ 5, 4 }, NAN)
      local db = filled({ 5 }, NAN)
      F.linear_backward(s.r, s.x, s.w, dx, dw, db, 0)
      assert_grad('dx', s.objective, s.x, dx)
      assert_grad('dw', s.objective, s.w, dw)
      assert_grad('db', s.objective, s.b, db)
   end)

   it('accumulates dw and db with beta', function()
      local s = setup(2)
      local dw, db = zeros({ 5, 4 }), zeros({ 5 })
      F.linear_backward(s.r, s.x, s.w, nil, dw, db, 0)
      local dw1, db1 = dw:totable(), db:totable()
      F.linear_backward(s.r, s.x, s.w, nil, dw, db, 0.5)
      local expect_w, expect_b = {}, {}
      for i = 1, #dw1 do
         expect_w[i] = 1.5 * dw1[i]
      end
      for i = 1, #db1 do
         expect_b[i] = 1.5 * db1[i]
      end
      -- One float32 rounding of values below 10: 1e-5 absolute is ample.
      assert_close(expect_w, dw:totable(), 1e-5, 'dw')
      assert_close(expect_b, db:totable(), 1e-5, 'db')
   end)

   it('overwrites NaN gradients when beta is 0', function()
      local s = setup(3)
      local dx, dw, db = filled({ 3, 4 }, NAN), filled({ 5, 4 }, NAN), filled({ 5 }, NAN)
      F.linear_backward(s.r, s.x, s.w, dx, dw, db, 0)
      assert.is_true(all_finite(dx))
      assert.is_true(all_finite(dw))
      assert.is_true(all_finite(db))
   end)

   it('computes only the outputs given', function()
      local s = setup(4)
      local dx, dw, db = zeros({ 3, 4 }), zeros({ 5, 4 }), zeros({ 5 })
      F.linear_backward(s.r, s.x, s.w, dx, dw, db, 0)
      local dx_only, dw_only = filled({ 3, 4 }, 7), filled({ 5, 4 }, 7)
      local untouched = filled({ 5 }, 7)
      F.linear_backward(s.r, s.x, s.w, dx_only, nil, nil, 0)
      assert.are.same(dx:totable(), dx_only:totable())
      F.linear_backward(s.r, s.x, s.w, nil, dw_only, nil, 0)
      assert.are.same(dw:totable(), dw_only:totable())
      assert.are.same({ 7, 7, 7, 7, 7 }, untouched:totable())
   end)

   it('scales dw by beta for an empty batch', function()
      local x, w, dy = zeros({ 0, 4 }), zeros({ 5, 4 }), zeros({ 0, 5 })
      local dw, db = filled({ 5, 4 }, 2), filled({ 5 }, 2)
      F.linear_backward(dy, x, w, nil, dw, db, 0.5)
      assert.are.same(filled({ 5, 4 }, 1):totable(), dw:totable())
      assert.are.same({ 1, 1, 1, 1, 1 }, db:totable())
   end)

   it('rejects a wrong dy shape', function()
      local x, w, dy = zeros({ 4, 5 }), zeros({ 3, 5 }), zeros({ 4, 5 })
      assert.are.equal("mrt_linear_backward: 'dy' has shape [4,5], expected [4,3] (-1 = any)",
         error_of(F.linear_backward, dy, x, w, nil, nil, nil, 0))
   end)

   it('rejects a wrong dw shape', function()
      local x, w, dy = zeros({ 4, 5 }), zeros({ 3, 5 }), zeros({ 4, 3 })
      local dw = zeros({ 5, 3 })
      assert.are.equal("mrt_linear_backward: 'dw' has shape [5,3], expected [3,5] (-1 = any)",
         error_of(F.linear_backward, dy, x, w, nil, dw, nil, 0))
   end)
end)

------------------------------------------------------------------- conv2d

describe('mrt_conv2d_out_size', function()
   local C = require('mrt.ffi').C

   it('applies the PyTorch formula', function()
      -- floor((in + 2*pad - dilation*(kernel-1) - 1) / stride) + 1
      assert.are.equal(16, tonumber(C.mrt_conv2d_out_size(32, 3, 2, 1, 1)))
      assert.are.equal(28, tonumber(C.mrt_conv2d_out_size(28, 3, 1, 2, 2)))
      assert.are.equal(1, tonumber(C.mrt_conv2d_out_size(3, 3, 5, 0, 1)))
   end)

   it('returns -1 for a too small input', function()
      assert.are.equal(-1, tonumber(C.mrt_conv2d_out_size(4, 3, 1, 0, 2)))
   end)

   it('returns -1 for invalid arguments', function()
      assert.are.equal(-1, tonumber(C.mrt_conv2d_out_size(8, 3, 0, 0, 1)))
      assert.are.equal(-1, tonumber(C.mrt_conv2d_out_size(8, 3, 1, -1, 1)))
      assert.are.equal(-1, tonumber(C.mrt_conv2d_out_size(8, 3, 1, 0, 0)))
      assert.are.equal(-1, tonumber(C.mrt_conv2d_out_size(8, 0, 1, 0, 1)))
   end)
end)

describe('F.conv2d_params', function()
   it('takes numbers or {h, w} pairs', function()
      local p = F.conv2d_params({ 2, 1 }, 3, { 1, 2 })
      assert.are.same({ 2, 1, 3, 3, 1, 2, 1 }, { p.stride_h, p.stride_w, p.pad_h, p.pad_w,
         p.dilation_h, p.dilation_w, p.groups })
   end)

   it('defaults to a plain convolution', function()
      local p = F.conv2d_params()
      assert.are.same({ 1, 1, 0, 0, 1, 1, 1 }, { p.stride_h, p.stride_w, p.pad_h, p.pad_w,
         p.dilation_h, p.dilation_w, p.groups })
   end)

   it('rejects a fractional stride', function()
      assert.are.equal('conv2d_params: stride must be an integer or a list {h, w} of integers, '
         .. 'got 1.5', error_of(F.conv2d_params, 1.5))
   end)
end)

describe('F.conv2d_out_shape', function()
   it('applies stride, padding and dilation', function()
      local p = F.conv2d_params({ 2, 1 }, { 1, 0 }, { 1, 2 })
      -- H: (7 + 2 - 3) // 2 + 1 = 4; W: (8 - 2*(2-1) - 1) // 1 + 1 = 6
      assert.are.same({ 2, 4, 4, 6 }, F.conv2d_out_shape({ 2, 3, 7, 8 }, { 4, 3, 3, 2 }, p))
   end)

   it('rejects an input smaller than the kernel', function()
      assert.are.equal('conv2d_out_shape: input [1,1,2,2] is too small for kernel 3x3 with '
         .. 'stride 1x1, padding 0x0 and dilation 1x1',
         error_of(F.conv2d_out_shape, { 1, 1, 2, 2 }, { 1, 1, 3, 3 }, F.conv2d_params()))
   end)

   it('rejects stride 0', function()
      assert.are.equal('conv2d_out_shape: invalid parameters stride 0x1, padding 0x0, '
         .. 'dilation 1x1 (expected stride and dilation >= 1, padding >= 0)',
         error_of(F.conv2d_out_shape, { 1, 1, 5, 5 }, { 1, 1, 3, 3 }, F.conv2d_params({ 0, 1 })))
   end)
end)

describe('F.conv2d_forward', function()
   it('computes a cross-correlation by hand', function()
      local x = from({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, { 1, 1, 3, 3 })
      local w = from({ 1, 2, 3, 4 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 2, 2 }, NAN)
      F.conv2d_forward(F.conv2d_params(), x, w, from({ 0.5 }, { 1 }), y)
      -- 1*1 + 2*2 + 4*3 + 5*4 = 37, then 47, 67, 77; plus the bias 0.5.
      assert.are.same({ 37.5, 47.5, 67.5, 77.5 }, y:totable())
   end)

   it('pads with zeros and strides', function()
      local x = from({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, { 1, 1, 3, 3 })
      local w = from({ 1, 1, 1, 1 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 2, 2 }, NAN)
      F.conv2d_forward(F.conv2d_params(2, 1), x, w, nil, y)
      -- Windows at rows/columns -1..0 and 1..2: {1}, {2,3}, {4,7}, {5,6,8,9}.
      assert.are.same({ 1, 5, 11, 28 }, y:totable())
   end)

   it('dilates the kernel', function()
      local x = from({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, { 1, 1, 3, 3 })
      local w = from({ 1, 1, 1, 1 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 1, 1 }, NAN)
      F.conv2d_forward(F.conv2d_params(1, 0, 2), x, w, nil, y)
      assert.are.same({ 1 + 3 + 7 + 9 }, y:totable())
   end)

   it('rejects 3-D input', function()
      local x, w = zeros({ 3, 32, 32 }), zeros({ 8, 3, 3, 3 })
      local y = zeros({ 1, 8, 30, 30 })
      assert.are.equal("mrt_conv2d_forward: expected 4-D 'x', got 3-D [3,32,32]",
         error_of(F.conv2d_forward, F.conv2d_params(), x, w, nil, y))
   end)

   it('rejects stride 0', function()
      local x, w = zeros({ 1, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local y = zeros({ 1, 4, 6, 6 })
      assert.are.equal('mrt_conv2d_forward: stride 0x1 is invalid (expected 1 or more)',
         error_of(F.conv2d_forward, F.conv2d_params({ 0, 1 }), x, w, nil, y))
   end)

   it('rejects negative padding', function()
      local x, w = zeros({ 1, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local y = zeros({ 1, 4, 6, 6 })
      assert.are.equal('mrt_conv2d_forward: padding -1x0 is invalid (expected 0 or more)',
         error_of(F.conv2d_forward, F.conv2d_params(1, { -1, 0 }), x, w, nil, y))
   end)

   it('rejects dilation 0', function()
      local x, w = zeros({ 1, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local y = zeros({ 1, 4, 6, 6 })
      assert.are.equal('mrt_conv2d_forward: dilation 0x0 is invalid (expected 1 or more)',
         error_of(F.conv2d_forward, F.conv2d_params(1, 0, 0), x, w, nil, y))
   end)

   it('reports groups other than 1 as NYI', function()
      local x, w = zeros({ 1, 4, 8, 8 }), zeros({ 4, 2, 3, 3 })
      local y = zeros({ 1, 4, 6, 6 })
      local p = F.conv2d_params()
      p.groups = 2
      assert.are.equal('NYI: mrt_conv2d_forward: groups = 2 (only 1 is implemented)',
         error_of(F.conv2d_forward, p, x, w, nil, y))
   end)

   it('rejects mismatched input channels', function()
      local x, w = zeros({ 1, 3, 8, 8 }), zeros({ 4, 2, 3, 3 })
      local y = zeros({ 1, 4, 6, 6 })
      assert.are.equal("mrt_conv2d_forward: 'w' [4,2,3,3] expects 2 input channels but 'x' "
         .. '[1,3,8,8] has 3', error_of(F.conv2d_forward, F.conv2d_params(), x, w, nil, y))
   end)

   it('rejects an input smaller than the dilated kernel', function()
      local x, w = zeros({ 1, 1, 4, 4 }), zeros({ 1, 1, 3, 3 })
      local y = zeros({ 1, 1, 1, 1 })
      assert.are.equal("mrt_conv2d_forward: 'x' [1,1,4,4] is too small for kernel 3x3 with "
         .. 'padding 0x0 and dilation 2x2',
         error_of(F.conv2d_forward, F.conv2d_params(1, 0, 2), x, w, nil, y))
   end)

   it('rejects a wrong output shape', function()
      local x, w = zeros({ 2, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local y = zeros({ 2, 4, 8, 8 })
      assert.are.equal("mrt_conv2d_forward: 'y' has shape [2,4,8,8], expected [2,4,6,6] "
         .. '(-1 = any)', error_of(F.conv2d_forward, F.conv2d_params(), x, w, nil, y))
   end)
end)

describe('F.conv2d_backward', function()
   -- Tiny shapes covering stride 2, padding, dilation, non-square kernels and
   -- the 1x1 path that skips im2col.
   local cases = {
      { name = '3x3 stride 2 padding 1', x = { 2, 2, 5, 5 }, w = { 3, 2, 3, 3 }, stride = 2,
        pad = 1, dilation = 1 },
      { name = '2x3 stride {2,1} padding {0,1} dilation {2,1}', x = { 2, 2, 6, 5 },
        w = { 2, 2, 2, 3 }, stride = { 2, 1 }, pad = { 0, 1 }, dilation = { 2, 1 } },
      { name = '3x3 dilation 2 padding 2', x = { 1, 2, 5, 6 }, w = { 2, 2, 3, 3 }, stride = 1,
        pad = 2, dilation = 2 },
      { name = '1x1 stride 1 no padding', x = { 2, 3, 3, 3 }, w = { 4, 3, 1, 1 }, stride = 1,
        pad = 0, dilation = 1 },
      { name = '1x1 stride {1,2}', x = { 3, 2, 4, 5 }, w = { 2, 2, 1, 1 }, stride = { 1, 2 },
        pad = 0, dilation = 1 },
   }

   local function setup(case, seed)
      local gen = random.new(seed)
      local s = { p = F.conv2d_params(case.stride, case.pad, case.dilation) }
      s.x, s.w, s.b = uniform(gen, case.x), uniform(gen, case.w), uniform(gen, { case.w[1] })
      s.yshape = F.conv2d_out_shape(case.x, case.w, s.p)
      s.y, s.r = zeros(s.yshape), uniform(gen, s.yshape)
      s.objective = function()
         F.conv2d_forward(s.p, s.x, s.w, s.b, s.y)
         return dot(s.y, s.r)
      end
      return s
   end

   for i, case in ipairs(cases) do
      it('matches finite differences: ' .. case.name, function()
         local s = setup(case, 10 + i)
         local dx, dw = filled(case.x, NAN), filled(case.w, NAN)
         local db = filled({ case.w[1] }, NAN)
         F.conv2d_backward(s.p, s.r, s.x, s.w, dx, dw, db, 0)
         assert_grad('dx', s.objective, s.x, dx)
         assert_grad('dw', s.objective, s.w, dw)
         assert_grad('db', s.objective, s.b, db)
      end)
   end

   it('accumulates dw and db with beta', function()
      local case = cases[1]
      local s = setup(case, 20)
      local dw, db = zeros(case.w), zeros({ case.w[1] })
      F.conv2d_backward(s.p, s.r, s.x, s.w, nil, dw, db, 0)
      local dw1, db1 = dw:totable(), db:totable()
      F.conv2d_backward(s.p, s.r, s.x, s.w, nil, dw, db, 1)
      local expect_w, expect_b = {}, {}
      for i = 1, #dw1 do
         expect_w[i] = 2 * dw1[i]
      end
      for i = 1, #db1 do
         expect_b[i] = 2 * db1[i]
      end
      -- Doubling is exact in float32; only the summation order may differ.
      assert_close(expect_w, dw:totable(), 1e-5, 'dw')
      assert_close(expect_b, db:totable(), 1e-5, 'db')
   end)

   it('computes only the outputs given', function()
      local case = cases[2]
      local s = setup(case, 21)
      local dx, dw = zeros(case.x), zeros(case.w)
      local db = zeros({ case.w[1] })
      F.conv2d_backward(s.p, s.r, s.x, s.w, dx, dw, db, 0)
      local dx_only, dw_only = filled(case.x, 7), filled(case.w, 7)
      local db_only = filled({ case.w[1] }, 7)
      F.conv2d_backward(s.p, s.r, s.x, s.w, dx_only, nil, nil, 0)
      assert.are.same(dx:totable(), dx_only:totable())
      F.conv2d_backward(s.p, s.r, s.x, s.w, nil, dw_only, nil, 0)
      assert.are.same(dw:totable(), dw_only:totable())
      F.conv2d_backward(s.p, s.r, s.x, s.w, nil, nil, db_only, 0)
      assert.are.same(db:totable(), db_only:totable())
   end)

   it('rejects a wrong dy shape', function()
      local x, w = zeros({ 2, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local dy = zeros({ 2, 4, 4, 4 })
      assert.are.equal("mrt_conv2d_backward: 'dy' has shape [2,4,4,4], expected [2,4,6,6] "
         .. '(-1 = any)',
         error_of(F.conv2d_backward, F.conv2d_params(), dy, x, w, nil, nil, nil, 0))
   end)

   it('rejects a wrong dx shape', function()
      local x, w = zeros({ 2, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local dy, dx = zeros({ 2, 4, 6, 6 }), zeros({ 2, 3, 8, 7 })
      assert.are.equal("mrt_conv2d_backward: 'dx' has shape [2,3,8,7], expected [2,3,8,8] "
         .. '(-1 = any)', error_of(F.conv2d_backward, F.conv2d_params(), dy, x, w, dx, nil, nil, 0))
   end)

   it('rejects stride 0', function()
      local x, w = zeros({ 2, 3, 8, 8 }), zeros({ 4, 3, 3, 3 })
      local dy = zeros({ 2, 4, 6, 6 })
      assert.are.equal('mrt_conv2d_backward: stride 1x0 is invalid (expected 1 or more)',
         error_of(F.conv2d_backward, F.conv2d_params({ 1, 0 }), dy, x, w, nil, nil, nil, 0))
   end)
end)

---------------------------------------------------------------- batchnorm

describe('F.batchnorm_forward', function()
   -- One channel holding 1, 2, 3, 4: mean 2.5, biased variance 1.25,
   -- unbiased variance 5/3. Running stats start at mean 1, variance 3.
   local EPS = 1e-5

   local function train_one_channel()
      local s = {
         x = from({ 1, 2, 3, 4 }, { 4, 1 }), rm = from({ 1 }, { 1 }), rv = from({ 3 }, { 1 }),
         save_mean = filled({ 1 }, NAN), save_invstd = filled({ 1 }, NAN),
         y = filled({ 4, 1 }, NAN),
      }
      F.batchnorm_forward(s.x, from({ 2 }, { 1 }), from({ 0.5 }, { 1 }), s.rm, s.rv,
         s.save_mean, s.save_invstd, s.y, true, true, 0.1, EPS)
      return s
   end

   it('normalises with the biased variance', function()
      local s = train_one_channel()
      local invstd = 1 / math.sqrt(1.25 + EPS)
      local expect = {}
      for i, v in ipairs({ 1, 2, 3, 4 }) do
         expect[i] = (v - 2.5) * invstd * 2 + 0.5
      end
      -- float32 results of values below 4: 1e-6 is a few units in the last place.
      assert_close(expect, s.y:totable(), 1e-6, 'y')
      assert_close({ 2.5 }, s.save_mean:totable(), 1e-6, 'save_mean')
      assert_close({ invstd }, s.save_invstd:totable(), 1e-6, 'save_invstd')
   end)

   it('updates running stats with the unbiased variance', function()
      local s = train_one_channel()
      -- float32 results of values below 4: 1e-6 is a few units in the last place.
      assert_close({ 0.9 * 1 + 0.1 * 2.5 }, s.rm:totable(), 1e-6, 'running_mean')
      assert_close({ 0.9 * 3 + 0.1 * 5 / 3 }, s.rv:totable(), 1e-6, 'running_var')
   end)

   it('keeps running stats when update_running is false', function()
      local gen = random.new(30)
      local x = uniform(gen, { 5, 3 })
      local rm, rv = from({ 1, 2, 3 }, { 3 }), from({ 4, 5, 6 }, { 3 })
      F.batchnorm_forward(x, filled({ 3 }, 1), filled({ 3 }, 0), rm, rv, zeros({ 3 }),
         zeros({ 3 }), zeros({ 5, 3 }), true, false, 0.1, 1e-5)
      assert.are.same({ 1, 2, 3 }, rm:totable())
      assert.are.same({ 4, 5, 6 }, rv:totable())
   end)

   -- Running mean 1, variance 4 and eps 0 in channel 1: y = (x - 1)/2 * 2 + 0.5.
   -- Running mean 0, variance 1 in channel 2 with gamma 1, beta 0: y = x.
   local function evaluate()
      local s = {
         x = from({ 1, 3, 5, 7, 2, 4, 6, 8 }, { 1, 2, 2, 2 }),
         rm = from({ 1, 0 }, { 2 }), rv = from({ 4, 1 }, { 2 }),
         save_mean = filled({ 2 }, 7), save_invstd = filled({ 2 }, 7),
         y = filled({ 1, 2, 2, 2 }, NAN),
      }
      F.batchnorm_forward(s.x, from({ 2, 1 }, { 2 }), from({ 0.5, 0 }, { 2 }), s.rm, s.rv,
         s.save_mean, s.save_invstd, s.y, false, true, 0.1, 0)
      return s
   end

   it('evaluates with the running stats', function()
      local s = evaluate()
      assert.are.same({ 0.5, 2.5, 4.5, 6.5, 2, 4, 6, 8 }, s.y:totable())
      assert.are.same({ 1, 0 }, s.rm:totable())
      assert.are.same({ 4, 1 }, s.rv:totable())
   end)

   it('leaves save_* untouched in evaluation', function()
      local s = evaluate()
      assert.are.same({ 7, 7 }, s.save_mean:totable())
      assert.are.same({ 7, 7 }, s.save_invstd:totable())
   end)

   it('accepts nil save_* in evaluation', function()
      local y = filled({ 2, 1 }, NAN)
      F.batchnorm_forward(from({ 3, 5 }, { 2, 1 }), filled({ 1 }, 1), filled({ 1 }, 0),
         from({ 1 }, { 1 }), from({ 4 }, { 1 }), nil, nil, y, false, false, 0.1, 0)
      assert.are.same({ 1, 2 }, y:totable())
   end)

   it('rejects 3-D input', function()
      local x = zeros({ 2, 3, 4 })
      local c = zeros({ 3 })
      assert.are.equal("mrt_batchnorm_forward: expected 2-D or 4-D 'x', got 3-D [2,3,4]",
         error_of(F.batchnorm_forward, x, c, c, c, c, c, c, x, true, true, 0.1, 1e-5))
   end)

   it('rejects a gamma of the wrong size', function()
      local x, c, g = zeros({ 2, 3, 2, 2 }), zeros({ 3 }), zeros({ 4 })
      assert.are.equal("mrt_batchnorm_forward: 'gamma' has shape [4], expected [3] (-1 = any)",
         error_of(F.batchnorm_forward, x, g, c, c, c, c, c, x, true, true, 0.1, 1e-5))
   end)

   it('rejects training with one value per channel', function()
      local x, c = zeros({ 1, 3 }), zeros({ 3 })
      assert.are.equal("mrt_batchnorm_forward: training needs more than one value per channel, "
         .. "got 'x' [1,3]",
         error_of(F.batchnorm_forward, x, c, c, c, c, c, c, x, true, true, 0.1, 1e-5))
   end)

   it('rejects a momentum above 1', function()
      local x, c = zeros({ 4, 3 }), zeros({ 3 })
      assert.are.equal('mrt_batchnorm_forward: momentum 1.5 is invalid (expected 0 to 1)',
         error_of(F.batchnorm_forward, x, c, c, c, c, c, c, x, true, true, 1.5, 1e-5))
   end)

   it('rejects a negative eps', function()
      local x, c = zeros({ 4, 3 }), zeros({ 3 })
      assert.are.equal('mrt_batchnorm_forward: eps -1 is invalid (expected a finite value >= 0)',
         error_of(F.batchnorm_forward, x, c, c, c, c, c, c, x, false, false, 0.1, -1))
   end)

   it('rejects a number for training', function()
      local x, c = zeros({ 4, 3 }), zeros({ 3 })
      assert.are.equal('batchnorm_forward: training must be a boolean, got 0',
         error_of(F.batchnorm_forward, x, c, c, c, c, c, c, x, 0, false, 0.1, 1e-5))
   end)
end)

describe('F.batchnorm_backward', function()
   local function setup(shape, seed)
      local gen = random.new(seed)
      local c = shape[2]
      local s = {
         x = uniform(gen, shape, -2, 3), gamma = uniform(gen, { c }, 0.5, 2),
         beta = uniform(gen, { c }), r = uniform(gen, shape), y = zeros(shape),
         rm = zeros({ c }), rv = filled({ c }, 1),
         save_mean = zeros({ c }), save_invstd = zeros({ c }),
      }
      s.objective = function()
         F.batchnorm_forward(s.x, s.gamma, s.beta, s.rm, s.rv, s.save_mean, s.save_invstd, s.y,
            true, false, 0.1, 1e-5)
         return dot(s.y, s.r)
      end
      s.objective()
      return s
   end

   for _, shape in ipairs({ { 6, 3 }, { 3, 2, 3, 2 } }) do
      it('matches finite differences for ' .. #shape .. '-D input', function()
         local s = setup(shape, 40 + #shape)
         local c = shape[2]
         local dx, dgamma, dbeta = filled(shape, NAN), filled({ c }, NAN), filled({ c }, NAN)
         F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, dx, dgamma,
            dbeta, 0)
         assert_grad('dx', s.objective, s.x, dx)
         assert_grad('dgamma', s.objective, s.gamma, dgamma)
         assert_grad('dbeta', s.objective, s.beta, dbeta)
      end)
   end

   it('accumulates dgamma and dbeta with beta', function()
      local s = setup({ 4, 2, 2, 2 }, 50)
      local dgamma, dbeta = zeros({ 2 }), zeros({ 2 })
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, nil, dgamma, dbeta, 0)
      local g1, b1 = dgamma:totable(), dbeta:totable()
      dgamma:fill(1)
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, nil, dgamma, dbeta,
         0.5)
      -- One float32 rounding of values below 10: 1e-5 absolute is ample.
      assert_close({ 0.5 + g1[1], 0.5 + g1[2] }, dgamma:totable(), 1e-5, 'dgamma')
      assert_close({ 1.5 * b1[1], 1.5 * b1[2] }, dbeta:totable(), 1e-5, 'dbeta')
   end)

   it('computes only the outputs given', function()
      local s = setup({ 4, 2, 2, 2 }, 51)
      local dx, dgamma, dbeta = zeros({ 4, 2, 2, 2 }), zeros({ 2 }),
         zeros({ 2 })
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, dx, dgamma, dbeta, 0)
      local dx_only, dgamma_only = filled({ 4, 2, 2, 2 }, 7), filled({ 2 }, 7)
      local dbeta_only = filled({ 2 }, 7)
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, dx_only, nil, nil, 0)
      assert.are.same(dx:totable(), dx_only:totable())
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, nil, dgamma_only,
         nil, 0)
      assert.are.same(dgamma:totable(), dgamma_only:totable())
      F.batchnorm_backward(s.r, s.x, s.gamma, s.save_mean, s.save_invstd, nil, nil,
         dbeta_only, 0)
      assert.are.same(dbeta:totable(), dbeta_only:totable())
   end)

   it('rejects a dy of another shape than x', function()
      local x, dy, c = zeros({ 4, 3 }), zeros({ 4, 2 }), zeros({ 3 })
      assert.are.equal("mrt_batchnorm_backward: 'dy' has shape [4,2], expected [4,3] (-1 = any)",
         error_of(F.batchnorm_backward, dy, x, c, c, c, nil, nil, nil, 0))
   end)

   it('rejects a save_invstd of the wrong size', function()
      local x, c, bad = zeros({ 4, 3 }), zeros({ 3 }), zeros({ 2 })
      assert.are.equal("mrt_batchnorm_backward: 'save_invstd' has shape [2], expected [3] "
         .. '(-1 = any)', error_of(F.batchnorm_backward, x, x, c, c, bad, nil, nil, nil, 0))
   end)
end)

--------------------------------------------------------------------- relu

describe('F.relu_forward', function()
   it('zeroes negative inputs', function()
      local y = filled({ 2, 2 }, NAN)
      F.relu_forward(from({ -1, 0, 2, -0.5 }, { 2, 2 }), y)
      assert.are.same({ 0, 0, 2, 0 }, y:totable())
   end)

   it('rejects an output of another shape', function()
      assert.are.equal("mrt_relu_forward: 'y' has shape [4], expected [2,2] (-1 = any)",
         error_of(F.relu_forward, zeros({ 2, 2 }), zeros({ 4 })))
   end)
end)

describe('F.relu_backward', function()
   it('matches finite differences', function()
      local gen = random.new(60)
      local x, r = distinct(gen, { 2, 3, 4 }), uniform(gen, { 2, 3, 4 })
      local y = zeros({ 2, 3, 4 })
      local function objective()
         F.relu_forward(x, y)
         return dot(y, r)
      end
      objective()
      local dx = filled({ 2, 3, 4 }, NAN)
      F.relu_backward(r, y, dx)
      assert_grad('dx', objective, x, dx)
   end)

   it('works in place on dy', function()
      local y = from({ 1, 0, 2, 0 }, { 4 })
      local dy = from({ 5, 6, 7, 8 }, { 4 })
      F.relu_backward(dy, y, dy)
      assert.are.same({ 5, 0, 7, 0 }, dy:totable())
   end)

   it('rejects a dx of another shape', function()
      local y, dx = zeros({ 2, 3 }), zeros({ 3, 2 })
      assert.are.equal("mrt_relu_backward: 'dx' has shape [3,2], expected [2,3] (-1 = any)",
         error_of(F.relu_backward, y, y, dx))
   end)
end)

------------------------------------------------------------------ pooling

describe('F.pool2d_params', function()
   it('defaults the stride to the kernel', function()
      local p = F.pool2d_params({ 3, 2 })
      assert.are.same({ 3, 2, 3, 2, 0, 0, 1, 0 }, { p.kernel_h, p.kernel_w, p.stride_h,
         p.stride_w, p.pad_h, p.pad_w, p.count_include_pad, p.ceil_mode })
   end)

   it('sets count_include_pad from a boolean', function()
      assert.are.equal(0, F.pool2d_params(3, 2, 1, false).count_include_pad)
      assert.are.equal(1, F.pool2d_params(3, 2, 1, true).count_include_pad)
   end)
end)

describe('F.pool2d_out_shape', function()
   it('applies stride and padding', function()
      -- H: (7 + 2 - 3) // 2 + 1 = 4; W: (6 + 0 - 2) // 1 + 1 = 5
      local p = F.pool2d_params({ 3, 2 }, { 2, 1 }, { 1, 0 })
      assert.are.same({ 2, 3, 4, 5 }, F.pool2d_out_shape({ 2, 3, 7, 6 }, p))
   end)

   it('rejects an input smaller than the kernel', function()
      assert.are.equal('pool2d_out_shape: input [1,1,2,2] is too small for kernel 3x3 with '
         .. 'stride 3x3 and padding 0x0', error_of(F.pool2d_out_shape, { 1, 1, 2, 2 },
         F.pool2d_params(3)))
   end)

   it('rejects stride 0', function()
      assert.are.equal('pool2d_out_shape: invalid parameters kernel 2x2, stride 0x0, '
         .. 'padding 0x0 (expected kernel and stride >= 1, padding >= 0)',
         error_of(F.pool2d_out_shape, { 1, 1, 5, 5 }, F.pool2d_params(2, 0)))
   end)
end)

-- Pooling cases with overlapping windows, padding and non-square kernels.
local pool_cases = {
   { name = '3x3 stride 2 padding 1', x = { 2, 2, 5, 6 }, kernel = 3, stride = 2, pad = 1 },
   { name = '2x3 stride {1,2} padding {1,1}', x = { 1, 3, 4, 7 }, kernel = { 2, 3 },
     stride = { 1, 2 }, pad = { 1, 1 } },
}

describe('F.maxpool2d_forward', function()
   it('gives a tie to the first index of the window', function()
      local x = from({ 1, 1, 1, 1 }, { 1, 1, 2, 2 })
      local p = F.pool2d_params(2)
      local y = filled({ 1, 1, 1, 1 }, NAN)
      F.maxpool2d_forward(p, x, y)
      local dx = filled({ 1, 1, 2, 2 }, NAN)
      F.maxpool2d_backward(p, from({ 5 }, { 1, 1, 1, 1 }), x, y, dx)
      assert.are.same({ 1 }, y:totable())
      assert.are.same({ 5, 0, 0, 0 }, dx:totable())
   end)

   it('breaks overlapping ties to the first index', function()
      -- Row 3 3 1 3 with kernel 2 stride 1: windows {3,3}, {3,1}, {1,3}.
      local x = from({ 3, 3, 1, 3 }, { 1, 1, 1, 4 })
      local p = F.pool2d_params({ 1, 2 }, 1)
      local y = zeros({ 1, 1, 1, 3 })
      F.maxpool2d_forward(p, x, y)
      local dx = filled({ 1, 1, 1, 4 }, NAN)
      F.maxpool2d_backward(p, from({ 1, 10, 100 }, { 1, 1, 1, 3 }), x, y, dx)
      assert.are.same({ 3, 3, 3 }, y:totable())
      assert.are.same({ 1, 10, 0, 100 }, dx:totable())
   end)

   it('never picks padding', function()
      -- All inputs are negative, so a zero from padding would win if it counted.
      local x = from({ -4, -3, -2, -1 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 3, 3 }, NAN)
      F.maxpool2d_forward(F.pool2d_params(2, 1, 1), x, y)
      assert.are.same({ -4, -3, -3, -2, -1, -1, -2, -1, -1 }, y:totable())
   end)

   it('reports ceil_mode as NYI', function()
      local p = F.pool2d_params(2)
      p.ceil_mode = 1
      assert.are.equal('NYI: mrt_maxpool2d_forward: ceil_mode = 1 (only 0 is implemented)',
         error_of(F.maxpool2d_forward, p, zeros({ 1, 1, 4, 4 }),
            zeros({ 1, 1, 2, 2 })))
   end)

   it('rejects stride 0', function()
      assert.are.equal('mrt_maxpool2d_forward: stride 0x0 is invalid (expected 1 or more)',
         error_of(F.maxpool2d_forward, F.pool2d_params(2, 0), zeros({ 1, 1, 4, 4 }),
            zeros({ 1, 1, 2, 2 })))
   end)

   it('rejects padding above half the kernel', function()
      assert.are.equal('mrt_maxpool2d_forward: padding 2x2 is more than half of kernel 3x3',
         error_of(F.maxpool2d_forward, F.pool2d_params(3, 1, 2), zeros({ 1, 1, 4, 4 }),
            zeros({ 1, 1, 6, 6 })))
   end)

   it('rejects an input smaller than the kernel', function()
      assert.are.equal("mrt_maxpool2d_forward: 'x' [1,1,2,2] is too small for kernel 3x3 with "
         .. 'padding 0x0', error_of(F.maxpool2d_forward, F.pool2d_params(3),
            zeros({ 1, 1, 2, 2 }), zeros({ 1, 1, 1, 1 })))
   end)

   it('rejects a wrong output shape', function()
      assert.are.equal("mrt_maxpool2d_forward: 'y' has shape [1,1,3,3], expected [1,1,2,2] "
         .. '(-1 = any)', error_of(F.maxpool2d_forward, F.pool2d_params(2),
            zeros({ 1, 1, 4, 4 }), zeros({ 1, 1, 3, 3 })))
   end)
end)

describe('F.maxpool2d_backward', function()
   for i, case in ipairs(pool_cases) do
      it('matches finite differences: ' .. case.name, function()
         local gen = random.new(70 + i)
         local p = F.pool2d_params(case.kernel, case.stride, case.pad)
         local yshape = F.pool2d_out_shape(case.x, p)
         local x, r, y = distinct(gen, case.x), uniform(gen, yshape), zeros(yshape)
         local function objective()
            F.maxpool2d_forward(p, x, y)
            return dot(y, r)
         end
         objective()
         local dx = filled(case.x, NAN)
         F.maxpool2d_backward(p, r, x, y, dx)
         assert_grad('dx', objective, x, dx)
      end)
   end

   it('rejects a y of the wrong shape', function()
      local x, y = zeros({ 1, 1, 4, 4 }), zeros({ 1, 1, 3, 3 })
      local dy = zeros({ 1, 1, 2, 2 })
      assert.are.equal("mrt_maxpool2d_backward: 'y' has shape [1,1,3,3], expected [1,1,2,2] "
         .. '(-1 = any)', error_of(F.maxpool2d_backward, F.pool2d_params(2), dy, x, y, x))
   end)
end)

describe('F.avgpool2d_forward', function()
   it('divides by the padded window size', function()
      local x = from({ 1, 1, 1, 1 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 3, 3 }, NAN)
      F.avgpool2d_forward(F.pool2d_params(2, 1, 1, true), x, y)
      assert.are.same({ 0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25 }, y:totable())
   end)

   it('divides by the input elements only', function()
      local x = from({ 1, 2, 3, 4 }, { 1, 1, 2, 2 })
      local y = filled({ 1, 1, 3, 3 }, NAN)
      F.avgpool2d_forward(F.pool2d_params(2, 1, 1, false), x, y)
      assert.are.same({ 1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4 }, y:totable())
   end)

   it('reports ceil_mode as NYI', function()
      local p = F.pool2d_params(2)
      p.ceil_mode = 1
      assert.are.equal('NYI: mrt_avgpool2d_forward: ceil_mode = 1 (only 0 is implemented)',
         error_of(F.avgpool2d_forward, p, zeros({ 1, 1, 4, 4 }),
            zeros({ 1, 1, 2, 2 })))
   end)
end)

describe('F.avgpool2d_backward', function()
   for i, case in ipairs(pool_cases) do
      for _, include in ipairs({ true, false }) do
         it('matches finite differences: ' .. case.name .. ', count_include_pad '
            .. tostring(include), function()
            local gen = random.new(80 + i)
            local p = F.pool2d_params(case.kernel, case.stride, case.pad, include)
            local yshape = F.pool2d_out_shape(case.x, p)
            local x, r, y = uniform(gen, case.x), uniform(gen, yshape), zeros(yshape)
            local function objective()
               F.avgpool2d_forward(p, x, y)
               return dot(y, r)
            end
            local dx = filled(case.x, NAN)
            F.avgpool2d_backward(p, r, dx)
            assert_grad('dx', objective, x, dx)
         end)
      end
   end

   it('rejects a dy that does not match dx', function()
      local dx, dy = zeros({ 1, 2, 4, 4 }), zeros({ 1, 2, 3, 3 })
      assert.are.equal("mrt_avgpool2d_backward: 'dy' has shape [1,2,3,3], expected [1,2,2,2] "
         .. '(-1 = any)', error_of(F.avgpool2d_backward, F.pool2d_params(2), dy, dx))
   end)
end)

describe('F.global_avgpool_forward', function()
   it('averages each plane', function()
      local x = from({ 1, 2, 3, 4, 10, 20, 30, 40 }, { 1, 2, 2, 2 })
      local y = filled({ 1, 2 }, NAN)
      F.global_avgpool_forward(x, y)
      assert.are.same({ 2.5, 25 }, y:totable())
   end)

   it('rejects a [N,C,1,1] output', function()
      assert.are.equal("mrt_global_avgpool_forward: 'y' has shape [1,2,1,1], expected [1,2] "
         .. '(-1 = any)', error_of(F.global_avgpool_forward, zeros({ 1, 2, 3, 3 }),
            zeros({ 1, 2, 1, 1 })))
   end)
end)

describe('F.global_avgpool_backward', function()
   it('matches finite differences', function()
      local gen = random.new(90)
      local x, r, y = uniform(gen, { 2, 3, 3, 4 }), uniform(gen, { 2, 3 }), zeros({ 2, 3 })
      local function objective()
         F.global_avgpool_forward(x, y)
         return dot(y, r)
      end
      local dx = filled({ 2, 3, 3, 4 }, NAN)
      F.global_avgpool_backward(r, dx)
      assert_grad('dx', objective, x, dx)
   end)

   it('rejects a dy of the wrong shape', function()
      assert.are.equal("mrt_global_avgpool_backward: 'dy' has shape [2,2], expected [2,3] "
         .. '(-1 = any)', error_of(F.global_avgpool_backward, zeros({ 2, 2 }),
            zeros({ 2, 3, 2, 2 })))
   end)
end)

--------------------------------------------------------------------- xent

describe('F.xent_forward', function()
   it('computes loss of known logits', function()
      -- Row 1: [0, 0], label 0: loss log 2; a tie goes to index 0, so correct.
      -- Row 2: [log 3, 0], label 0: softmax [3/4, 1/4], loss log(4/3), correct.
      -- Row 3: [0, 1], label 0: loss log(1 + e) - 0, wrong.
      local logits = from({ 0, 0, math.log(3), 0, 0, 1 }, { 3, 2 })
      local probs = filled({ 3, 2 }, NAN)
      local loss, correct = F.xent_forward(logits, labels_of({ 0, 0, 0 }), probs)
      local expect = (math.log(2) + math.log(4 / 3) + math.log(1 + math.exp(1))) / 3
      -- The loss is computed in double from float32 logits; log 3 rounded to
      -- float32 moves row 2's loss by under 1e-7.
      assert.is_true(math.abs(loss - expect) < 1e-6)
      assert.are.equal(2, correct)
      local e = math.exp(1)
      assert_close({ 0.5, 0.5, 0.75, 0.25, 1 / (1 + e), e / (1 + e) }, probs:totable(), 1e-6,
         'probs')
   end)

   it('counts a tie as the first index', function()
      local _, correct = F.xent_forward(from({ 2, 2 }, { 1, 2 }), labels_of({ 1 }),
         zeros({ 1, 2 }))
      assert.are.equal(0, correct)
   end)

   it('stays finite for large logits', function()
      local probs = zeros({ 1, 3 })
      local loss = F.xent_forward(from({ 1000, 0, -1000 }, { 1, 3 }), labels_of({ 1 }), probs)
      assert.is_true(math.abs(loss - 1000) < 1e-3)
      assert.is_true(all_finite(probs))
   end)

   it('rejects a label above range', function()
      assert.are.equal('mrt_xent_forward: label 7 in row 2 is out of range (expected 0 to 4)',
         error_of(F.xent_forward, zeros({ 4, 5 }), labels_of({ 0, 4, 7, 1 }),
            zeros({ 4, 5 })))
   end)

   it('rejects a negative label', function()
      assert.are.equal('mrt_xent_forward: label -1 in row 0 is out of range (expected 0 to 4)',
         error_of(F.xent_forward, zeros({ 2, 5 }), labels_of({ -1, 0 }),
            zeros({ 2, 5 })))
   end)

   it('rejects a wrong label count', function()
      assert.are.equal("xent_forward: 3 labels for the 4 rows of 'logits' [4,5]",
         error_of(F.xent_forward, zeros({ 4, 5 }), labels_of({ 0, 1, 2 }),
            zeros({ 4, 5 })))
   end)

   it('rejects probs of another shape', function()
      assert.are.equal("mrt_xent_forward: 'probs' has shape [4,4], expected [4,5] (-1 = any)",
         error_of(F.xent_forward, zeros({ 4, 5 }), labels_of({ 0, 1, 2, 3 }),
            zeros({ 4, 4 })))
   end)
end)

describe('F.xent_backward', function()
   it('matches finite differences', function()
      local gen = random.new(100)
      local logits = uniform(gen, { 4, 5 }, -2, 2)
      local labels = labels_of({ 3, 0, 4, 1 })
      local probs = zeros({ 4, 5 })
      local scale = 0.7
      local function objective()
         return scale * F.xent_forward(logits, labels, probs)
      end
      objective()
      local dlogits = filled({ 4, 5 }, NAN)
      F.xent_backward(probs, labels, scale, dlogits)
      assert_grad('dlogits', objective, logits, dlogits)
   end)

   it('computes scaled gradient in place', function()
      local probs = from({ 0.25, 0.75, 0.5, 0.5 }, { 2, 2 })
      F.xent_backward(probs, labels_of({ 1, 0 }), 2, probs)
      assert.are.same({ 0.25, -0.25, -0.5, 0.5 }, probs:totable())
   end)

   it('rejects a label above range', function()
      assert.are.equal('mrt_xent_backward: label 5 in row 1 is out of range (expected 0 to 4)',
         error_of(F.xent_backward, zeros({ 2, 5 }), labels_of({ 0, 5 }), 1,
            zeros({ 2, 5 })))
   end)
end)
