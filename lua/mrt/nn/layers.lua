-- mrt.nn.layers: the leaf layers (Linear, Conv2d, BatchNorm, ReLU, pooling,
-- Flatten) on top of the engine's functional ops in mrt.F.
--
-- Initialisation follows PyTorch 1.13's defaults: Linear and Conv2d weights
-- and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5)),
-- batch norm weight 1, bias 0, running mean 0, running variance 1.

local ffi = require 'ffi'
local F = require 'mrt.F'
local T = require 'mrt.tensor'
local random = require 'mrt.random'
local module = require 'mrt.nn.module'

local M = {}

-- The generator constructors use when no `rng` option is given.
local default_rng = random.new(0)

function M.manual_seed(seed)
   default_rng = random.new(seed)
end

function M.default_rng()
   return default_rng
end

local function uniform_init(t, fan_in, rng)
   local bound = 1 / math.sqrt(fan_in)
   return (rng or default_rng):fill_uniform(t, -bound, bound)
end
M.uniform_init = uniform_init

local function check_int(fn, name, v, min)
   if type(v) ~= 'number' or v ~= math.floor(v) or v < min then
      error(string.format('%s: %s must be an integer >= %d, got %s', fn, name, min, tostring(v)),
         3)
   end
end

local function pair(v)
   if type(v) == 'table' then
      return v[1], v[2]
   end
   return v, v
end

-- Whether each device's engine takes channels-last activations (asked once).
local channels_last_ok = {}

local function channels_last_supported(device)
   local ok = channels_last_ok[device]
   if ok == nil then
      ok = F.channels_last_supported(device)
      channels_last_ok[device] = ok
   end
   return ok
end

-- Copies ffi parameters (conv or pooling) with channels_last set.
local function last_params(p, ctype)
   local q = ffi.new(ctype, p)
   q.channels_last = 1
   return q
end

---------------------------------------------------------------------- Linear

local Linear = module.class('Linear')
M.Linear = Linear

-- y = x w^T + b for x [N, in]; opts: bias (default true), rng, device.
function M.linear(n_in, n_out, opts)
   opts = opts or {}
   check_int('Linear', 'in_features', n_in, 1)
   check_int('Linear', 'out_features', n_out, 1)
   local self = setmetatable({}, Linear):init(opts.device)
   self.n_in, self.n_out = n_in, n_out
   local w = uniform_init(T.zeros({ n_out, n_in }, 'cpu'), n_in, opts.rng)
   self:add_param('weight', w:to(self.device), 'weight')
   if opts.bias ~= false then
      local b = uniform_init(T.zeros({ n_out }, 'cpu'), n_in, opts.rng)
      self:add_param('bias', b:to(self.device), 'bias')
   end
   return self
end

function Linear:update_output(x)
   if x:dim() ~= 2 or x.shape[2] ~= self.n_in then
      error(string.format('Linear: expected input [N,%d], got %s', self.n_in, x:shape_string()), 3)
   end
   local y = self:tensor('y', { x.shape[1], self.n_out })
   local b = self.param_index.bias
   F.linear_forward(x, self.params[1].value, b and b.value, y)
   return y
end

function Linear:update_grad(x, dy, need_dx)
   local w, b = self.params[1], self.param_index.bias
   local dx = need_dx and self:tensor('dx', x.shape) or nil
   local dw = w.needs_grad and w.grad or nil
   local db = (b and b.needs_grad) and b.grad or nil
   if dx or dw or db then
      F.linear_backward(dy, x, w.value, dx, dw, db, 0)
   end
   return dx
end

---------------------------------------------------------------------- Conv2d

local Conv2d = module.class('Conv2d')
M.Conv2d = Conv2d

-- opts: stride, padding, dilation (numbers or {h, w}), bias (default true),
-- channels_last (default true: use channels-last activations where the
-- engine supports them, see mrt.nn.module), rng, device.
function M.conv2d(n_in, n_out, kernel, opts)
   opts = opts or {}
   check_int('Conv2d', 'in_channels', n_in, 1)
   check_int('Conv2d', 'out_channels', n_out, 1)
   local kh, kw = pair(kernel)
   check_int('Conv2d', 'kernel height', kh, 1)
   check_int('Conv2d', 'kernel width', kw, 1)
   local self = setmetatable({}, Conv2d):init(opts.device)
   self.n_in, self.n_out, self.kh, self.kw = n_in, n_out, kh, kw
   self.p = F.conv2d_params(opts.stride or 1, opts.padding or 0, opts.dilation or 1)
   self.p_last = last_params(self.p, 'mrt_conv2d_params')
   self.channels_last = opts.channels_last ~= false
   local fan_in = n_in * kh * kw
   local w = uniform_init(T.zeros({ n_out, n_in, kh, kw }, 'cpu'), fan_in, opts.rng)
   self:add_param('weight', w:to(self.device), 'weight')
   if opts.bias ~= false then
      local b = uniform_init(T.zeros({ n_out }, 'cpu'), fan_in, opts.rng)
      self:add_param('bias', b:to(self.device), 'bias')
   end
   return self
end

-- Whether a forward of x runs on channels-last activations.
function Conv2d:use_channels_last(x)
   if x.channels_last then
      return true
   end
   return self.channels_last ~= false and x:dim() == 4 and channels_last_supported(self.device)
end

function Conv2d:update_output(x)
   local w = self.params[1].value
   local b = self.param_index.bias
   if not self:use_channels_last(x) then
      self.input_last = nil
      local y = self:tensor('y', F.conv2d_out_shape(x.shape, w.shape, self.p))
      F.conv2d_forward(self.p, x, w, b and b.value, y)
      return y
   end
   local input = x
   if not x.channels_last then
      -- Checks the NCHW shape first, so that errors show the caller's shape.
      F.conv2d_out_shape(x.shape, w.shape, self.p)
      input = self:channels_last_copy('x', x)
   end
   self.input_last = input
   local y = self:output_like('y', F.conv2d_out_shape(input.shape, w.shape, self.p_last), true)
   F.conv2d_forward(self.p_last, input, w, b and b.value, y)
   return y
end

function Conv2d:update_grad(x, dy, need_dx)
   local w, b = self.params[1], self.param_index.bias
   local dw = w.needs_grad and w.grad or nil
   local db = (b and b.needs_grad) and b.grad or nil
   local input = self.input_last
   if input == nil then
      local dx = need_dx and self:tensor('dx', x.shape) or nil
      if dx or dw or db then
         F.conv2d_backward(self.p, dy, x, w.value, dx, dw, db, 0)
      end
      return dx
   end
   local dx = need_dx and self:output_like('dx', input.shape, true) or nil
   if dx or dw or db then
      F.conv2d_backward(self.p_last, dy, input, w.value, dx, dw, db, 0)
   end
   if dx ~= nil and input ~= x then
      return self:channels_first_copy('dx', dx)
   end
   return dx
end

------------------------------------------------------------------- BatchNorm

local BatchNorm = module.class('BatchNorm')
M.BatchNorm = BatchNorm

-- Batch normalisation over channels of [N, C] or [N, C, H, W] inputs.
-- In training mode the running statistics update on every forward pass,
-- also when weight and bias are frozen (PyTorch does the same for a module
-- in train mode); set `hold_stats = true` to keep them fixed.
-- opts: eps (1e-5), momentum (0.1), device.
function M.batchnorm(channels, opts)
   opts = opts or {}
   check_int('BatchNorm', 'num_features', channels, 1)
   local self = setmetatable({}, BatchNorm):init(opts.device)
   self.channels = channels
   self.eps = opts.eps or 1e-5
   self.momentum = opts.momentum or 0.1
   self.hold_stats = false
   self.num_batches_tracked = 0
   self:add_param('weight', T.zeros({ channels }, self.device):fill(1), 'weight')
   self:add_param('bias', T.zeros({ channels }, self.device), 'bias')
   self.running_mean = self:add_buffer('running_mean', T.zeros({ channels }, self.device))
   self.running_var = self:add_buffer('running_var', T.zeros({ channels }, self.device):fill(1))
   self.save_mean = T.zeros({ channels }, self.device)
   self.save_invstd = T.zeros({ channels }, self.device)
   return self
end

-- A channels-last activation [N,H,W,C] as the [N*H*W, C] matrix that
-- batch normalisation takes; other tensors as they are.
function BatchNorm:rows(key, t)
   if not t.channels_last then
      return t
   end
   local s = t.shape
   return self:view_of(key, t, { s[1] * s[2] * s[3], s[4] })
end

-- Raises an error at `level` unless x has this layer's channel count.
function BatchNorm:check_input(x, level)
   local channels = x.channels_last and x.shape[4] or x.shape[2]
   if x:dim() < 2 or channels ~= self.channels then
      error(string.format('BatchNorm: expected input with %d channels in dimension %d, got %s',
         self.channels, x.channels_last and 4 or 2, x:shape_string()), level + 1)
   end
end

-- Whether the engine can fuse what follows this layer into it, on x.
local fused_ok = {}

function BatchNorm:can_fuse(x)
   local ok = fused_ok[self.device]
   if ok == nil then
      ok = F.batchnorm_act_supported(self.device)
      fused_ok[self.device] = ok
   end
   return ok and (x:dim() == 2 or x:dim() == 4)
end

-- Forward fused with what follows in the container: the sum with residual
-- (a tensor of x's shape, or nil) and ReLU when relu is true. Returns the
-- fused output, which backward_act needs. With inplace the output
-- overwrites x, and no backward can follow.
function BatchNorm:forward_act(x, residual, relu, inplace)
   self:check_input(x, 2)
   local y = inplace and x or self:output_like('act', x.shape, x.channels_last)
   local update = self.training and not self.hold_stats
   if update then
      self.num_batches_tracked = self.num_batches_tracked + 1
   end
   F.batchnorm_act_forward(self:rows('x', x), self.params[1].value, self.params[2].value,
      self.running_mean, self.running_var, self.save_mean, self.save_invstd,
      residual and self:rows('residual', residual), inplace and self:rows('x', x)
      or self:rows('act', y), self.training, update, self.momentum, self.eps, relu)
   self.forward_training = self.training
   self.act = { relu = relu and true or false, inplace = inplace }
   self.output = y
   return y
end

-- Backward of forward_act from dy, the gradient of the fused output.
-- Returns dx (when need_dx) and the residual's gradient (when need_dres).
function BatchNorm:backward_act(x, dy, need_dx, need_dres)
   if not self.forward_training then
      error('NYI: backward through batch norm in evaluation mode; call model:train() '
         .. 'before a training step', 2)
   end
   if self.act.inplace then
      error('backward_act: the forward pass overwrote its input (forward_act with inplace)', 2)
   end
   local w, b = self.params[1], self.params[2]
   local dx = need_dx and self:output_like('dx', x.shape, x.channels_last) or nil
   local dres = need_dres and self:output_like('dres', x.shape, x.channels_last) or nil
   local dw = w.needs_grad and w.grad or nil
   local db = b.needs_grad and b.grad or nil
   if dx or dres or dw or db then
      local relu = self.act.relu
      F.batchnorm_act_backward(self:rows('dy', dy), self:rows('x', x),
         relu and self:rows('act', self.output) or nil, w.value, self.save_mean,
         self.save_invstd, dx and self:rows('dx', dx), dres and self:rows('dres', dres), dw, db,
         0, relu)
   end
   return dx, dres
end

function BatchNorm:update_output(x)
   self:check_input(x, 3)
   self.act = nil
   local y = self:output_like('y', x.shape, x.channels_last)
   local update = self.training and not self.hold_stats
   if update then
      self.num_batches_tracked = self.num_batches_tracked + 1
   end
   F.batchnorm_forward(self:rows('x', x), self.params[1].value, self.params[2].value,
      self.running_mean, self.running_var, self.save_mean, self.save_invstd, self:rows('y', y),
      self.training, update, self.momentum, self.eps)
   self.forward_training = self.training
   return y
end

function BatchNorm:update_grad(x, dy, need_dx)
   if not self.forward_training then
      error('NYI: backward through batch norm in evaluation mode; call model:train() '
         .. 'before a training step', 3)
   end
   local w, b = self.params[1], self.params[2]
   local dx = need_dx and self:output_like('dx', x.shape, x.channels_last) or nil
   local dw = w.needs_grad and w.grad or nil
   local db = b.needs_grad and b.grad or nil
   if dx or dw or db then
      F.batchnorm_backward(self:rows('dy', dy), self:rows('x', x), w.value, self.save_mean,
         self.save_invstd, dx and self:rows('dx', dx), dw, db, 0)
   end
   return dx
end

------------------------------------------------------------------------ ReLU

local ReLU = module.class('ReLU')
M.ReLU = ReLU

function M.relu(opts)
   opts = opts or {}
   return setmetatable({}, ReLU):init(opts.device)
end

-- Marks this ReLU as fused into the BatchNorm `bn` before it, whose fused
-- output y is then this layer's output; bn = nil undoes it.
function ReLU:absorbed_by(bn, y)
   self.absorber = bn
   if bn ~= nil then
      self.output = y
   end
end

function ReLU:update_output(x)
   local y = self:output_like('y', x.shape, x.channels_last)
   F.relu_forward(x, y)
   return y
end

function ReLU:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:output_like('dx', x.shape, x.channels_last)
   F.relu_backward(dy, self.output, dx)
   return dx
end

--------------------------------------------------------------------- Pooling

local MaxPool2d = module.class('MaxPool2d')
M.MaxPool2d = MaxPool2d
local AvgPool2d = module.class('AvgPool2d')
M.AvgPool2d = AvgPool2d

-- opts: stride (defaults to kernel), padding (0), count_include_pad (true, average only).
local function pool(cls, kernel, opts)
   opts = opts or {}
   local self = setmetatable({}, cls):init(opts.device)
   local include = opts.count_include_pad
   if include == nil then
      include = true
   end
   self.p = F.pool2d_params(kernel, opts.stride or kernel, opts.padding or 0, include)
   self.p_last = last_params(self.p, 'mrt_pool2d_params')
   return self
end

-- The parameters for x's layout.
local function pool_params(self, x)
   return x.channels_last and self.p_last or self.p
end

function M.maxpool2d(kernel, opts)
   return pool(MaxPool2d, kernel, opts)
end

function M.avgpool2d(kernel, opts)
   return pool(AvgPool2d, kernel, opts)
end

function MaxPool2d:update_output(x)
   local p = pool_params(self, x)
   local y = self:output_like('y', F.pool2d_out_shape(x.shape, p), x.channels_last)
   F.maxpool2d_forward(p, x, y)
   return y
end

function MaxPool2d:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:output_like('dx', x.shape, x.channels_last)
   F.maxpool2d_backward(pool_params(self, x), dy, x, self.output, dx)
   return dx
end

function AvgPool2d:update_output(x)
   local p = pool_params(self, x)
   local y = self:output_like('y', F.pool2d_out_shape(x.shape, p), x.channels_last)
   F.avgpool2d_forward(p, x, y)
   return y
end

function AvgPool2d:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:output_like('dx', x.shape, x.channels_last)
   F.avgpool2d_backward(pool_params(self, x), dy, dx)
   return dx
end

-- Mean over H and W: [N, C, H, W] -> [N, C] (torchvision's AdaptiveAvgPool2d(1) then flatten).
local GlobalAvgPool = module.class('GlobalAvgPool')
M.GlobalAvgPool = GlobalAvgPool

function M.global_avgpool(opts)
   opts = opts or {}
   return setmetatable({}, GlobalAvgPool):init(opts.device)
end

-- A channels-last [N,H,W,C] as the [N,H*W,C] that global pooling takes.
local function positions_view(self, key, t)
   if not t.channels_last then
      return t
   end
   local s = t.shape
   return self:view_of(key, t, { s[1], s[2] * s[3], s[4] })
end

function GlobalAvgPool:update_output(x)
   if x:dim() ~= 4 then
      error('GlobalAvgPool: expected 4-D input [N,C,H,W], got ' .. x:shape_string(), 3)
   end
   local y = self:tensor('y', { x.shape[1], x.channels_last and x.shape[4] or x.shape[2] })
   F.global_avgpool_forward(positions_view(self, 'x', x), y)
   return y
end

function GlobalAvgPool:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:output_like('dx', x.shape, x.channels_last)
   F.global_avgpool_backward(dy, positions_view(self, 'dx', dx))
   return dx
end

--------------------------------------------------------------------- Flatten

-- [N, ...] -> [N, prod(...)], a view sharing storage. A channels-last
-- input is copied to NCHW first, so that features come in PyTorch's order.
local Flatten = module.class('Flatten')
M.Flatten = Flatten

function M.flatten(opts)
   opts = opts or {}
   return setmetatable({}, Flatten):init(opts.device)
end

function Flatten:update_output(x)
   if x.channels_last then
      x = self:channels_first_copy('x', x)
   end
   return self:view_of('y', x, { x.shape[1], x:numel() / x.shape[1] })
end

function Flatten:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   if x.channels_last then
      local s = x.shape
      return self:channels_last_copy('dx', self:view_of('dy', dy, { s[1], s[4], s[2], s[3] }))
   end
   return self:view_of('dx', dy, x.shape)
end

return M
