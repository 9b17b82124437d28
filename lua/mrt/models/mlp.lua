-- mrt.models.mlp: the one-hidden-layer perceptron of the MNIST and spiral
-- experiments: flatten, fc1, ReLU, fc2.
--
-- Parameters are fc1.weight [hidden, inputs], fc1.bias, fc2.weight
-- [classes, hidden] and fc2.bias, initialised as PyTorch's nn.Linear
-- (uniform in +-1/sqrt(fan_in)). The leading Flatten makes [N,1,28,28]
-- images and [N,784] rows both valid inputs.

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'

local M = {}

local KNOWN = { inputs = 1, hidden = 1, classes = 1, in_channels = 1, image_size = 1, rng = 1,
   device = 1 }

local function positive_int(name, v, level)
   if type(v) ~= 'number' or v < 1 or v ~= math.floor(v) then
      error(string.format('mlp: %s must be an integer >= 1, got %s', name, tostring(v)),
         level + 1)
   end
   return v
end

-- Input features: opts.inputs, or in_channels * image_size^2 (1 * 28^2 = 784).
local function input_count(opts, level)
   local from_image = positive_int('in_channels', opts.in_channels or 1, level + 1)
      * positive_int('image_size', opts.image_size or 28, level + 1) ^ 2
   if opts.inputs == nil then
      return from_image
   end
   local inputs = positive_int('inputs', opts.inputs, level + 1)
   if (opts.in_channels ~= nil or opts.image_size ~= nil) and inputs ~= from_image then
      error(string.format('mlp: inputs %d does not match in_channels * image_size^2 = %d',
         inputs, from_image), level + 1)
   end
   return inputs
end

-- Builds the perceptron. opts: inputs (features after flattening; default
-- in_channels * image_size^2), in_channels (1), image_size (28), hidden
-- (1000), classes (10), rng (the layers' default generator), device.
function M.mlp(opts)
   opts = opts or {}
   for key in pairs(opts) do
      if not KNOWN[key] then
         error(string.format("mlp: unknown option '%s' (expected inputs, hidden, classes, "
            .. 'in_channels, image_size, rng, device)', tostring(key)), 2)
      end
   end
   local inputs = input_count(opts, 2)
   local hidden = positive_int('hidden', opts.hidden or 1000, 2)
   local classes = positive_int('classes', opts.classes or 10, 2)
   local model = nn.sequential(nil, { device = 'cpu' })
   model:add('flatten', nn.flatten({ device = 'cpu' }))
   model:add('fc1', nn.linear(inputs, hidden, { device = 'cpu', rng = opts.rng }))
   model:add('relu', nn.relu({ device = 'cpu' }))
   model:add('fc2', nn.linear(hidden, classes, { device = 'cpu', rng = opts.rng }))
   model.head_name = 'fc2'
   local device = opts.device or T.default_device()
   if device ~= 'cpu' then
      model:to(device)
   end
   model:refresh_grad_flags()
   return model
end

return M
