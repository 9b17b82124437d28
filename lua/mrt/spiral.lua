-- mrt.spiral: the two-class spiral, a synthetic 2-D classification problem
-- defined by a seed.
--
-- Class c (0 or 1) lies on the Archimedean spiral r = t, angle
-- 2*pi*turns*t + c*pi, for t in (0, 1]: two interleaved arms that wind
-- `turns` times around the origin, half a turn apart, so along any ray from
-- the origin the classes alternate every 1/(2*turns) in radius. Each class
-- has points_per_class points at the evenly spaced t = i/points_per_class,
-- i = 1..points_per_class, and every coordinate gets independent Gaussian
-- noise of standard deviation `noise` drawn from mrt.random.new(seed).
--
--    local spiral = require 'mrt.spiral'
--    local dense = spiral.dataset({ points_per_class = 10000, turns = 4, noise = 0.01,
--       seed = 1 })
--    local train, test = spiral.subsample(dense, 0.05, 1)   -- 1000 / 19000 points

local data = require 'mrt.data'
local random = require 'mrt.random'
local tensor = require 'mrt.tensor'

local ffi = require('mrt.ffi').ffi

local M = {}

local DEFAULTS = { points_per_class = 10000, turns = 4, noise = 0.01, seed = 0 }

local function check_options(opts, level)
   local options = {}
   for key, value in pairs(opts or {}) do
      if DEFAULTS[key] == nil then
         error(string.format("spiral.dataset: unknown option '%s' (expected points_per_class, "
            .. 'turns, noise, seed)', tostring(key)), level + 1)
      end
      options[key] = value
   end
   for key, value in pairs(DEFAULTS) do
      if options[key] == nil then
         options[key] = value
      end
   end
   local n = options.points_per_class
   if type(n) ~= 'number' or n < 1 or n ~= math.floor(n) then
      error('spiral.dataset: points_per_class must be an integer >= 1, got ' .. tostring(n),
         level + 1)
   end
   if type(options.turns) ~= 'number' or options.turns <= 0 then
      error('spiral.dataset: turns must be a number > 0, got ' .. tostring(options.turns),
         level + 1)
   end
   if type(options.noise) ~= 'number' or options.noise < 0 then
      error('spiral.dataset: noise must be a number >= 0, got ' .. tostring(options.noise),
         level + 1)
   end
   return options
end

-- Builds the dense spiral as an mrt.data dataset of 2*points_per_class
-- float samples of shape {2} (x, y), class 0's points first, then class
-- 1's. opts (defaults): points_per_class (10000), turns (4), noise (0.01),
-- seed (0).
function M.dataset(opts)
   local options = check_options(opts, 2)
   local per_class = options.points_per_class
   local n = 2 * per_class
   local points = tensor.zeros({ n, 2 }, 'cpu')
   random.new(options.seed):fill_normal(points, 0, options.noise)
   local xy = points.c.data
   local labels = ffi.new('int32_t[?]', n)
   for c = 0, 1 do
      for i = 1, per_class do
         local t = i / per_class
         local angle = 2 * math.pi * options.turns * t + c * math.pi
         local k = c * per_class + i - 1
         xy[2 * k] = xy[2 * k] + t * math.cos(angle)
         xy[2 * k + 1] = xy[2 * k + 1] + t * math.sin(angle)
         labels[k] = c
      end
   end
   return data.dataset({ n = n, shape = { 2 }, classes = 2, images = points, labels = labels,
      name = string.format('spiral-%gturns', options.turns), class_names = { 'arm 0', 'arm 1' } })
end

-- Splits a dataset into a random subsample of round(fraction*n) samples
-- (the training set) and the rest (the held-out set), both in index order.
-- The subsample is the first samples of the permutation that
-- mrt.random.new(seed) draws (see mrt.data.split).
function M.subsample(dataset, fraction, seed)
   if type(fraction) ~= 'number' or fraction <= 0 or fraction >= 1 then
      error('spiral.subsample: fraction must be in (0, 1), got ' .. tostring(fraction), 2)
   end
   local m = math.floor(fraction * dataset.n + 0.5)
   if m < 1 or m >= dataset.n then
      error(string.format('spiral.subsample: fraction %g of %d samples leaves an empty set',
         fraction, dataset.n), 2)
   end
   local rest, sample = data.split(dataset, m, seed)
   return sample, rest
end

return M
