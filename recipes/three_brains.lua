-- three_brains: three averaged brains against SGD at three step sizes.
--
-- Data: Fashion-MNIST from Debian's dataset-fashion-mnist package. Training
-- uses the first train_images of the 60000 training images (8000 by
-- default, to keep the default run near ten minutes on two CPU cores) and
-- evaluation the first test_images of the 10000 test images (2000 by
-- default). --train_images 60000 --test_images 10000 uses all of
-- Fashion-MNIST.
--
-- Model: the small ResNet mrt.models.resnet_small (three stages of two
-- BasicBlocks, widths 16/32/64, batch norm), trained from scratch with
-- cross-entropy.
--
-- Compared, each from the same initial weights and minibatch order per
-- seed, with the same number of epochs and minibatches:
--    brains      optim.brains: three copies of the network with step sizes
--                brain_lr = {0.01, 0.05, 0.5} (ratios 1:5:50), each SGD
--                with momentum and weight decay and its own momentum
--                buffer. Brain j steps every brain_lr[j]/brain_lr[1]
--                iterations. Whenever brains 1..j have all just stepped,
--                their weights and batch-norm buffers are replaced by their
--                average. Evaluation after each epoch uses a fourth network
--                that contains the average of the three brains' current
--                weights (optim.brains' prepare_evaluation), also when the
--                epoch does not end on an average of all three.
--    sgd_h<lr>   SGD with momentum and weight decay at each step size of
--                sgd_lr = {0.05, 0.01, 0.005}.
-- optim.brains averages the brains' batch-norm running statistics along
-- with the weights, but brain 3 runs a forward pass only every 50
-- iterations, so those statistics lag the averaged weights. Before each
-- evaluation the recipe therefore recomputes them for the averaged network
-- from bn_batches training batches (train.recompute_bn, the cumulative
-- average of torch.optim.swa_utils.update_bn); --bn_batches 0 evaluates
-- with the averaged statistics instead.
-- The table printed at the end gives the mean, min and max over seeds of
-- the final test accuracy.

local mrt = require 'mrt'
local R = require 'mrt.recipe'

local data, models, optim, random, train = mrt.data, mrt.models, mrt.optim, mrt.random,
   mrt.train

local recipe = {
   name = 'three_brains',
   description = 'small ResNet on Fashion-MNIST: three averaged brains (h = 0.01/0.05/0.5) vs '
      .. 'SGD at h = 0.05, 0.01, 0.005',
   config = {
      seeds = { 1, 2 },                  -- one run per approach and seed (weights, order)
      train_images = 8000,               -- first n Fashion-MNIST training images (max 60000)
      test_images = 2000,                -- first n test images (max 10000)
      epochs = 3,
      batch_size = 32,
      brain_lr = { 0.01, 0.05, 0.5 },    -- step size of each brain, integer ratios to the first
      sgd_lr = { 0.05, 0.01, 0.005 },    -- step sizes of the SGD baselines
      momentum = 0.9,                    -- of every brain and every SGD run
      weight_decay = 5e-4,               -- of every brain and every SGD run
      approaches = { 'brains', 'sgd' },  -- 'sgd' runs every step size of sgd_lr
      bn_batches = 20,                   -- batches that recompute the averaged model's
                                         -- batch-norm statistics before each evaluation
                                         -- (0 keeps the averaged statistics)
   },
}

-- Returns the first n samples of a dataset (all of it when n >= its size).
local function first(dataset, n)
   if n >= dataset.n then
      return dataset
   end
   local indices = {}
   for i = 1, n do
      indices[i] = i
   end
   return dataset:subset(indices)
end

local function build(seed, device)
   local model = models.resnet_small({ rng = random.new(seed), device = device })
   model:flatten()
   return model
end

-- Returns the run names of the approaches in order: 'brains' and one
-- 'sgd_h<lr>' per step size.
local function run_names(config)
   local names = {}
   for _, approach in ipairs(config.approaches) do
      if approach == 'sgd' then
         for _, lr in ipairs(config.sgd_lr) do
            names[#names + 1] = string.format('sgd_h%g', lr)
         end
      else
         names[#names + 1] = approach
      end
   end
   return names
end

-- Trains one approach for one seed and returns its history and attributes.
local function run_one(name, config, seed, train_set, test, ctx)
   local attrs = { method = name, seed = seed, momentum = config.momentum,
      weight_decay = config.weight_decay, batch_size = config.batch_size, epochs = config.epochs,
      train_images = train_set.n, test_images = test.dataset.n }
   local model, opt
   if name == 'brains' then
      local brains = {}
      for j = 1, #config.brain_lr do
         brains[j] = build(seed, ctx.device)
      end
      model = build(seed, ctx.device)
      opt = optim.brains(brains, { lr = config.brain_lr, momentum = config.momentum,
         weight_decay = config.weight_decay, eval_model = model })
      attrs.lr, attrs.every = config.brain_lr, opt.every
      attrs.evaluated = "average of the brains' current weights at each evaluation"
      attrs.bn_batches = config.bn_batches
   else
      local lr = tonumber(name:match('^sgd_h(.+)$'))
      model = build(seed, ctx.device)
      opt = optim.sgd(model, { lr = lr, momentum = config.momentum,
         weight_decay = config.weight_decay })
      attrs.lr = lr
   end
   -- A fresh loader per run with the seed's generator gives every approach
   -- the same minibatch order.
   local loader = data.loader(train_set, { batch_size = config.batch_size, shuffle = true,
      rng = random.new(seed), device = ctx.device })
   -- The averaged weights get batch-norm statistics of their own, from a
   -- separate loader so the training order stays that of the other runs.
   local before_evaluate
   if name == 'brains' and config.bn_batches > 0 then
      local bn_loader = data.loader(train_set, { batch_size = config.batch_size, shuffle = true,
         rng = random.new(seed + 1000), device = ctx.device })
      before_evaluate = function(m)
         train.recompute_bn(m, bn_loader, config.bn_batches)
      end
   end
   local history = train.fit({ model = model, optimizer = opt, train = loader, test = test,
      epochs = config.epochs, label = name .. '/seed' .. seed, profile = ctx.profile,
      before_evaluate = before_evaluate })
   return history, attrs
end

-- Fails if brain_lr is not a list of step sizes > 0 that are integer
-- multiples of the first, the rule optim.brains applies.
local function check_brain_lr(name, list)
   local first_lr = list[1]
   if type(first_lr) ~= 'number' or first_lr <= 0 then
      error(string.format('%s: --brain_lr must start with a step size > 0, got %s', name,
         tostring(first_lr)), 0)
   end
   for j, lr in ipairs(list) do
      local ratio = type(lr) == 'number' and lr / first_lr
      if not ratio or ratio < 1 or math.abs(ratio - math.floor(ratio + 0.5)) > 1e-6 * ratio then
         error(string.format('%s: --brain_lr entry %d is %s, not an integer multiple of the '
            .. 'first step size %s', name, j, tostring(lr), tostring(first_lr)), 0)
      end
   end
end

-- Fails on an invalid option before the data is read.
local function check_config(config)
   local name = recipe.name
   R.check_seeds_and_approaches(name, config, { 'brains', 'sgd' })
   R.check_integer(name, config, 'train_images', 1, 60000)
   R.check_integer(name, config, 'test_images', 1, 10000)
   R.check_integer(name, config, 'epochs', 1)
   R.check_integer(name, config, 'batch_size', 1)
   R.check_number(name, config, 'momentum', 0, 1)
   R.check_number(name, config, 'weight_decay', 0)
   R.check_integer(name, config, 'bn_batches', 0)
   check_brain_lr(name, config.brain_lr)
   -- Distinct step sizes, because each one names a run.
   local seen = {}
   for _, lr in ipairs(config.sgd_lr) do
      if type(lr) ~= 'number' or lr <= 0 or seen[lr] then
         error(string.format('%s: --sgd_lr must list distinct step sizes > 0, got %s', name,
            tostring(lr)), 0)
      end
      seen[lr] = true
   end
   if #config.sgd_lr == 0 then
      error(name .. ': --sgd_lr must list at least one step size', 0)
   end
end

function recipe.run(config, ctx)
   check_config(config)
   local train_set = first(data.fashion_mnist('train'), config.train_images)
   local test_set = first(data.fashion_mnist('test'), config.test_images)
   local test = data.loader(test_set, { batch_size = 500, shuffle = false, device = ctx.device })
   local names = run_names(config)
   local histories, attrs = {}, {}
   for _, name in ipairs(names) do
      histories[name] = {}
   end
   for i, seed in ipairs(config.seeds) do
      for _, name in ipairs(names) do
         local history, run_attrs = run_one(name, config, seed, train_set, test, ctx)
         ctx.results:add_run(name .. '/seed' .. seed, history, run_attrs)
         histories[name][i], attrs[name] = history, run_attrs
      end
   end
   local rows, means = {}, {}
   for _, name in ipairs(names) do
      rows[#rows + 1] = ctx.results:add_seed_summary(name, config.seeds, histories[name],
         attrs[name])
      means[#means + 1] = name .. '/mean'
   end
   ctx.results:plot({ x = 'epoch', y = 'test_acc', runs = means, xlabel = 'epoch',
      ylabel = 'test accuracy (mean over seeds)',
      title = string.format('Fashion-MNIST (%d training images), small ResNet, %s',
         train_set.n, R.count_of(#config.seeds, 'seed')) })
   ctx.log('final test accuracy over seeds:')
   R.log_accuracy_table(ctx.log, rows)
end

return recipe
