-- spiral_slow_biases: multirate with slow biases on the 4-turn spiral.
--
-- Data (mrt.spiral, generated from each seed): two classes on the
-- interleaved Archimedean spirals r = t, angle 2*pi*turns*t + c*pi (class c
-- = 0 or 1), t = i/points_per_class for i = 1..points_per_class, with
-- Gaussian noise of standard deviation `noise` on each coordinate. With the
-- defaults that is 2 x 10000 points of 4 turns, radius up to 1, noise 0.01.
-- The training set is a random 5% subsample of these dense points (1000
-- points). The test set is a random sample of test_points (4000) of the
-- other 95%, which keeps the evaluation after each of the 1000 epochs cheap.
--
-- Model: the one-hidden-layer perceptron mrt.models.mlp, 2 -> hidden ->
-- ReLU -> 2, trained with cross-entropy. The input layer's biases are
-- fc1.bias, the output layer's fc2.bias.
--
-- Compared, each from the same weights, data and minibatch order per seed
-- (lr is the step of every iteration, h = lr*k the slow step):
--    sgd                 SGD with step lr (0.2) on every parameter.
--    slow_biases         Multirate SGD with linear drift: weights fast (step
--                        lr), all biases slow. The biases take their
--                        gradient once per block of k = 5 iterations and
--                        move h/k along it on each iteration, h = 1 per
--                        block.
--    slow_output_biases  As slow_biases, but only fc2.bias is slow.
--    slow_input_biases   As slow_biases, but only fc1.bias is slow.
--    biases_no_wait      The biases on the other scale without waiting:
--                        k = 1, so on every iteration the weights step lr
--                        and all biases step h = lr*k, k times larger.
--    frozen_same_step    Ablation: all biases stay frozen for k-1
--                        iterations, then take one step of lr (the weights'
--                        step) with the gradient of the block's last
--                        iteration.
-- Every approach runs once per seed. The table printed at the end gives the
-- mean, min and max over seeds of the final test accuracy.

local mrt = require 'mrt'
local spiral = require 'mrt.spiral'
local R = require 'mrt.recipe'

local data, models, optim, random, train, util = mrt.data, mrt.models, mrt.optim, mrt.random,
   mrt.train, mrt.util

local ALL = { 'sgd', 'slow_biases', 'slow_output_biases', 'slow_input_biases',
   'biases_no_wait', 'frozen_same_step' }

local recipe = {
   name = 'spiral_slow_biases',
   description = 'one-hidden-layer perceptron on the 4-turn spiral: SGD vs multirate with '
      .. 'slow biases and its ablations',
   config = {
      seeds = { 1, 2, 3, 4, 5 },    -- one run per approach and seed (data, weights, order)
      points_per_class = 10000,     -- dense spiral points per class
      turns = 4,
      noise = 0.01,                 -- standard deviation of the noise on each coordinate
      train_fraction = 0.05,        -- share of the dense points used for training
      test_points = 4000,           -- held-out points evaluated after each epoch
      hidden = 500,                 -- hidden units
      epochs = 1000,
      batch_size = 10,
      lr = 0.2,                     -- step per iteration: SGD's step, the fast step h/k
      k = 5,                        -- multirate block length, slow step h = lr*k
      momentum = 0,
      approaches = ALL,
   },
}

-- Returns the optim.multirate options of an approach, or nil for SGD.
local function multirate_options(approach, config)
   local h = config.lr * config.k
   local biases = { kind = 'bias' }
   local options = { lr = h, k = config.k, momentum = config.momentum, slow = biases }
   if approach == 'slow_output_biases' then
      options.slow = { kind = 'bias', layer = 'output' }
   elseif approach == 'slow_input_biases' then
      options.slow = { kind = 'bias', layer = 'input' }
   elseif approach == 'biases_no_wait' then
      options.k = 1
      options.parts = { fast = { lr = config.lr } }
   elseif approach == 'frozen_same_step' then
      options.drift, options.slow_at = false, 'end'
      options.parts = { slow = { lr = config.lr } }
   elseif approach ~= 'slow_biases' then
      return nil
   end
   return options
end

local function optimizer_for(approach, model, config)
   local options = multirate_options(approach, config)
   if options == nil then
      return optim.sgd(model, { lr = config.lr, momentum = config.momentum })
   end
   return optim.multirate(model, options)
end

-- Returns the attributes of one run: the settings that define it. The
-- slow part's step is per update, once per block of k iterations.
local function settings(approach, config, seed)
   local attrs = { method = approach, seed = seed, lr = config.lr, momentum = config.momentum,
      batch_size = config.batch_size, epochs = config.epochs, hidden = config.hidden, k = 1,
      drift = false, slow = 'none' }
   local options = multirate_options(approach, config)
   if options == nil then
      return attrs
   end
   local parts = options.parts or {}
   attrs.k, attrs.step_h, attrs.drift = options.k, options.lr, options.drift ~= false
   attrs.slow = util.render(options.slow)
   attrs.slow_step = parts.slow and parts.slow.lr or options.lr
   attrs.fast_step = parts.fast and parts.fast.lr or options.lr / options.k
   attrs.slow_at = options.slow_at or 'start'
   return attrs
end

-- Fails on an invalid option before any data is generated.
local function check_config(config)
   local name = recipe.name
   R.check_seeds_and_approaches(name, config, ALL)
   R.check_integer(name, config, 'points_per_class', 1)
   R.check_number(name, config, 'turns', nil, nil, true)
   R.check_number(name, config, 'noise', 0)
   R.check_number(name, config, 'train_fraction', nil, 1, true)
   R.check_integer(name, config, 'test_points', 1)
   R.check_integer(name, config, 'hidden', 1)
   R.check_integer(name, config, 'epochs', 1)
   R.check_integer(name, config, 'batch_size', 1)
   R.check_number(name, config, 'lr', nil, nil, true)
   R.check_integer(name, config, 'k', 1)
   R.check_number(name, config, 'momentum', 0, 1)
end

function recipe.run(config, ctx)
   check_config(config)
   local histories = {}
   for _, approach in ipairs(config.approaches) do
      histories[approach] = {}
   end
   for i, seed in ipairs(config.seeds) do
      local dense = spiral.dataset({ points_per_class = config.points_per_class,
         turns = config.turns, noise = config.noise, seed = seed })
      local train_set, rest = spiral.subsample(dense, config.train_fraction, seed)
      local _, test_set = data.split(rest, math.min(config.test_points, rest.n), seed)
      local test = data.loader(test_set, { batch_size = 4096, shuffle = false,
         device = ctx.device })
      for _, approach in ipairs(config.approaches) do
         local model = models.mlp({ inputs = 2, hidden = config.hidden, classes = 2,
            rng = random.new(seed), device = ctx.device })
         model:flatten()
         local loader = data.loader(train_set, { batch_size = config.batch_size,
            shuffle = true, rng = random.new(seed), device = ctx.device })
         local name = approach .. '/seed' .. seed
         local history = train.fit({ model = model,
            optimizer = optimizer_for(approach, model, config), train = loader, test = test,
            epochs = config.epochs, label = name, profile = ctx.profile })
         ctx.results:add_run(name, history, settings(approach, config, seed))
         histories[approach][i] = history
      end
   end
   local rows, means = {}, {}
   for _, approach in ipairs(config.approaches) do
      rows[#rows + 1] = ctx.results:add_seed_summary(approach, config.seeds,
         histories[approach], settings(approach, config, nil))
      means[#means + 1] = approach .. '/mean'
   end
   ctx.results:plot({ x = 'epoch', y = 'test_acc', runs = means, xlabel = 'epoch',
      ylabel = 'test accuracy (mean over seeds)', style = 'lines', key = 'top left',
      title = string.format('%g-turn spiral, %g%% training subsample, %s', config.turns,
         100 * config.train_fraction, R.count_of(#config.seeds, 'seed')) })
   ctx.log('final test accuracy over seeds:')
   R.log_accuracy_table(ctx.log, rows)
end

return recipe
