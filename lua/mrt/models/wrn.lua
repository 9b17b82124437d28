-- mrt.models.wrn: wide residual networks (Zagoruyko and Komodakis, 2016)
-- in their CIFAR form, with the parameter names of the common PyTorch
-- WideResNet code: conv1, block<g>.layer.<i>.{bn1,conv1,bn2,conv2,
-- convShortcut}, bn1, fc.
--
-- WRN-d-k starts with conv1, a 3x3 convolution to 16 channels. Three groups
-- block1..3 follow, each of (d-4)/6 pre-activation blocks, with 16k, 32k
-- and 64k channels and strides 1, 2, 2. The network ends in bn1, ReLU,
-- global average pooling and fc. A block whose channels or
-- stride change has a 1x1 convShortcut (with the stride) on the activated
-- input; the others add their input unchanged. There is no dropout.
--
-- Initialisation: convolutions kaiming_normal_(mode = 'fan_out',
-- nonlinearity = 'relu'), i.e. N(0, 2/(out_channels*kh*kw)); batch norm
-- weight 1, bias 0; fc keeps PyTorch's default (uniform in
-- +-1/sqrt(fan_in)).

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local preact = require 'mrt.nn.preact'

local M = {}

local function conv(n_in, n_out, k, stride, padding, opts)
   local c = nn.conv2d(n_in, n_out, k, {
      stride = stride, padding = padding, bias = false, device = 'cpu', rng = opts.rng,
   })
   local std = math.sqrt(2 / (n_out * k * k))
   ;(opts.rng or nn.default_rng()):fill_normal(c.params[1].value, 0, std)
   return c
end

local function bn(channels)
   return nn.batchnorm(channels, { device = 'cpu' })
end

-- One pre-activation block: bn1-relu1-conv1(stride), bn2-relu2-conv2.
function M.wide_block(n_in, n_out, stride, opts)
   local pre = nn.sequential(nil, { device = 'cpu' })
   pre:add('bn1', bn(n_in))
   pre:add('relu1', nn.relu({ device = 'cpu' }))
   local branch = nn.sequential(nil, { device = 'cpu' })
   branch:add('conv1', conv(n_in, n_out, 3, stride, 1, opts))
   branch:add('bn2', bn(n_out))
   branch:add('relu2', nn.relu({ device = 'cpu' }))
   branch:add('conv2', conv(n_out, n_out, 3, 1, 1, opts))
   local shortcut
   if stride ~= 1 or n_in ~= n_out then
      shortcut = conv(n_in, n_out, 1, stride, 0, opts)
   end
   return preact.preact_residual(pre, branch, shortcut, { device = 'cpu' })
end

local KNOWN = { depth = 1, k = 1, classes = 1, in_channels = 1, rng = 1, device = 1 }

-- Checks the options; level is the error level of the builder's caller, seen from here.
local function check_opts(opts, level)
   for key in pairs(opts) do
      if not KNOWN[key] then
         error(string.format("wrn: unknown option '%s' (expected depth, k, classes, "
            .. 'in_channels, rng, device)', tostring(key)), level)
      end
   end
   local depth, k = opts.depth or 16, opts.k or 1
   if type(depth) ~= 'number' or depth < 10 or (depth - 4) % 6 ~= 0 then
      error(string.format('wrn: depth %s is invalid (expected 6n+4 with n >= 1: 10, 16, 22, ...)',
         tostring(depth)), level)
   end
   if type(k) ~= 'number' or k < 1 or k ~= math.floor(k) then
      error(string.format('wrn: width factor k %s is invalid (expected an integer >= 1)',
         tostring(k)), level)
   end
   return depth, k
end

-- Builds the network; errors go to the caller of the public builder, two levels up.
local function build(opts)
   local depth, k = check_opts(opts, 4)
   local per_group = (depth - 4) / 6
   local widths = { 16 * k, 32 * k, 64 * k }
   local model = nn.sequential(nil, { device = 'cpu' })
   model:add('conv1', conv(opts.in_channels or 3, 16, 3, 1, 1, opts))
   local channels = 16
   for g = 1, 3 do
      local layer = nn.sequential(nil, { device = 'cpu' })
      for i = 1, per_group do
         local stride = (i == 1 and g > 1) and 2 or 1
         layer:add(tostring(i - 1), M.wide_block(channels, widths[g], stride, opts))
         channels = widths[g]
      end
      local group = nn.sequential(nil, { device = 'cpu' })
      group:add('layer', layer)
      model:add('block' .. g, group)
   end
   model:add('bn1', bn(channels))
   model:add('relu', nn.relu({ device = 'cpu' }))
   model:add('avgpool', nn.global_avgpool({ device = 'cpu' }))
   model:add('fc', nn.linear(channels, opts.classes or 10, { device = 'cpu', rng = opts.rng }))
   model.head_name = 'fc'
   local device = opts.device or T.default_device()
   if device ~= 'cpu' then
      model:to(device)
   end
   model:refresh_grad_flags()
   return model
end

-- Builds WRN-depth-k. opts: depth (16), k (1), classes (10), in_channels
-- (3), rng (the layers' default generator), device.
function M.wrn(opts)
   local model = build(opts or {})
   return model
end

-- WRN-16-k, the network of the patch-augmented CIFAR-10 experiment; the
-- same options as wrn, depth fixed at 16 unless given.
function M.wrn16(opts)
   local o = { depth = 16 }
   for key, v in pairs(opts or {}) do
      o[key] = v
   end
   local model = build(o)
   return model
end

return M
