-- mrt.models: model builders with torchvision's parameter names.

local resnet = require 'mrt.models.resnet'

local M = {}

for k, v in pairs(resnet) do
   M[k] = v
end

return M
