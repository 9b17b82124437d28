-- Specs for mrt.spiral: the points lie on the two interleaved spirals, the
-- noise comes from the seed, and the subsample splits the points.

local spiral = require 'mrt.spiral'

-- The message of the error fn raises, without a "file:line: " prefix.
local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert(not ok, 'expected an error')
   return (tostring(err):gsub('^[^:]*:%d+: ', ''))
end

local function point(ds, i)
   local xy = ds.images.c.data
   return xy[2 * (i - 1)], xy[2 * (i - 1) + 1]
end

describe('dataset', function()
   it('puts noiseless points on r = t, angle 2*pi*turns*t + c*pi', function()
      local ds = spiral.dataset({ points_per_class = 50, turns = 4, noise = 0 })
      assert.are.equal(100, ds.n)
      assert.are.same({ 2 }, ds.shape)
      assert.are.equal(2, ds.classes)
      for c = 0, 1 do
         for i = 1, 50 do
            local t = i / 50
            local angle = 2 * math.pi * 4 * t + c * math.pi
            local x, y = point(ds, c * 50 + i)
            -- Coordinates are float32, whose spacing near 1 is 1.2e-7.
            assert.is_true(math.abs(x - t * math.cos(angle)) < 1e-6)
            assert.is_true(math.abs(y - t * math.sin(angle)) < 1e-6)
            assert.are.equal(c, ds:label(c * 50 + i))
         end
      end
   end)

   it('adds noise of the given standard deviation', function()
      local clean = spiral.dataset({ points_per_class = 5000, noise = 0 })
      local noisy = spiral.dataset({ points_per_class = 5000, noise = 0.1, seed = 3 })
      local sum, sum2, n = 0, 0, 2 * clean.n
      for i = 0, n - 1 do
         local d = noisy.images.c.data[i] - clean.images.c.data[i]
         sum, sum2 = sum + d, sum2 + d * d
      end
      local mean = sum / n
      local std = math.sqrt(sum2 / n - mean * mean)
      -- 20000 draws: the standard error of the mean is 0.1/sqrt(20000) = 7e-4 and that
      -- of the standard deviation about 5e-4, so 5e-3 is about ten standard errors.
      assert.is_true(math.abs(mean) < 5e-3)
      assert.is_true(math.abs(std - 0.1) < 5e-3)
   end)

   it('draws the same points from the same seed', function()
      local a = spiral.dataset({ points_per_class = 20, seed = 7 })
      local b = spiral.dataset({ points_per_class = 20, seed = 7 })
      local c = spiral.dataset({ points_per_class = 20, seed = 8 })
      local same, differ = true, false
      for i = 0, 2 * a.n - 1 do
         same = same and a.images.c.data[i] == b.images.c.data[i]
         differ = differ or a.images.c.data[i] ~= c.images.c.data[i]
      end
      assert.is_true(same)
      assert.is_true(differ)
   end)

   it('rejects an unknown option', function()
      assert.are.equal("spiral.dataset: unknown option 'points' (expected points_per_class, "
         .. 'turns, noise, seed)', error_of(spiral.dataset, { points = 10 }))
   end)

   it('rejects bad values', function()
      assert.are.equal('spiral.dataset: points_per_class must be an integer >= 1, got 0.5',
         error_of(spiral.dataset, { points_per_class = 0.5 }))
      assert.are.equal('spiral.dataset: turns must be a number > 0, got 0',
         error_of(spiral.dataset, { turns = 0 }))
      assert.are.equal('spiral.dataset: noise must be a number >= 0, got -1',
         error_of(spiral.dataset, { noise = -1 }))
   end)
end)

describe('subsample', function()
   it('splits into a fraction and the rest', function()
      local ds = spiral.dataset({ points_per_class = 100, noise = 0 })
      local sample, rest = spiral.subsample(ds, 0.05, 1)
      assert.are.equal(10, sample.n)
      assert.are.equal(190, rest.n)
      -- Noiseless points are distinct, so each point of the sample must be missing from
      -- the rest.
      local seen = {}
      for i = 1, rest.n do
         local x, y = point(rest, i)
         seen[x .. ',' .. y] = true
      end
      for i = 1, sample.n do
         local x, y = point(sample, i)
         assert.is_nil(seen[x .. ',' .. y])
      end
   end)

   it('rejects a fraction outside (0, 1)', function()
      local ds = spiral.dataset({ points_per_class = 10 })
      assert.are.equal('spiral.subsample: fraction must be in (0, 1), got 1',
         error_of(spiral.subsample, ds, 1, 0))
      assert.are.equal('spiral.subsample: fraction 0.01 of 20 samples leaves an empty set',
         error_of(spiral.subsample, ds, 0.01, 0))
   end)
end)
