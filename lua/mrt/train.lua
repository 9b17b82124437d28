-- mrt.train: the training loop shared by recipes: epochs of optimizer steps
-- over a loader, evaluation on a test loader, a progress line on stderr, a
-- NaN check, and the per-epoch history the result file records.
--
-- The optimizer drives each step (see mrt.optim): train.fit hands it a
-- closure that runs forward, loss and backward on the current minibatch for
-- the parameters the optimizer marked as needing a gradient.

local nn = require 'mrt.nn'
local util = require 'mrt.util'

local M = {}

-- Accuracy (a fraction in [0, 1]) and mean loss of model on every batch of loader.
function M.evaluate(model, loader)
   local criterion = nn.cross_entropy()
   local was_training = model.training
   model:evaluate()
   local correct, seen, loss_sum = 0, 0, 0
   for x, labels, count in loader:epoch() do
      local logits = model:forward(x)
      local loss, ok = criterion:forward(logits, labels)
      correct = correct + ok
      seen = seen + count
      loss_sum = loss_sum + loss * count
   end
   model:train(was_training)
   if seen == 0 then
      error('evaluate: the test loader yielded no images', 2)
   end
   return correct / seen, loss_sum / seen
end

-- Recomputes the batch-norm running statistics of model from up to
-- `batches` training batches of loader, as the cumulative average that
-- torch.optim.swa_utils.update_bn computes: for weights that were averaged
-- (brains, SWA), statistics averaged alongside them do not match the
-- averaged weights. Runs forward passes in training mode, no backward.
function M.recompute_bn(model, loader, batches)
   local norms = {}
   for _, m in ipairs(model:named_modules()) do
      local mod = m.module
      if mod.running_mean ~= nil and mod.running_var ~= nil then
         norms[#norms + 1] = { module = mod, momentum = mod.momentum, hold = mod.hold_stats }
         mod.running_mean:zero()
         mod.running_var:fill(1)
         mod.hold_stats = false
      end
   end
   if #norms == 0 then
      return 0
   end
   local was_training = model.training
   model:train()
   local seen = 0
   for x in loader:epoch() do
      seen = seen + 1
      for _, n in ipairs(norms) do
         n.module.momentum = 1 / seen
      end
      model:forward(x)
      if seen >= batches then
         break
      end
   end
   for _, n in ipairs(norms) do
      n.module.momentum, n.module.hold_stats = n.momentum, n.hold
   end
   model:train(was_training)
   return seen
end

-- Writes a progress line that rewrites itself (\r) on a terminal and is
-- throttled to one line per `interval` seconds elsewhere.
local function progress_writer(label, interval)
   local tty = os.getenv('TERM') ~= nil and os.getenv('TERM') ~= 'dumb'
      and os.execute('test -t 2') == 0
   local last = -math.huge
   return function(text, final)
      local t = util.now()
      if not final and t - last < interval then
         return
      end
      last = t
      if tty then
         io.stderr:write('\r\27[K', label, ' ', text, final and '\n' or '')
      else
         io.stderr:write(label, ' ', text, '\n')
      end
      io.stderr:flush()
   end
end

-- Raises a clear error for a NaN or infinite loss, naming where it happened.
local function check_loss(loss, label, epoch, step)
   if loss ~= loss or loss == math.huge or loss == -math.huge then
      error(string.format('%s: loss is %s at epoch %d step %d; lower the learning rate '
         .. '(--lr) or check the input data', label, tostring(loss), epoch, step), 0)
   end
end

-- Trains model with optimizer for opts.epochs epochs and returns the
-- history { epoch = {}, time_s = {}, train_loss = {}, test_acc = {} }, one
-- entry per epoch; time_s is cumulative training wall time, evaluation
-- excluded. opts: model, optimizer, train (loader), test (loader), epochs,
-- label (for the progress line), progress (default true), on_epoch(record),
-- profile (print a per-layer time profile at the end, see mrt.profile),
-- before_evaluate(model) (called before each evaluation, e.g. recompute_bn).
-- An optimizer with a prepare_evaluation method (optim.brains) gets that
-- call first.
function M.fit(opts)
   local model, opt = opts.model, opts.optimizer
   local label = '[' .. (opts.label or 'train') .. ']'
   local criterion = nn.cross_entropy()
   local show = opts.progress ~= false and progress_writer(label, opts.progress_interval or 1)
   local history = { epoch = {}, time_s = {}, train_loss = {}, test_acc = {}, test_loss = {} }
   local elapsed = 0
   local profiler = opts.profile and require('mrt.profile').attach(model) or nil
   model:train()
   for epoch = 1, opts.epochs do
      local loss_sum, seen, step = 0, 0, 0
      local epoch_start = util.now()
      local steps = opts.train:num_batches()
      local step_end = util.now()
      for x, labels, count in opts.train:epoch() do
         step = step + 1
         local step_start, feval_s = util.now(), 0
         -- Multi-brain optimizers pass the brain to run; others pass nothing.
         local function feval(net)
            net = net or model
            local t0 = profiler and util.now()
            local logits = net:forward(x)
            local loss = criterion:forward(logits, labels)
            net:backward(x, criterion:backward(1), false)
            if profiler then
               feval_s = feval_s + util.now() - t0
            end
            return loss
         end
         local loss = opt:step(feval)
         check_loss(loss, label, epoch, step)
         loss_sum = loss_sum + loss * count
         seen = seen + count
         if profiler then
            local t = util.now()
            profiler:add_step(step_start - step_end, t - step_start, feval_s)
            step_end = t
         end
         if show then
            local dt = util.now() - epoch_start
            show(string.format('epoch %d/%d step %d/%d loss %.4f %.0f img/s', epoch, opts.epochs,
               step, steps, loss_sum / seen, seen / math.max(dt, 1e-9)))
         end
      end
      if seen == 0 then
         error(string.format('%s: the training loader yielded no batches in epoch %d (%d '
            .. 'images, batch size %d%s); use more training data or a smaller batch', label,
            epoch, opts.train.dataset and opts.train.dataset.n or 0, opts.train.batch_size or 0,
            opts.train.drop_last and ', drop_last' or ''), 0)
      end
      local epoch_time = util.now() - epoch_start
      elapsed = elapsed + epoch_time
      if profiler then
         profiler:pause(true)
      end
      if opts.optimizer.prepare_evaluation then
         opts.optimizer:prepare_evaluation()
      end
      if opts.before_evaluate then
         opts.before_evaluate(model)
      end
      local acc, test_loss = M.evaluate(model, opts.test)
      if profiler then
         profiler:pause(false)
      end
      if test_loss ~= test_loss or test_loss == math.huge then
         error(string.format('%s: test loss is %s after epoch %d; training diverged, so lower '
            .. 'the learning rate (--lr)', label, tostring(test_loss), epoch), 0)
      end
      history.epoch[epoch] = epoch
      history.time_s[epoch] = elapsed
      history.train_loss[epoch] = loss_sum / seen
      history.test_acc[epoch] = acc
      history.test_loss[epoch] = test_loss
      if show then
         show(string.format('epoch %d/%d loss %.4f test acc %.4f time %.1f s (%.0f img/s)',
            epoch, opts.epochs, loss_sum / seen, acc, elapsed, seen / epoch_time), true)
      end
      if opts.on_epoch then
         opts.on_epoch({ epoch = epoch, time_s = elapsed, train_loss = loss_sum / seen,
            test_acc = acc })
      end
   end
   if profiler then
      io.stderr:write(profiler:report(opts.label), '\n')
   end
   return history
end

return M
