-- Specs for mrt.nn modules and containers: dotted names, flat buffers,
-- backward that stops at the deepest parameter needing a gradient, and the
-- ResNet builders' shapes and names.

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local models = require 'mrt.models'
local random = require 'mrt.random'

local function tiny_resnet(seed)
   return models.resnet({ block = 'basic', layers = { 1, 1 }, widths = { 4, 8 }, stem = 'small',
      in_channels = 1, classes = 3, rng = random.new(seed or 1) })
end

local function batch(n, shape, seed)
   local x = T.zeros({ n, shape[1], shape[2], shape[3] })
   random.new(seed or 7):fill_normal(x, 0, 1)
   local labels = T.labels(n, 'cpu')
   for i = 0, n - 1 do
      labels.ptr[i] = i % 3
   end
   return x, labels
end

-- Counts calls of update_grad per module and whether dx was requested.
local function instrument(model)
   local calls = {}
   for _, m in ipairs(model:named_modules()) do
      local mod, name = m.module, m.name
      local original = mod.update_grad
      mod.update_grad = function(self, x, dy, need_dx)
         calls[name] = { need_dx = need_dx }
         return original(self, x, dy, need_dx)
      end
   end
   return calls
end

local function forward_backward(model, x, labels)
   local criterion = nn.cross_entropy()
   local loss = criterion:forward(model:forward(x), labels)
   model:backward(x, criterion:backward(1), false)
   return loss
end

describe('Module:parameters', function()
   it('names parameters like torchvision', function()
      local names = {}
      for _, p in ipairs(tiny_resnet():parameters()) do
         names[#names + 1] = p.name
      end
      assert.are.same({
         'conv1.weight', 'bn1.weight', 'bn1.bias',
         'layer1.0.conv1.weight', 'layer1.0.bn1.weight', 'layer1.0.bn1.bias',
         'layer1.0.conv2.weight', 'layer1.0.bn2.weight', 'layer1.0.bn2.bias',
         'layer2.0.conv1.weight', 'layer2.0.bn1.weight', 'layer2.0.bn1.bias',
         'layer2.0.conv2.weight', 'layer2.0.bn2.weight', 'layer2.0.bn2.bias',
         'layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight',
         'layer2.0.downsample.1.bias', 'fc.weight', 'fc.bias',
      }, names)
   end)

   it('lists batch-norm buffers by name', function()
      local names = {}
      for _, b in ipairs(tiny_resnet():named_buffers()) do
         names[#names + 1] = b.name
      end
      assert.are.equal('bn1.running_mean', names[1])
      assert.are.equal('layer2.0.downsample.1.running_var', names[#names])
   end)
end)

describe('Module:flatten', function()
   it('keeps values and lays parameters out contiguously', function()
      local model = tiny_resnet()
      local before = {}
      for _, p in ipairs(model:parameters()) do
         before[p.name] = p.entry.value:totable()
      end
      local flat = model:flatten()
      local offset = 0
      for _, p in ipairs(model:parameters()) do
         assert.are.equal(offset, p.entry.offset)
         assert.are.same(before[p.name], p.entry.value:totable())
         offset = offset + p.entry.value:numel()
      end
      assert.are.equal(offset, flat.numel)
   end)

   it('makes parameter tensors views of the flat buffer', function()
      local model = tiny_resnet()
      local flat = model:flatten()
      local fc_bias = model.fc.params[2]
      flat.params:set(fc_bias.offset + 1, 42)
      assert.are.equal(42, fc_bias.value:get(1))
   end)
end)

describe('Sequential:backward', function()
   it('stops below the head when only fc needs a gradient', function()
      local model = tiny_resnet()
      model:flatten()
      model:set_needs_grad(function(name) return name:match('^fc%.') ~= nil end)
      local sentinel = 12345
      model.flat.grads:fill(sentinel)
      local calls = instrument(model)
      local x, labels = batch(4, { 1, 6, 6 })
      forward_backward(model, x, labels)
      assert.is_not_nil(calls.fc)
      assert.is_false(calls.fc.need_dx)
      assert.is_nil(calls.avgpool)
      assert.is_nil(calls.layer2)
      assert.is_nil(calls.conv1)
      for _, p in ipairs(model:parameters()) do
         local g = p.entry.grad:totable()
         if p.name:match('^fc%.') then
            assert.are_not.equal(sentinel, g[1])
         else
            for i = 1, #g do
               assert.are.equal(sentinel, g[i])
            end
         end
      end
   end)

   it('computes no input gradient for the lowest layer with a gradient', function()
      local model = tiny_resnet()
      model:flatten()
      model:set_needs_grad(function(name) return name:match('^layer2%.') ~= nil
         or name:match('^fc%.') ~= nil end)
      local calls = instrument(model)
      local x, labels = batch(4, { 1, 6, 6 })
      forward_backward(model, x, labels)
      assert.is_true(calls.avgpool.need_dx)
      assert.is_false(calls.layer2.need_dx)
      assert.is_nil(calls.layer1)
   end)

   it('fills every gradient when every parameter needs one', function()
      local model = tiny_resnet()
      model:flatten()
      model:set_needs_grad(function() return true end)
      model.flat.grads:fill(0 / 0)
      local x, labels = batch(4, { 1, 6, 6 })
      forward_backward(model, x, labels)
      assert.is_false(model.flat.grads:has_nonfinite())
   end)
end)

describe('models.resnet', function()
   it('maps a 1x28x28 batch to class scores with the small stem', function()
      local model = models.resnet_small({ rng = random.new(3) })
      local x = batch(2, { 1, 28, 28 })
      local y = model:forward(x)
      assert.are.same({ 2, 10 }, y.shape)
   end)

   it('rejects an unknown option naming it', function()
      assert.has_error(function() models.resnet({ depth = 3 }) end,
         "resnet: unknown option 'depth' (expected block, layers, widths, stem, in_channels, "
         .. 'classes, rng, device)')
   end)

   it('replaces the head with a fresh layer of the requested size', function()
      local model = tiny_resnet()
      model:flatten()
      model:replace_head(7)
      local x = batch(2, { 1, 6, 6 })
      assert.are.same({ 2, 7 }, model:forward(x).shape)
      assert.are.equal(model.flat.numel, model:num_params())
   end)
end)
