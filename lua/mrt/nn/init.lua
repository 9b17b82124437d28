-- mrt.nn: modules, layers, containers and the loss, in one table.
--
--    local nn = require 'mrt.nn'
--    local net = nn.sequential({ nn.linear(784, 100), nn.relu(), nn.linear(100, 10) })

local module = require 'mrt.nn.module'
local layers = require 'mrt.nn.layers'
local containers = require 'mrt.nn.containers'

local M = {}

for _, source in ipairs({ module, layers, containers }) do
   for k, v in pairs(source) do
      M[k] = v
   end
end

return M
