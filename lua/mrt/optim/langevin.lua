-- mrt.optim.langevin: underdamped Langevin dynamics as SGD with momentum
-- plus Gaussian noise on the gradient term (derivation in mrt.optim.base):
--
--    h = sqrt(lr),  mu = 1 - gamma*h,  sigma = sqrt(2*gamma*tau/h)
--    g := grad + weight_decay*theta + sigma*xi,   xi ~ N(0, 1) per element
--    buffer := g on the first step, else mu*buffer + g
--    theta := theta - lr*buffer
--
-- With tau = 0 this is exactly optim.sgd with momentum 1 - gamma*sqrt(lr).
-- For a loss U, the stationary distribution of theta approaches
-- exp(-U/tau) as lr goes to 0.
--
--    local opt = optim.langevin(model, { lr = 1e-4, gamma = 10, tau = 1e-3, seed = 1 })
--
-- Options (default in brackets):
--    lr            lr = h^2 for the SDE time step h; a number > 0 or a
--                  schedule  [required]
--    gamma         friction per unit of SDE time; gamma*sqrt(lr) <= 1  [required]
--    tau           temperature >= 0  [0]
--    weight_decay  [0]
--    seed          seed of the noise generator (mrt.random)  [0]
--    params        the trained part (see optim.sgd)  [every parameter]
--
-- The generator's position is part of opt:state(), so a resumed run draws
-- the same noise. The noise of a multirate part comes from the scheme's
-- generator (option seed of optim.multirate).

local config = require 'mrt.optim.config'
local hierarchy = require 'mrt.optim.hierarchy'

local M = {}

local SCHEMA = {
   lr = { kind = 'lr', min = 0, required = true },
   gamma = { kind = 'number', min = 0, required = true },
   tau = { kind = 'number', min = 0, default = 0 },
   weight_decay = { kind = 'number', min = 0, default = 0 },
   seed = { kind = 'integer', min = 0, default = 0 },
   params = { kind = 'any', expect = 'a part or a part spec' },
}

function M.langevin(model, opts)
   hierarchy.check_model('optim.langevin', model, 2)
   local o = config.check('optim.langevin', opts, SCHEMA, 2)
   return hierarchy.single(model, 'optim.langevin', 'langevin', o, 2)
end

return M
