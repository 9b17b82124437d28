-- mrt.models.resnet: ResNets with torchvision 0.14's parameter names and
-- initialisation, in the ImageNet form (7x7 stride-2 stem and max pool) and
-- the small-image form (3x3 stride-1 stem, no pool).
--
-- torchvision initialises every convolution with kaiming_normal_(mode =
-- 'fan_out', nonlinearity = 'relu'), i.e. N(0, 2/(out_channels*kh*kw)),
-- batch norm with weight 1 and bias 0, and keeps PyTorch's default for fc.
-- Bottleneck blocks put the stride on the 3x3 convolution (ResNet v1.5).

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'

local M = {}

local function conv(n_in, n_out, k, stride, padding, opts)
   local c = nn.conv2d(n_in, n_out, k, {
      stride = stride, padding = padding, bias = false, device = 'cpu', rng = opts.rng,
   })
   local std = math.sqrt(2 / (n_out * k * k))
   local w = c.params[1].value
   ;(opts.rng or nn.default_rng()):fill_normal(w, 0, std)
   return c
end

local function bn(channels)
   return nn.batchnorm(channels, { device = 'cpu' })
end

local function shortcut(n_in, n_out, stride, opts)
   if stride == 1 and n_in == n_out then
      return nil
   end
   return nn.sequential({ conv(n_in, n_out, 1, stride, 0, opts), bn(n_out) }, { device = 'cpu' })
end

-- BasicBlock: conv3x3-bn-relu-conv3x3-bn, plus shortcut, then relu.
function M.basic_block(n_in, width, stride, opts)
   local branch = nn.sequential(nil, { device = 'cpu' })
   branch:add('conv1', conv(n_in, width, 3, stride, 1, opts))
   branch:add('bn1', bn(width))
   branch:add('relu', nn.relu({ device = 'cpu' }))
   branch:add('conv2', conv(width, width, 3, 1, 1, opts))
   branch:add('bn2', bn(width))
   return nn.residual(branch, shortcut(n_in, width, stride, opts),
      { post = nn.relu({ device = 'cpu' }), device = 'cpu' }), width
end

-- Bottleneck: conv1x1-bn-relu-conv3x3(stride)-bn-relu-conv1x1(x4)-bn, shortcut, relu.
function M.bottleneck(n_in, width, stride, opts)
   local out = width * 4
   local branch = nn.sequential(nil, { device = 'cpu' })
   branch:add('conv1', conv(n_in, width, 1, 1, 0, opts))
   branch:add('bn1', bn(width))
   branch:add('relu1', nn.relu({ device = 'cpu' }))
   branch:add('conv2', conv(width, width, 3, stride, 1, opts))
   branch:add('bn2', bn(width))
   branch:add('relu2', nn.relu({ device = 'cpu' }))
   branch:add('conv3', conv(width, out, 1, 1, 0, opts))
   branch:add('bn3', bn(out))
   return nn.residual(branch, shortcut(n_in, out, stride, opts),
      { post = nn.relu({ device = 'cpu' }), device = 'cpu' }), out
end

local BLOCKS = { basic = M.basic_block, bottleneck = M.bottleneck }

local function check_opts(opts)
   local known = { block = 1, layers = 1, widths = 1, stem = 1, in_channels = 1, classes = 1,
      rng = 1, device = 1 }
   for k in pairs(opts) do
      if not known[k] then
         error(string.format("resnet: unknown option '%s' (expected block, layers, widths, "
            .. 'stem, in_channels, classes, rng, device)', tostring(k)), 3)
      end
   end
   if BLOCKS[opts.block or 'basic'] == nil then
      error(string.format("resnet: unknown block '%s' (expected 'basic' or 'bottleneck')",
         tostring(opts.block)), 3)
   end
   local layers, widths = opts.layers or { 2, 2, 2, 2 }, opts.widths or { 64, 128, 256, 512 }
   if type(layers) ~= 'table' or type(widths) ~= 'table' or #layers ~= #widths
         or #layers == 0 then
      error(string.format('resnet: layers and widths must be lists of equal length '
         .. '(one entry per stage), got %s and %s entries',
         type(layers) == 'table' and #layers or type(layers),
         type(widths) == 'table' and #widths or type(widths)), 3)
   end
   local stem = opts.stem or 'imagenet'
   if stem ~= 'imagenet' and stem ~= 'small' then
      error(string.format("resnet: unknown stem '%s' (expected 'imagenet' or 'small')",
         tostring(stem)), 3)
   end
end

-- Builds a ResNet. opts: block ('basic' or 'bottleneck'), layers (blocks per
-- stage), widths (channels per stage), stem ('imagenet' or 'small'),
-- in_channels (3), classes (1000), rng, device.
function M.resnet(opts)
   check_opts(opts)
   local block = BLOCKS[opts.block or 'basic']
   local layers = opts.layers or { 2, 2, 2, 2 }
   local widths = opts.widths or { 64, 128, 256, 512 }
   local in_channels = opts.in_channels or 3
   local model = nn.sequential(nil, { device = 'cpu' })
   local channels = widths[1]
   if (opts.stem or 'imagenet') == 'imagenet' then
      model:add('conv1', conv(in_channels, channels, 7, 2, 3, opts))
   else
      model:add('conv1', conv(in_channels, channels, 3, 1, 1, opts))
   end
   model:add('bn1', bn(channels))
   model:add('relu', nn.relu({ device = 'cpu' }))
   if (opts.stem or 'imagenet') == 'imagenet' then
      model:add('maxpool', nn.maxpool2d(3, { stride = 2, padding = 1, device = 'cpu' }))
   end
   for stage, count in ipairs(layers) do
      local layer = nn.sequential(nil, { device = 'cpu' })
      for i = 1, count do
         local stride = (i == 1 and stage > 1) and 2 or 1
         local b
         b, channels = block(channels, widths[stage], stride, opts)
         layer:add(tostring(i - 1), b)
      end
      model:add('layer' .. stage, layer)
   end
   model:add('avgpool', nn.global_avgpool({ device = 'cpu' }))
   model:add('fc', nn.linear(channels, opts.classes or 1000, { device = 'cpu', rng = opts.rng }))
   model.head_name = 'fc'
   local device = opts.device or T.default_device()
   if device ~= 'cpu' then
      model:to(device)
   end
   model:refresh_grad_flags()
   return model
end

local function preset(layers, block)
   return function(opts)
      opts = opts or {}
      local o = { block = block, layers = layers }
      for k, v in pairs(opts) do
         o[k] = v
      end
      return M.resnet(o)
   end
end

M.resnet18 = preset({ 2, 2, 2, 2 }, 'basic')
M.resnet34 = preset({ 3, 4, 6, 3 }, 'basic')
M.resnet50 = preset({ 3, 4, 6, 3 }, 'bottleneck')

-- The small ResNet of the default transfer job: three stages of two
-- BasicBlocks, widths 16/32/64, small-image stem, 1x28x28 input, 10 classes.
function M.resnet_small(opts)
   opts = opts or {}
   local o = { block = 'basic', layers = { 2, 2, 2 }, widths = { 16, 32, 64 }, stem = 'small',
      in_channels = 1, classes = 10 }
   for k, v in pairs(opts) do
      o[k] = v
   end
   return M.resnet(o)
end

return M
