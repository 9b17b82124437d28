-- mrt: multirate training of neural networks.
--
--    local mrt = require 'mrt'
--    local model = mrt.models.resnet_small()
--
-- Submodules load on first use, so `require 'mrt'` stays cheap.

local lib = require 'mrt.ffi'

local M = {}

local SUBMODULES = {
   tensor = 'mrt.tensor', nn = 'mrt.nn', F = 'mrt.F', optim = 'mrt.optim',
   partition = 'mrt.partition', models = 'mrt.models', data = 'mrt.data', io = 'mrt.io',
   train = 'mrt.train', random = 'mrt.random', checkpoint = 'mrt.checkpoint',
   recipe = 'mrt.recipe', util = 'mrt.util', profile = 'mrt.profile',
}

setmetatable(M, {
   __index = function(t, key)
      local name = SUBMODULES[key]
      if name == nil then
         return nil
      end
      local mod = require(name)
      rawset(t, key, mod)
      return mod
   end,
})

function M.version()
   return lib.ffi.string(lib.C.mrt_version())
end

-- Seeds the generator that layer constructors use by default.
function M.manual_seed(seed)
   require('mrt.nn').manual_seed(seed)
end

return M
