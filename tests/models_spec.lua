-- Specs for the model builders (mrt.models: resnet, wrn, mlp), the
-- pre-activation block behind wrn (mrt.nn.preact) and Module:replace_head:
-- parameter counts and names against torchvision, forward shapes,
-- initialisation, options and early-stopping backward.
--
-- Parameter counts are PyTorch's sum(p.numel()), printed by
--    cd tests/fixtures && /usr/bin/python3 -B -c "
--    import torchvision.models as tv, reference_models as ref
--    count = lambda model: sum(p.numel() for p in model.parameters())
--    print([count(getattr(tv, n)(weights=None)) for n in ('resnet18', 'resnet34', 'resnet50')])
--    print(count(tv.resnet18(weights=None, num_classes=10)))
--    print([count(ref.WideResNet(16, k, 10)) for k in (1, 4, 8)], count(ref.MLP(784, 1000, 10)))
--    print(count(ref.resnet_small(10, 1)))"
-- Names are compared with the fixture metadata, which make_fixtures.py checks against
-- torchvision's state_dict names (widths do not change names).

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local models = require 'mrt.models'
local preact = require 'mrt.nn.preact'
local random = require 'mrt.random'
local mio = require 'mrt.io'
local lib = require 'mrt.ffi'

local device = T.default_device()
local FIXTURES = lib.root .. '/tests/fixtures/'

---------------------------------------------------------------- helpers

local function split(text)
   local out = {}
   for item in text:gmatch('[^,]+') do
      out[#out + 1] = item
   end
   return out
end

local function param_names(model)
   local names = {}
   for _, p in ipairs(model:parameters()) do
      names[#names + 1] = p.name
   end
   return names
end

local function buffer_names(model)
   local names = {}
   for _, b in ipairs(model:named_buffers()) do
      names[#names + 1] = b.name
   end
   return names
end

-- PyTorch's parameter names and buffer names (in order) from a fixture.
local function torch_names(fixture)
   local _, meta = mio.safetensors_info(FIXTURES .. fixture .. '.safetensors')
   local params = split(meta.parameters)
   local is_param = {}
   for _, name in ipairs(params) do
      is_param[name] = true
   end
   local buffers = {}
   for _, name in ipairs(split(meta.state_dict_order)) do
      if not is_param[name] then
         buffers[#buffers + 1] = name
      end
   end
   return params, buffers
end

local function normal(shape, seed)
   return random.new(seed):fill_normal(T.zeros(shape, device), 0, 1)
end

local function param(model, name)
   for _, p in ipairs(model:parameters()) do
      if p.name == name then
         return p.entry
      end
   end
   error('no parameter ' .. name)
end

-- Mean and standard deviation of a tensor's elements.
local function moments(t)
   local values = t:totable()
   local sum, sumsq = 0, 0
   for _, v in ipairs(values) do
      sum = sum + v
      sumsq = sumsq + v * v
   end
   local mean = sum / #values
   return mean, math.sqrt(sumsq / #values - mean * mean)
end

local function max_abs(t)
   local m = 0
   for _, v in ipairs(t:totable()) do
      m = math.max(m, math.abs(v))
   end
   return m
end

local function eval_shape(model, x)
   model:evaluate()
   return model:forward(x).shape
end

-- Checks torchvision's initialisation: kaiming_normal_ (fan_out) on a
-- large convolution, batch norm 1/0 with running statistics 0/1, and fc
-- uniform in +-1/sqrt(fan_in).
local function check_init(model, conv_name, fc_in)
   local w = param(model, conv_name).value
   local out, k = w.shape[1], w.shape[3]
   local _, std = moments(w)
   -- Every checked convolution has n = 512*512*9 = 2.4e6 weights, so the
   -- sample std has a relative standard error of 1/sqrt(2n) = 4.6e-4 and
   -- the 1% bound is 20 standard errors wide. The seeds are fixed.
   local expected = math.sqrt(2 / (out * k * k))
   assert.is_true(math.abs(std / expected - 1) < 0.01, string.format('%s std %.4g, expected %.4g',
      conv_name, std, expected))
   for _, p in ipairs(model:parameters()) do
      if p.name:match('bn%d*%.weight$') or p.name:match('downsample%.1%.weight$') then
         assert.are.equal(1, p.entry.value:sum() / p.entry.value:numel())
         assert.are.equal(p.entry.value:numel(), p.entry.value:sumsq())
      elseif p.name:match('bn%d*%.bias$') or p.name:match('downsample%.1%.bias$') then
         assert.are.equal(0, p.entry.value:sumsq())
      end
   end
   for _, b in ipairs(model:named_buffers()) do
      local v = b.value
      local expected_sum = b.name:match('running_var$') and v:numel() or 0
      assert.are.equal(expected_sum, v:sumsq())
   end
   local fc = param(model, 'fc.weight').value
   local bound = 1 / math.sqrt(fc_in)
   assert.is_true(max_abs(fc) <= bound)
   assert.is_true(max_abs(fc) > 0.99 * bound)
end

---------------------------------------------------------------- resnet

describe('models.resnet18', function()
   it('has as many parameters as torchvision', function()
      assert.are.equal(11689512, models.resnet18():num_params())
      assert.are.equal(11181642, models.resnet18({ classes = 10 }):num_params())
   end)

   it('names parameters and buffers as torchvision', function()
      local params, buffers = torch_names('resnet18_w4')
      local model = models.resnet18()
      assert.are.same(params, param_names(model))
      assert.are.same(buffers, buffer_names(model))
   end)

   it('maps images to class scores', function()
      local model = models.resnet18({ classes = 7, device = device })
      assert.are.same({ 2, 7 }, eval_shape(model, normal({ 2, 3, 64, 64 }, 1)))
   end)

   it('takes other channel counts', function()
      local model = models.resnet18({ in_channels = 1, classes = 5, device = device })
      assert.are.same({ 64, 1, 7, 7 }, param(model, 'conv1.weight').value.shape)
      assert.are.same({ 1, 5 }, eval_shape(model, normal({ 1, 1, 32, 32 }, 2)))
   end)

   it('initialises like torchvision', function()
      check_init(models.resnet18({ rng = random.new(4) }), 'layer4.1.conv2.weight', 512)
   end)
end)

describe('models.resnet34', function()
   it('has as many parameters as torchvision', function()
      assert.are.equal(21797672, models.resnet34():num_params())
   end)

   it('names parameters and buffers as torchvision', function()
      local params, buffers = torch_names('resnet34_w4')
      local model = models.resnet34()
      assert.are.same(params, param_names(model))
      assert.are.same(buffers, buffer_names(model))
   end)
end)

describe('models.resnet50', function()
   it('has as many parameters as torchvision', function()
      assert.are.equal(25557032, models.resnet50():num_params())
   end)

   it('names parameters and buffers as torchvision', function()
      -- The small stem only drops the max pool, which has no parameters.
      local params, buffers = torch_names('resnet50_cifar_w4')
      local model = models.resnet50()
      assert.are.same(params, param_names(model))
      assert.are.same(buffers, buffer_names(model))
   end)

   it('maps images to class scores', function()
      local model = models.resnet50({ widths = { 4, 8, 16, 32 }, classes = 3, device = device })
      assert.are.same({ 3, 128 }, param(model, 'fc.weight').value.shape)
      assert.are.same({ 2, 3 }, eval_shape(model, normal({ 2, 3, 64, 64 }, 3)))
   end)

   it('initialises like torchvision', function()
      check_init(models.resnet50({ rng = random.new(5) }), 'layer4.0.conv2.weight', 2048)
   end)
end)

describe('models.resnet_small', function()
   it('builds the network of the default job', function()
      local model = models.resnet_small({ device = device })
      assert.are.equal(174970, model:num_params())
      assert.are.same({ 3, 10 }, eval_shape(model, normal({ 3, 1, 28, 28 }, 4)))
   end)
end)

describe('models.resnet', function()
   it('rejects bad options', function()
      assert.has_error(function() models.resnet({ depth = 18 }) end,
         "resnet: unknown option 'depth' (expected block, layers, widths, stem, in_channels, "
            .. 'classes, rng, device)')
      assert.has_error(function() models.resnet({ layers = { 2, 2 }, widths = { 8 } }) end,
         'resnet: layers and widths must be lists of equal length (one entry per stage), got 2 '
            .. 'and 1 entries')
      assert.has_error(function() models.resnet({ stem = 'cifar' }) end,
         "resnet: unknown stem 'cifar' (expected 'imagenet' or 'small')")
   end)
end)

---------------------------------------------------------------- wrn

describe('models.wrn16', function()
   it('has as many parameters as the PyTorch reference', function()
      assert.are.equal(175066, models.wrn16({ k = 1 }):num_params())
      assert.are.equal(2748890, models.wrn16({ k = 4 }):num_params())
      assert.are.equal(10961370, models.wrn16({ k = 8 }):num_params())
   end)

   it('names parameters and buffers as the PyTorch reference', function()
      local params, buffers = torch_names('wrn16_1')
      local model = models.wrn16({ k = 1 })
      assert.are.same(params, param_names(model))
      assert.are.same(buffers, buffer_names(model))
   end)

   it('gives block1 a shortcut convolution when k > 1', function()
      local names = param_names(models.wrn16({ k = 2 }))
      local shortcuts = {}
      for _, name in ipairs(names) do
         if name:match('convShortcut') then
            shortcuts[#shortcuts + 1] = name
         end
      end
      assert.are.same({ 'block1.layer.0.convShortcut.weight',
         'block2.layer.0.convShortcut.weight', 'block3.layer.0.convShortcut.weight' }, shortcuts)
   end)

   it('maps images to class scores', function()
      local model = models.wrn16({ k = 2, classes = 4, in_channels = 1, device = device })
      assert.are.same({ 2, 4 }, eval_shape(model, normal({ 2, 1, 32, 32 }, 5)))
   end)

   it('initialises convolutions like the ResNets', function()
      check_init(models.wrn16({ k = 8, rng = random.new(6) }), 'block3.layer.1.conv2.weight',
         512)
   end)
end)

describe('models.wrn', function()
   it('builds other depths', function()
      local model = models.wrn({ depth = 22, k = 1 })
      local names = param_names(model)
      assert.is_truthy(names[1] == 'conv1.weight')
      local blocks = 0
      for _, name in ipairs(names) do
         if name:match('^block1%.layer%.%d+%.conv1%.weight$') then
            blocks = blocks + 1
         end
      end
      assert.are.equal(3, blocks)
   end)

   it('rejects bad options', function()
      assert.has_error(function() models.wrn({ depth = 18 }) end,
         'wrn: depth 18 is invalid (expected 6n+4 with n >= 1: 10, 16, 22, ...)')
      assert.has_error(function() models.wrn16({ k = 1.5 }) end,
         'wrn: width factor k 1.5 is invalid (expected an integer >= 1)')
      assert.has_error(function() models.wrn({ dropout = 0.3 }) end,
         "wrn: unknown option 'dropout' (expected depth, k, classes, in_channels, rng, device)")
   end)
end)

---------------------------------------------------------------- mlp

describe('models.mlp', function()
   it('has as many parameters as the PyTorch reference', function()
      assert.are.equal(795010, models.mlp():num_params())
   end)

   it('names parameters fc1 and fc2', function()
      local model = models.mlp({ inputs = 20, hidden = 16, classes = 3 })
      assert.are.same({ 'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias' }, param_names(model))
      assert.are.same({ 16, 20 }, param(model, 'fc1.weight').value.shape)
      assert.are.same({ 3, 16 }, param(model, 'fc2.weight').value.shape)
   end)

   it('accepts images and rows', function()
      local model = models.mlp({ hidden = 8, device = device })
      assert.are.same({ 4, 10 }, eval_shape(model, normal({ 4, 1, 28, 28 }, 6)))
      assert.are.same({ 4, 10 }, eval_shape(model, normal({ 4, 784 }, 7)))
   end)

   it('derives the input size from channels and image size', function()
      local model = models.mlp({ in_channels = 3, image_size = 32, hidden = 5 })
      assert.are.same({ 5, 3072 }, param(model, 'fc1.weight').value.shape)
   end)

   it('initialises like nn.Linear', function()
      local model = models.mlp({ rng = random.new(8) })
      for _, name in ipairs({ 'fc1.weight', 'fc1.bias' }) do
         local t = param(model, name).value
         assert.is_true(max_abs(t) <= 1 / math.sqrt(784))
         assert.is_true(max_abs(t) > 0.99 / math.sqrt(784))
      end
      assert.is_true(max_abs(param(model, 'fc2.weight').value) <= 1 / math.sqrt(1000))
   end)

   it('rejects bad options', function()
      assert.has_error(function() models.mlp({ inputs = 100, in_channels = 1 }) end,
         'mlp: inputs 100 does not match in_channels * image_size^2 = 784')
      assert.has_error(function() models.mlp({ hidden = 0 }) end,
         'mlp: hidden must be an integer >= 1, got 0')
      assert.has_error(function() models.mlp({ layers = 2 }) end,
         "mlp: unknown option 'layers' (expected inputs, hidden, classes, in_channels, "
            .. 'image_size, rng, device)')
   end)
end)

---------------------------------------------------------------- replace_head

describe('Module:replace_head', function()
   it('swaps the ResNet classifier', function()
      local model = models.resnet18({ widths = { 4, 8, 16, 32 }, device = device })
      model:flatten()
      model:replace_head(10, { rng = random.new(1) })
      assert.are.same({ 10, 32 }, param(model, 'fc.weight').value.shape)
      assert.are.equal(model.flat.numel, model:num_params())
      assert.are.same({ 2, 10 }, eval_shape(model, normal({ 2, 3, 32, 32 }, 8)))
   end)

   it('swaps the WRN classifier', function()
      local model = models.wrn16({ k = 1, device = device })
      model:replace_head(100)
      assert.are.same({ 100, 64 }, param(model, 'fc.weight').value.shape)
   end)

   it('swaps the MLP output layer', function()
      local model = models.mlp({ hidden = 8, device = device })
      model:replace_head(2)
      assert.are.same({ 2, 8 }, param(model, 'fc2.weight').value.shape)
      assert.are.same({ 3, 2 }, eval_shape(model, normal({ 3, 784 }, 9)))
   end)
end)

---------------------------------------------------------------- preact

-- Mean cross-entropy gradients of a model on a fixed batch, as name -> list.
local function gradients(model, x, labels)
   model:train()
   local criterion = nn.cross_entropy()
   criterion:forward(model:forward(x), labels)
   model:backward(x, criterion:backward(1), false)
   local out = {}
   for _, p in ipairs(model:parameters()) do
      if p.entry.needs_grad then
         out[p.name] = p.entry.grad:totable()
      end
   end
   return out
end

local function labels_for(n, classes)
   local host = T.labels(n, 'cpu')
   for i = 0, n - 1 do
      host.ptr[i] = i % classes
   end
   return T.copy_labels(T.labels(n, device), host)
end

describe('nn.preact_residual', function()
   it('adds the input unchanged without a shortcut', function()
      local block = models.wide_block(3, 3, 1, { rng = random.new(1) })
      block:to(device)
      for _, p in ipairs(block:parameters()) do
         if p.name:match('^conv') then
            p.entry.value:zero()
         end
      end
      block:evaluate()
      local x = normal({ 2, 3, 5, 5 }, 10)
      assert.are.same(x:totable(), block:forward(x):totable())
   end)

   it('feeds the shortcut the activated input', function()
      -- conv1 and conv2 are zero and convShortcut is the identity on
      -- channels, so in eval mode (running mean 0, variance 1) the output is
      -- relu(x / sqrt(1 + eps)) at every second pixel.
      local block = models.wide_block(2, 2, 2, { rng = random.new(2) })
      block:to(device)
      for _, p in ipairs(block:parameters()) do
         if p.name:match('^conv%d') then
            p.entry.value:zero()
         end
      end
      block.convShortcut.params[1].value:copy(T.from_table({ 1, 0, 0, 1 }, { 2, 2, 1, 1 }))
      block:evaluate()
      local x = normal({ 1, 2, 4, 4 }, 11)
      local xs, ys = x:totable(), block:forward(x):totable()
      assert.are.equal(8, #ys)
      local scale = 1 / math.sqrt(1 + 1e-5)
      for c = 0, 1 do
         for i = 0, 1 do
            for j = 0, 1 do
               local v = xs[c * 16 + 2 * i * 4 + 2 * j + 1]
               -- Float32 batch norm: within 1e-6 of the exact value.
               assert.is_true(math.abs(ys[c * 4 + i * 2 + j + 1] - math.max(v * scale, 0)) < 1e-6)
            end
         end
      end
   end)

   it('keeps gradients when lower parts are frozen', function()
      local x, labels = normal({ 2, 3, 16, 16 }, 12), labels_for(2, 10)
      local full = models.wrn16({ k = 1, rng = random.new(3), device = device })
      full:flatten()
      local all = gradients(full, x, labels)
      full:set_needs_grad(function(name) return name:match('^block3') or name:match('^fc') end)
      local upper = gradients(full, x, labels)
      local count = 0
      for name, grad in pairs(upper) do
         assert.are.same(all[name], grad, name)
         count = count + 1
      end
      assert.is_true(count > 0)
   end)

   it('stops backward at the lowest trainable parameter', function()
      local model = models.wrn16({ k = 1, rng = random.new(4), device = device })
      model:flatten()
      model:set_needs_grad(function(name) return name:match('^block3%.layer%.1%.conv2') end)
      local called = {}
      for _, m in ipairs(model:named_modules()) do
         local mod, name = m.module, m.name
         local original = mod.update_grad
         mod.update_grad = function(self, ...)
            called[name] = true
            return original(self, ...)
         end
      end
      gradients(model, normal({ 2, 3, 16, 16 }, 13), labels_for(2, 10))
      assert.is_true(called['block3.layer.1.conv2'])
      assert.is_nil(called['block3.layer.1.conv1'])
      assert.is_nil(called['block3.layer.1.bn1'])
      assert.is_nil(called['block3.layer.0'])
      assert.is_nil(called['conv1'])
   end)

   it('builds through preact_residual with any shortcut name', function()
      local pre = nn.sequential(nil, { device = 'cpu' })
      pre:add('bn', nn.batchnorm(2, { device = 'cpu' }))
      local branch = nn.sequential(nil, { device = 'cpu' })
      branch:add('conv', nn.conv2d(2, 4, 1, { device = 'cpu' }))
      local block = preact.preact_residual(pre, branch, nn.conv2d(2, 4, 1, { device = 'cpu' }),
         { shortcut_name = 'proj', device = 'cpu' })
      assert.are.same({ 'bn.weight', 'bn.bias', 'conv.weight', 'conv.bias', 'proj.weight',
         'proj.bias' }, param_names(block))
   end)
end)
