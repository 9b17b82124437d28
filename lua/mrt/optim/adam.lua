-- mrt.optim.adam: Adam and AdamW in torch.optim's convention (PyTorch
-- 1.13, amsgrad off), with bias correction:
--
--    Adam:  g := grad + weight_decay*theta
--    AdamW: g := grad;  theta := theta*(1 - lr*weight_decay) first
--    m := beta1*m + (1-beta1)*g;   v := beta2*v + (1-beta2)*g^2
--    theta := theta - lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)
--
-- where t counts the updates of the part's moments, from 1. Inside a
-- multirate scheme, a part that updates every k iterations therefore counts
-- one step per update, not per iteration, so its bias correction matches
-- the number of gradients folded into m and v. Between its updates, a
-- drifting part re-applies its moments with the t of its last update.
--
--    local opt = optim.adam(model, { lr = 1e-3 })
--
-- Options (default in brackets):
--    lr            step size, a number >= 0 or a schedule  [0.001]
--    betas         { beta1, beta2 }, each in [0, 1)  [{0.9, 0.999}]
--    eps           [1e-8]
--    weight_decay  [0 for adam, 0.01 for adamw, as PyTorch]
--    amsgrad       must be false (true is NYI)  [false]
--    params        the trained part (see optim.sgd)  [every parameter]

local config = require 'mrt.optim.config'
local hierarchy = require 'mrt.optim.hierarchy'

local M = {}

local function schema(weight_decay)
   return {
      lr = { kind = 'lr', min = 0, default = 1e-3 },
      betas = { kind = 'table', default = { 0.9, 0.999 },
         expect = 'a list { beta1, beta2 } of numbers in [0, 1)' },
      eps = { kind = 'number', min = 0, default = 1e-8 },
      weight_decay = { kind = 'number', min = 0, default = weight_decay },
      amsgrad = { kind = 'boolean', default = false },
      params = { kind = 'any', expect = 'a part or a part spec' },
   }
end

local ADAM, ADAMW = schema(0), schema(0.01)

function M.adam(model, opts)
   hierarchy.check_model('optim.adam', model, 2)
   local o = config.check('optim.adam', opts, ADAM, 2)
   return hierarchy.single(model, 'optim.adam', 'adam', o, 2)
end

function M.adamw(model, opts)
   hierarchy.check_model('optim.adamw', model, 2)
   local o = config.check('optim.adamw', opts, ADAMW, 2)
   return hierarchy.single(model, 'optim.adamw', 'adamw', o, 2)
end

return M
