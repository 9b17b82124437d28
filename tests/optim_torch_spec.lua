-- Specs comparing mrt's optimizer trajectories with PyTorch's, from the
-- fixtures tests/fixtures/optim_<scheme>.safetensors that
-- tests/fixtures/make_fixtures.py writes: the MLP fc1 20->16, ReLU, fc2
-- 16->3 trained for 50 or 30 steps (metadata `steps`) on stored
-- minibatches, with every parameter stored after every step (brain 1's for
-- the brains schemes). The schemes with random masks or Langevin noise draw
-- them in the fixture script from a Python copy of mrt's generator
-- (philox.py), so both sides use the same numbers.
--
-- The model runs on the default device (MRT_DEVICE), so the same specs
-- check the CUDA backend's updates where a GPU is present.
--
-- Tolerance: per tensor, max|mrt - torch| / max|torch| <= 1e-5. The
-- fixtures' README measures PyTorch's own float32 error against float64 at
-- 1.5e-6 or less after 50 steps. mrt sums in another order than PyTorch in
-- the linear layers, which adds an error of the same size.

local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local optim = require 'mrt.optim'
local mio = require 'mrt.io'

local FIXTURES = (os.getenv('MRT_HOME') or '.') .. '/tests/fixtures/'
local TOLERANCE = 1e-5
local DEVICE = T.default_device()

local function mlp(tensors)
   local model = nn.sequential(nil, { device = DEVICE })
   model:add('fc1', nn.linear(20, 16, { device = DEVICE }))
   model:add('relu', nn.relu({ device = DEVICE }))
   model:add('fc2', nn.linear(16, 3, { device = DEVICE }))
   model:flatten()
   for _, p in ipairs(model:parameters()) do
      p.entry.value:copy(tensors[p.name])
   end
   return model, model:parameters()
end

-- max|a - b| / max|b| over two tensors of the same size.
local function relative_error(a, b)
   local ta, tb = a:totable(), b:totable()
   local diff, scale = 0, 0
   for i = 1, #tb do
      diff = math.max(diff, math.abs(ta[i] - tb[i]))
      scale = math.max(scale, math.abs(tb[i]))
   end
   return diff / math.max(scale, 1e-30)
end

local function labels_of(t)
   local values = t:totable()
   local labels = T.labels(#values, 'cpu')
   for i, v in ipairs(values) do
      labels.ptr[i - 1] = v
   end
   return T.copy_labels(T.labels(#values, DEVICE), labels)
end

-- The n elements of a part's state buffer that belong to one parameter.
local function state_view(buffer, offset, n)
   return T.view_of(buffer.storage, buffer.offset + offset, { n }, buffer.device)
end

local function number(meta, key)
   return tonumber(meta[key])
end

-- A list of numbers from the metadata's "[a, b, c]".
local function numbers(meta, key)
   local list = {}
   for v in meta[key]:gmatch('[^%[%],%s]+') do
      list[#list + 1] = tonumber(v)
   end
   return list
end

local function optimizer_for(model, meta)
   local scheme = meta.scheme
   local h, k, mu = number(meta, 'h'), number(meta, 'k'), number(meta, 'mu')
   if scheme == 'multirate_end' then
      return optim.multirate(model, { lr = h, k = k, momentum = mu, drift = false,
         slow_at = 'end', fast = '^fc2%.', slow = '^fc1%.',
         parts = { slow = { lr = number(meta, 'slow_lr'),
            weight_decay = number(meta, 'wd_slow') } } })
   elseif scheme == 'multirate_adam_slow' then
      return optim.multirate(model, { lr = h, k = k, momentum = mu, fast = '^fc2%.',
         slow = '^fc1%.', parts = { slow = { optimizer = 'adam',
            lr = number(meta, 'slow_lr') } } })
   elseif scheme == 'multirate_levels' then
      return optim.multirate(model, { lr = h, momentum = mu,
         k = { number(meta, 'k1'), number(meta, 'k2') },
         levels = { { '^fc1%.weight$' }, { '^fc1%.bias$', '^fc2%.weight$' },
            { '^fc2%.bias$' } } })
   elseif scheme == 'multirate_langevin' then
      return optim.multirate(model, { lr = h, k = k, momentum = mu, fast = '^fc2%.',
         slow = '^fc1%.', seed = number(meta, 'noise_seed'),
         parts = { slow = { optimizer = 'langevin', gamma = number(meta, 'gamma'),
            tau = number(meta, 'tau') } } })
   elseif scheme == 'random_zeroing' then
      return optim.random_zeroing(model, { lr = number(meta, 'lr'),
         seed = number(meta, 'mask_seed'), weight_decay = number(meta, 'weight_decay'),
         prob = { ['^fc1%.weight$'] = number(meta, 'prob_fc1'),
            ['^fc2%.weight$'] = number(meta, 'prob_fc2') } })
   elseif scheme == 'subgroups' or scheme == 'subgroups_adam' then
      return optim.subgroups(model, { lr = number(meta, 'lr'), k = number(meta, 'k'),
         seed = number(meta, 'mask_seed'), weight_decay = number(meta, 'weight_decay'),
         optimizer = meta.base,
         prob = { ['^fc1%.weight$'] = number(meta, 'prob_fc1'),
            ['^fc2%.weight$'] = number(meta, 'prob_fc2') } })
   elseif scheme == 'multirate_masked' then
      return optim.multirate(model, { lr = number(meta, 'h'), k = number(meta, 'k'),
         momentum = number(meta, 'mu'),
         slow = { '^fc1%.weight$', random = { prob = number(meta, 'prob'),
            seed = number(meta, 'mask_seed') } } })
   elseif scheme == 'sgd' then
      return optim.sgd(model, { lr = number(meta, 'lr'), momentum = number(meta, 'momentum'),
         weight_decay = number(meta, 'weight_decay') })
   elseif scheme == 'adam' or scheme == 'adamw' then
      return optim[scheme](model, { lr = number(meta, 'lr'),
         betas = { number(meta, 'beta1'), number(meta, 'beta2') }, eps = number(meta, 'eps'),
         weight_decay = number(meta, 'weight_decay') })
   end
   return optim.multirate(model, { lr = number(meta, 'h'), k = number(meta, 'k'),
      drift = meta.drift == 'true', momentum = number(meta, 'mu'),
      nesterov = meta.nesterov == 'true', fast = '^fc2%.', slow = '^fc1%.',
      parts = { slow = { weight_decay = number(meta, 'wd_slow') },
         fast = { weight_decay = number(meta, 'wd_fast') } } })
end

-- The brains of a brains fixture, from the same start, and their optimizer.
local function brains_for(tensors, meta)
   local lrs = numbers(meta, 'lr')
   local models = {}
   for j = 1, #lrs do
      models[j] = mlp(tensors)
   end
   if meta.adam == 'true' then
      local per_epoch = number(meta, 'batches_per_epoch')
      for j, peak in ipairs(lrs) do
         lrs[j] = optim.schedule.slanted_triangular({ max = peak, epochs = number(meta, 'epochs'),
            warmup_epochs = number(meta, 'warmup_epochs'), iterations_per_epoch = per_epoch })
      end
      return models, optim.brains(models, { lr = lrs, every = numbers(meta, 'every'),
         optimizer = 'adam', average_every = number(meta, 'average_every') })
   end
   return models, optim.brains(models, { lr = lrs, every = numbers(meta, 'every'),
      momentum = number(meta, 'momentum'), weight_decay = number(meta, 'weight_decay') })
end

-- Runs the fixture's steps; returns the worst parameter error, the worst
-- loss error and the step where the parameter error was worst. For brains
-- the parameters compared are brain 1's.
local function replay(name)
   local tensors, meta = mio.safetensors_read(FIXTURES .. 'optim_' .. name .. '.safetensors')
   local model, list, opt
   if meta.scheme:find('^brains') then
      local models
      models, opt = brains_for(tensors, meta)
      model, list = models[1], models[1]:parameters()
   else
      model, list = mlp(tensors)
      opt = optimizer_for(model, meta)
   end
   local criterion = nn.cross_entropy()
   local losses = tensors.loss:totable()
   local worst, worst_loss, worst_step, max_loss = 0, 0, 0, 0
   for _, l in ipairs(losses) do
      max_loss = math.max(max_loss, math.abs(l))
   end
   for step = 1, tonumber(meta.steps) do
      local x = tensors['step' .. step .. '.input']:to(DEVICE)
      local labels = labels_of(tensors['step' .. step .. '.labels'])
      local loss = opt:step(function(m)
         m = m or model
         local logits = m:forward(x)
         local l = criterion:forward(logits, labels)
         m:backward(x, criterion:backward(1), false)
         return l
      end)
      worst_loss = math.max(worst_loss, math.abs(loss - losses[step]) / max_loss)
      for _, p in ipairs(list) do
         local err = relative_error(p.entry.value, tensors['step' .. step .. '.' .. p.name])
         if err > worst then
            worst, worst_step = err, step
         end
      end
   end
   return worst, worst_loss, worst_step, opt, tensors, list
end

describe('optimizer trajectories against PyTorch 1.13', function()
   for _, name in ipairs({ 'sgd', 'adam', 'adamw', 'multirate_drift', 'multirate_no_drift',
      'multirate_drift_k3', 'multirate_no_drift_k3', 'multirate_nesterov', 'multirate_masked',
      'multirate_end', 'multirate_adam_slow', 'multirate_levels', 'multirate_langevin',
      'brains_sgd', 'brains_adam_triangular', 'subgroups', 'subgroups_adam',
      'random_zeroing' }) do
      it(name .. ' matches every step', function()
         local worst, worst_loss, step = replay(name)
         assert.is_true(worst <= TOLERANCE, string.format('%s: parameter error %.3g at step %d',
            name, worst, step))
         assert.is_true(worst_loss <= TOLERANCE, string.format('%s: loss error %.3g', name,
            worst_loss))
      end)
   end

   it('sgd ends with the momentum buffers of torch.optim.SGD', function()
      local _, _, _, opt, tensors, list = replay('sgd')
      local buffer = opt:state().parts.params.buffer
      for _, p in ipairs(list) do
         local n = p.entry.value:numel()
         local mine = state_view(buffer, p.entry.offset, n)
         local ref = tensors['state.momentum_buffer.' .. p.name]
         assert.is_true(relative_error(mine, ref:view({ n })) <= TOLERANCE, p.name)
      end
   end)

   it('adam ends with the moments of torch.optim.Adam', function()
      local _, _, _, opt, tensors, list = replay('adam')
      local s = opt:state().parts.params
      assert.are.equal(50, s.step)
      for _, p in ipairs(list) do
         local n = p.entry.value:numel()
         for key, ref_key in pairs({ m = 'exp_avg', v = 'exp_avg_sq' }) do
            local mine = state_view(s[key], p.entry.offset, n)
            local ref = tensors['state.' .. ref_key .. '.' .. p.name]
            local err = relative_error(mine, ref:view({ n }))
            assert.is_true(err <= TOLERANCE, string.format('%s %s: %.3g', ref_key, p.name, err))
         end
      end
   end)

   it('subgroups_adam ends with each element\'s update count', function()
      local _, _, _, opt, tensors, list = replay('subgroups_adam')
      local counts = opt:state().base.counts
      local seen = {}
      for _, p in ipairs(list) do
         local n = p.entry.value:numel()
         local mine = state_view(counts, p.entry.offset, n):totable()
         local ref = tensors['state.count.' .. p.name]:totable()
         assert.are.same(ref, mine, p.name)
         for _, c in ipairs(mine) do
            seen[c] = true
         end
      end
      assert.is_true(seen[50])                 -- the biases step on every iteration
      local distinct = 0
      for _ in pairs(seen) do
         distinct = distinct + 1
      end
      assert.is_true(distinct >= 3, 'distinct counts: ' .. distinct)
   end)

   it('multirate_drift_k3 ends with both parts\' momentum buffers', function()
      local _, _, _, opt, tensors, list = replay('multirate_drift_k3')
      local parts = opt:state().parts
      for _, p in ipairs(list) do
         local part = p.name:find('^fc1') and parts.slow or parts.fast
         local first = p.name:find('^fc1') and list[1].entry.offset or list[3].entry.offset
         local n = p.entry.value:numel()
         local buffer = part.buffer
         local mine = state_view(buffer, p.entry.offset - first, n)
         local ref = tensors['state.momentum_buffer.' .. p.name]
         assert.is_true(relative_error(mine, ref:view({ n })) <= TOLERANCE, p.name)
      end
   end)
end)
