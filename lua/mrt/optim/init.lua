-- mrt.optim: the optimizers and training schemes, in one table.
--
--    local optim = require 'mrt.optim'
--    local opt = optim.multirate(model, { lr = 0.005, k = 5, momentum = 0.9, fast = '^fc%.' })
--    for x, labels in loader:epoch() do
--       local loss = opt:step(feval)   -- feval: forward, loss, backward; returns the loss
--    end
--
-- The protocol every optimizer keeps: opt = optim.<name>(flattened model,
-- options); opt:step(feval) sets needs_grad on exactly the parameters whose
-- gradient the iteration needs, calls feval() (more than once where a
-- scheme needs two gradients of one minibatch) and returns the loss;
-- opt.iteration counts the calls to step; opt:state() returns everything
-- needed to resume bit-identically and opt:load_state(s) restores it.
-- optim.brains keeps the same verbs but its feval takes the model to run.

local M = {}

M.sgd = require('mrt.optim.sgd').sgd
M.adam = require('mrt.optim.adam').adam
M.adamw = require('mrt.optim.adam').adamw
M.langevin = require('mrt.optim.langevin').langevin
M.multirate = require('mrt.optim.multirate').multirate
M.subgroups = require('mrt.optim.subgroups').subgroups
M.random_zeroing = require('mrt.optim.subgroups').random_zeroing
M.brains = require('mrt.optim.brains').brains
M.schedule = require 'mrt.optim.schedule'

return M
