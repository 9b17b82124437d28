-- mrt.nn.layers: the leaf layers (Linear, Conv2d, BatchNorm, ReLU, pooling,
-- Flatten) on top of the engine's functional ops in mrt.F.
--
-- Initialisation follows PyTorch 1.13's defaults: Linear and Conv2d weights
-- and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5)),
-- batch norm weight 1, bias 0, running mean 0, running variance 1.

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

-- opts: stride, padding, dilation (numbers or {h, w}), bias (default true), rng, device.
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
   local fan_in = n_in * kh * kw
   local w = uniform_init(T.zeros({ n_out, n_in, kh, kw }, 'cpu'), fan_in, opts.rng)
   self:add_param('weight', w:to(self.device), 'weight')
   if opts.bias ~= false then
      local b = uniform_init(T.zeros({ n_out }, 'cpu'), fan_in, opts.rng)
      self:add_param('bias', b:to(self.device), 'bias')
   end
   return self
end

function Conv2d:update_output(x)
   local w = self.params[1].value
   local b = self.param_index.bias
   local y = self:tensor('y', F.conv2d_out_shape(x.shape, w.shape, self.p))
   F.conv2d_forward(self.p, x, w, b and b.value, y)
   return y
end

function Conv2d:update_grad(x, dy, need_dx)
   local w, b = self.params[1], self.param_index.bias
   local dx = need_dx and self:tensor('dx', x.shape) or nil
   local dw = w.needs_grad and w.grad or nil
   local db = (b and b.needs_grad) and b.grad or nil
   if dx or dw or db then
      F.conv2d_backward(self.p, dy, x, w.value, dx, dw, db, 0)
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

function BatchNorm:update_output(x)
   if x:dim() < 2 or x.shape[2] ~= self.channels then
      error(string.format('BatchNorm: expected input with %d channels in dimension 2, got %s',
         self.channels, x:shape_string()), 3)
   end
   local y = self:tensor('y', x.shape)
   local update = self.training and not self.hold_stats
   if update then
      self.num_batches_tracked = self.num_batches_tracked + 1
   end
   F.batchnorm_forward(x, self.params[1].value, self.params[2].value, self.running_mean,
      self.running_var, self.save_mean, self.save_invstd, y, self.training, update,
      self.momentum, self.eps)
   self.forward_training = self.training
   return y
end

function BatchNorm:update_grad(x, dy, need_dx)
   if not self.forward_training then
      error('NYI: backward through batch norm in evaluation mode; call model:train() '
         .. 'before a training step', 3)
   end
   local w, b = self.params[1], self.params[2]
   local dx = need_dx and self:tensor('dx', x.shape) or nil
   local dw = w.needs_grad and w.grad or nil
   local db = b.needs_grad and b.grad or nil
   if dx or dw or db then
      F.batchnorm_backward(dy, x, w.value, self.save_mean, self.save_invstd, dx, dw, db, 0)
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

function ReLU:update_output(x)
   local y = self:tensor('y', x.shape)
   F.relu_forward(x, y)
   return y
end

function ReLU:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:tensor('dx', x.shape)
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
   return self
end

function M.maxpool2d(kernel, opts)
   return pool(MaxPool2d, kernel, opts)
end

function M.avgpool2d(kernel, opts)
   return pool(AvgPool2d, kernel, opts)
end

function MaxPool2d:update_output(x)
   local y = self:tensor('y', F.pool2d_out_shape(x.shape, self.p))
   F.maxpool2d_forward(self.p, x, y)
   return y
end

function MaxPool2d:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:tensor('dx', x.shape)
   F.maxpool2d_backward(self.p, dy, x, self.output, dx)
   return dx
end

function AvgPool2d:update_output(x)
   local y = self:tensor('y', F.pool2d_out_shape(x.shape, self.p))
   F.avgpool2d_forward(self.p, x, y)
   return y
end

function AvgPool2d:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:tensor('dx', x.shape)
   F.avgpool2d_backward(self.p, dy, dx)
   return dx
end

-- Mean over H and W: [N, C, H, W] -> [N, C] (torchvision's AdaptiveAvgPool2d(1) then flatten).
local GlobalAvgPool = module.class('GlobalAvgPool')
M.GlobalAvgPool = GlobalAvgPool

function M.global_avgpool(opts)
   opts = opts or {}
   return setmetatable({}, GlobalAvgPool):init(opts.device)
end

function GlobalAvgPool:update_output(x)
   if x:dim() ~= 4 then
      error('GlobalAvgPool: expected 4-D input [N,C,H,W], got ' .. x:shape_string(), 3)
   end
   local y = self:tensor('y', { x.shape[1], x.shape[2] })
   F.global_avgpool_forward(x, y)
   return y
end

function GlobalAvgPool:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   local dx = self:tensor('dx', x.shape)
   F.global_avgpool_backward(dy, dx)
   return dx
end

--------------------------------------------------------------------- Flatten

-- [N, ...] -> [N, prod(...)], a view sharing storage.
local Flatten = module.class('Flatten')
M.Flatten = Flatten

function M.flatten(opts)
   opts = opts or {}
   return setmetatable({}, Flatten):init(opts.device)
end

function Flatten:update_output(x)
   return x:view({ x.shape[1], x:numel() / x.shape[1] })
end

function Flatten:update_grad(x, dy, need_dx)
   if not need_dx then
      return nil
   end
   return dy:view(x.shape)
end

return M
