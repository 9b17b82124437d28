-- mrt.optim.sgd: stochastic gradient descent with momentum, in
-- torch.optim.SGD's convention (PyTorch 1.13):
--
--    g := grad + weight_decay*theta
--    buffer := g on the first step, else momentum*buffer + (1-dampening)*g
--    theta := theta - lr*buffer   (theta - lr*(g + momentum*buffer) with nesterov)
--
--    local opt = optim.sgd(model, { lr = 0.1, momentum = 0.9 })
--    local loss = opt:step(feval)
--
-- Options (default in brackets):
--    lr            step size h, a number >= 0 or a schedule  [required]
--    momentum      mu >= 0; 0 steps along g and keeps no buffer  [0]
--    dampening     [0]
--    nesterov      needs momentum > 0 and dampening 0  [false]
--    weight_decay  omega >= 0, L2 term added to the gradient  [0]
--    params        the trained part: a part (partition:part) or a part spec
--                  (see mrt.partition); the other parameters stay frozen and
--                  never get needs_grad  [every parameter]
--
-- opt:step(feval) sets needs_grad on the trained part, calls feval() once
-- and returns its loss. opt:state() and opt:load_state(s) save and restore
-- the momentum buffer and the iteration count (see mrt.optim.hierarchy).

local config = require 'mrt.optim.config'
local hierarchy = require 'mrt.optim.hierarchy'

local M = {}

local SCHEMA = {
   lr = { kind = 'lr', min = 0, required = true },
   momentum = { kind = 'number', min = 0, default = 0 },
   dampening = { kind = 'number', default = 0 },
   nesterov = { kind = 'boolean', default = false },
   weight_decay = { kind = 'number', min = 0, default = 0 },
   params = { kind = 'any', expect = 'a part or a part spec' },
}

function M.sgd(model, opts)
   hierarchy.check_model('optim.sgd', model, 2)
   local o = config.check('optim.sgd', opts, SCHEMA, 2)
   return hierarchy.single(model, 'optim.sgd', 'sgd', o, 2)
end

return M
