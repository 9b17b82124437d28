-- Specs for mrt.partition: part specs (patterns, kinds, input and output
-- layers, predicates, rest, fixed and random element masks), merged
-- flat-buffer ranges, and the errors for overlapping or empty parts.

local T = require 'mrt.tensor'
local random = require 'mrt.random'
local module = require 'mrt.nn.module'
local partition = require 'mrt.partition'

-- A model of plain parameter holders with MLP names: fc1 [4,3] + [4],
-- fc2 [2,4] + [2], fc3 [3,2] + [3]; `no_bias` lists layers without bias.
local Holder = module.class('Holder')

local function toy_model(no_bias)
   no_bias = no_bias or {}
   local root = setmetatable({}, Holder):init('cpu')
   for _, layer in ipairs({ { 'fc1', 4, 3 }, { 'fc2', 2, 4 }, { 'fc3', 3, 2 } }) do
      local child = setmetatable({}, Holder):init('cpu')
      child:add_param('weight', T.zeros({ layer[2], layer[3] }, 'cpu'), 'weight')
      if not no_bias[layer[1]] then
         child:add_param('bias', T.zeros({ layer[2] }, 'cpu'), 'bias')
      end
      root:add(layer[1], child)
   end
   root:flatten()
   return root
end

local function names(part)
   local out = {}
   for _, p in ipairs(part.entries) do
      out[#out + 1] = p.name
   end
   return table.concat(out, ',')
end

-- Offsets in the flat buffer: fc1.weight 0 (12), fc1.bias 12 (4), fc2.weight
-- 16 (8), fc2.bias 24 (2), fc3.weight 26 (6), fc3.bias 32 (3); 35 in all.

describe('partition.new', function()
   it('selects parameters by name pattern and merges touching ranges', function()
      local p = partition.new(toy_model(), { head = { '^fc3%.' }, body = 'rest' })
      assert.are.equal('fc3.weight,fc3.bias', names(p:part('head')))
      assert.are.same({ { offset = 26, count = 9, state_offset = 0 } }, p:part('head').ranges)
      assert.are.equal('fc1.weight,fc1.bias,fc2.weight,fc2.bias', names(p:part('body')))
      assert.are.same({ { offset = 0, count = 26, state_offset = 0 } }, p:part('body').ranges)
      assert.are.same({ 'body', 'head' }, p.names)
   end)

   it('keeps separate ranges for parameters that do not touch', function()
      local p = partition.new(toy_model(), { biases = { kind = 'bias' } })
      local part = p:part('biases')
      assert.are.equal('fc1.bias,fc2.bias,fc3.bias', names(part))
      assert.are.same({
         { offset = 12, count = 4, state_offset = 0 },
         { offset = 24, count = 2, state_offset = 4 },
         { offset = 32, count = 3, state_offset = 6 },
      }, part.ranges)
      assert.are.equal(9, part.numel)
   end)

   it('takes a string pattern, a list of patterns and a predicate', function()
      local p = partition.new(toy_model(), {
         a = '^fc1%.weight$',
         b = { '^fc2%.bias$', '^fc3%.bias$' },
         c = function(name) return name == 'fc2.weight' end,
      })
      assert.are.equal('fc1.weight', names(p:part('a')))
      assert.are.equal('fc2.bias,fc3.bias', names(p:part('b')))
      assert.are.equal('fc2.weight', names(p:part('c')))
   end)

   it('combines criteria of one spec with and', function()
      local p = partition.new(toy_model(), { x = { '^fc[12]%.', kind = 'weight' } })
      assert.are.equal('fc1.weight,fc2.weight', names(p:part('x')))
   end)

   it('selects the biases of the input or the output layer', function()
      local p = partition.new(toy_model(), {
         input_bias = { kind = 'bias', layer = 'input' },
         output_bias = { kind = 'bias', layer = 'output' },
      })
      assert.are.equal('fc1.bias', names(p:part('input_bias')))
      assert.are.equal('fc3.bias', names(p:part('output_bias')))
      local q = partition.new(toy_model(), { out = { layer = 'output' } })
      assert.are.equal('fc3.weight,fc3.bias', names(q:part('out')))
   end)

   it('puts parameters in no part when there is no rest', function()
      local p = partition.new(toy_model(), { head = '^fc3%.' })
      assert.are.same({ 'head' }, p.names)
   end)

   it('attaches fixed masks and selects the masked parameters', function()
      local model = toy_model()
      local mask = T.from_table({ 1, 0, 0, 1, 1, 0, 0, 0 }, { 2, 4 }, 'cpu')
      local p = partition.new(model, { m = { masks = { ['fc2.weight'] = mask } } })
      local part = p:part('m')
      assert.are.equal('fc2.weight', names(part))
      assert.are.same(mask:totable(), part.masks['fc2.weight']:totable())
   end)

   it('draws random masks with each layer\'s probability from a seed', function()
      local model = toy_model()
      local prob = { ['^fc1%.'] = 0.8, ['^fc2%.'] = 0.25 }
      local p = partition.new(model, { slow = { random = { prob = prob, seed = 11 } } })
      local part = p:part('slow')
      -- Only weights, and only those with a probability.
      assert.are.equal('fc1.weight,fc2.weight', names(part))
      -- The masks are the generator's Bernoulli draws, in parameter order.
      local rng = random.new(11)
      local expect1 = rng:fill_bernoulli(T.zeros({ 4, 3 }, 'cpu'), 0.8)
      local expect2 = rng:fill_bernoulli(T.zeros({ 2, 4 }, 'cpu'), 0.25)
      assert.are.same(expect1:totable(), part.masks['fc1.weight']:totable())
      assert.are.same(expect2:totable(), part.masks['fc2.weight']:totable())
   end)

   it('draws masks of the expected density', function()
      -- 100000 Bernoulli(0.3) draws: standard error 0.0014, the check allows 0.01.
      local root = setmetatable({}, Holder):init('cpu')
      root:add_param('weight', T.zeros({ 100000 }, 'cpu'), 'weight')
      root:flatten()
      local part = partition.new(root, { s = { random = { prob = 0.3 } } }):part('s')
      local density = part.masks.weight:sum() / 100000
      assert.is_true(math.abs(density - 0.3) < 0.01, 'density ' .. density)
   end)

   it('rejects overlapping parts, naming the parameter', function()
      assert.has_error(function()
         partition.new(toy_model(), { a = { '^fc1%.' }, b = { kind = 'bias' } })
      end, "partition: parameter 'fc1.bias' is in both part 'a' and part 'b'")
   end)

   it('rejects a pattern that matches nothing, naming it', function()
      assert.has_error(function()
         partition.new(toy_model(), { a = { '^fc1%.', '^conv' } })
      end, "partition: part 'a': pattern '^conv' matches no parameter")
   end)

   it('rejects a part that selects nothing, naming its criteria', function()
      assert.has_error(function()
         partition.new(toy_model({ fc1 = true }), { a = { kind = 'bias', layer = 'input' } })
      end, "partition: part 'a' (kind 'bias', layer 'input' (the input layer is 'fc1')) "
         .. 'matches no parameter')
      assert.has_error(function()
         partition.new(toy_model(), { a = '^fc', b = 'rest' })
      end, "partition: part 'b' (rest) matches no parameter: the other parts claim them all")
   end)

   it('rejects malformed specs', function()
      local model = toy_model()
      assert.has_error(function() partition.new(model, { a = { kinds = 'bias' } }) end,
         "partition: part 'a': unknown spec key 'kinds' (valid keys: kind, layer, masks, "
         .. 'predicate, random, rest, and patterns as list items)')
      assert.has_error(function() partition.new(model, { a = { kind = 'biases' } }) end,
         "partition: part 'a': kind is 'biases' (expected 'weight' or 'bias')")
      assert.has_error(function() partition.new(model, { a = 'rest', b = { rest = true } }) end,
         "partition.new: parts 'a' and 'b' are both 'rest'")
      assert.has_error(function() partition.new(model, { a = { rest = true, kind = 'bias' } }) end,
         "partition: part 'a': rest = true takes no other criterion")
      assert.has_error(function() partition.new(model, {}) end,
         'partition.new: specs must be a non-empty table mapping part names to specs')
      assert.has_error(function()
         partition.new(model, { a = { random = { prob = 1.5 } } })
      end, "partition: part 'a': random.prob is 1.5 (expected a probability in [0, 1])")
      assert.has_error(function()
         partition.new(model, { a = { random = { p = 0.5 } } })
      end, "partition: part 'a': random: unknown option 'p' (valid options: prob, seed)")
   end)

   it('rejects malformed masks', function()
      local model = toy_model()
      assert.has_error(function()
         partition.new(model, { m = { masks = { ['fc2.weight'] = T.zeros({ 8 }, 'cpu') } } })
      end, "partition: part 'm': mask of 'fc2.weight' has shape [8], expected [2,4]")
      assert.has_error(function()
         local half = T.zeros({ 2, 4 }, 'cpu'):fill(0.5)
         partition.new(model, { m = { masks = { ['fc2.weight'] = half } } })
      end, "partition: part 'm': mask of 'fc2.weight' has value 0.5 at element 1 (expected 0 "
         .. 'or 1)')
      assert.has_error(function()
         partition.new(model, { m = { masks = { ['fc9.weight'] = T.zeros({ 2, 4 }, 'cpu') } } })
      end, "partition: part 'm': mask given for 'fc9.weight', which is not a parameter of the "
         .. 'model')
   end)

   it('requires a flattened model', function()
      local root = setmetatable({}, Holder):init('cpu')
      assert.has_error(function() partition.new(root, { a = 'rest' }) end,
         'partition.new: the model is not flattened; call model:flatten() first')
   end)
end)

describe('the rest beside a masked part', function()
   it('takes the other elements of the masked parameters', function()
      local model = toy_model()
      local mask = T.from_table({ 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0 }, { 4, 3 }, 'cpu')
      local p = partition.new(model, { slow = { masks = { ['fc1.weight'] = mask } },
         fast = 'rest' })
      local fast = p:part('fast')
      assert.are.equal('fc1.weight,fc1.bias,fc2.weight,fc2.bias,fc3.weight,fc3.bias',
         names(fast))
      assert.is_true(fast:has_complements())
      assert.is_false(p:part('slow'):has_complements())
      local runs = fast:runs()
      assert.are.equal(2, #runs)
      assert.are.equal(0, runs[1].offset)
      assert.are.equal(12, runs[1].count)
      assert.are.equal(0, runs[1].on)
      assert.are.equal(p:part('slow').masks['fc1.weight'], runs[1].mask)
      assert.are.same({ offset = 12, count = 23, state_offset = 12 }, runs[2])
      assert.are.equal('fast: fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, '
         .. 'fc3.bias (29 elements in 1 ranges, masked)', fast:describe())
      assert.are.equal('slow: fc1.weight (6 elements in 1 ranges, masked)',
         p:part('slow'):describe())
   end)

   it('is what partition.complement builds for one part', function()
      local model = toy_model()
      local part = partition.part(model, { '^fc2%.w', random = { prob = 0.5, seed = 3 } },
         'slow')
      local rest = partition.complement(part, 'fast')
      assert.are.equal('fc1.weight,fc1.bias,fc2.weight,fc2.bias,fc3.weight,fc3.bias',
         names(rest))
      assert.are.equal(part.masks['fc2.weight'], rest.masks['fc2.weight'])
      assert.are.equal(35, rest.numel)
      local plain = partition.complement(partition.part(model, '^fc3%.', 'head'), 'body')
      assert.are.equal('fc1.weight,fc1.bias,fc2.weight,fc2.bias', names(plain))
      assert.is_nil(plain.masks)
      -- The complement of the rest is the masked part's elements again.
      local back = partition.complement(rest, 'slow')
      assert.are.equal('fc2.weight', names(back))
      assert.are.equal(1, back.mask_list[1].on)
      assert.are.equal(part.masks['fc2.weight'], back.masks['fc2.weight'])
   end)

   it('copies fixed masks and rejects masks without a single 1', function()
      local model = toy_model()
      local mask = T.from_table({ 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0 }, { 4, 3 }, 'cpu')
      local part = partition.part(model, { masks = { ['fc1.weight'] = mask } }, 'slow')
      assert.are_not.equal(mask, part.masks['fc1.weight'])
      mask:fill(0)
      assert.are.equal(1, part.masks['fc1.weight']:totable()[1])
      assert.has_error(function()
         partition.part(model, { masks = { ['fc1.weight'] = mask } }, 'slow')
      end, "partition: part 'slow': every mask is 0, so the part has no element (set some "
         .. 'elements to 1)')
   end)

   it('rejects probabilities that are not in [0, 1]', function()
      local model = toy_model()
      local function spec(prob)
         return { random = { prob = prob } }
      end
      assert.has_error(function() partition.part(model, spec(0 / 0), 'r') end,
         "partition: part 'r': random.prob is " .. tostring(0 / 0)
         .. ' (expected a probability in [0, 1])')
      assert.has_error(function() partition.part(model, spec({ ['^fc1'] = 0 / 0 }), 'r') end,
         "partition: part 'r': random.prob['^fc1'] is " .. tostring(0 / 0)
         .. ' (expected a map from name pattern to a probability in [0, 1])')
      assert.has_error(function() partition.part(model, spec(function() return 2 end), 'r') end,
         "partition: part 'r': random.prob returned 2 for 'fc1.weight' (expected a "
         .. 'probability in [0, 1])')
      assert.has_error(function() partition.part(model, spec(function() end), 'r') end,
         "partition: part 'r': random.prob returned nil for 'fc1.weight' (expected a "
         .. 'probability in [0, 1])')
      assert.has_error(function() partition.part(model, spec({ ['[fc'] = 0.5 }), 'r') end,
         "partition: part 'r': random.prob pattern '[fc' is not a valid Lua pattern "
         .. "(malformed pattern (missing ']'))")
   end)
end)

describe('Partition:part', function()
   it('names the parts when the name is unknown', function()
      local p = partition.new(toy_model(), { head = '^fc3', body = 'rest' })
      assert.has_error(function() p:part('tail') end,
         "partition: no part named 'tail' (parts: body, head)")
   end)
end)

describe('Part:redraw', function()
   it('draws new masks and resumes the same stream after load_state', function()
      local p = partition.new(toy_model(), { s = { random = { prob = 0.5, seed = 4 } } })
      local part = p:part('s')
      local first = part.masks['fc1.weight']:totable()
      local state = p:state()
      part:redraw()
      local second = part.masks['fc1.weight']:totable()
      assert.are_not.same(first, second)
      p:load_state(state)
      assert.are.same(first, part.masks['fc1.weight']:totable())
      part:redraw()
      assert.are.same(second, part.masks['fc1.weight']:totable())
   end)

   it('is an error on a part without random masks', function()
      local part = partition.new(toy_model(), { a = '^fc1' }):part('a')
      assert.has_error(function() part:redraw() end,
         "partition: part 'a' has no random masks to redraw")
   end)
end)

describe('partition.part', function()
   it('builds one part, where rest means every parameter', function()
      local model = toy_model()
      assert.are.equal(6, #partition.part(model, 'rest').entries)
      assert.are.equal('fc2.weight', names(partition.part(model, '^fc2%.w')))
   end)

   it('notices a model flattened again after the part was built', function()
      local model = toy_model()
      local part = partition.part(model, 'rest')
      model.flat = nil
      model:flatten()
      assert.has_error(function() part:check_current('optim.sgd') end,
         "optim.sgd: part 'params' was built before the model was flattened again; build the "
         .. 'partition again')
   end)
end)
