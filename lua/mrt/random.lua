-- mrt.random: the engine's seeded Philox generator, for initialisation,
-- shuffling, masks and noise. A Generator's whole state is (seed, counter),
-- so saving both fields reproduces the stream.

local lib = require 'mrt.ffi'

local ffi, C = lib.ffi, lib.C

local M = {}

local Generator = {}
Generator.__index = Generator
M.Generator = Generator

-- Seeds stay below 2^53, where Lua numbers hold every integer exactly, so
-- that get_state returns the seed unchanged.
local SEED_BOUND = 2 ^ 53

-- True when v is an integer in [0, bound).
local function is_count(v, bound)
   return type(v) == 'number' and v >= 0 and v == math.floor(v) and v < bound
end

function M.new(seed)
   if not is_count(seed, SEED_BOUND) then
      error('random.new: seed must be an integer in [0, 2^53), got ' .. tostring(seed), 2)
   end
   local g = setmetatable({ state = ffi.new('mrt_rng') }, Generator)
   C.mrt_rng_init(g.state, seed)
   return g
end

function Generator:get_state()
   return { seed = tonumber(self.state.seed), counter = tonumber(self.state.counter) }
end

-- The problem with a state for set_state, or nil when it is valid: a table
-- { seed =, counter = } of integers in [0, 2^64), the range of the C fields.
function M.state_error(s)
   if type(s) ~= 'table' then
      return 'expected {seed=, counter=} from get_state, got ' .. tostring(s)
   end
   for _, key in ipairs({ 'seed', 'counter' }) do
      if not is_count(s[key], 2 ^ 64) then
         return string.format('%s is %s (expected an integer in [0, 2^64))', key,
            tostring(s[key]))
      end
   end
   return nil
end

function Generator:set_state(s)
   local problem = M.state_error(s)
   if problem ~= nil then
      error('set_state: ' .. problem, 2)
   end
   self.state.seed = s.seed
   self.state.counter = s.counter
end

-- Uniform number in [0, 1).
function Generator:uniform()
   return C.mrt_rng_uniform(self.state)
end

-- Integer in [lo, hi], both included.
function Generator:integer(lo, hi)
   return lo + math.floor(C.mrt_rng_uniform(self.state) * (hi - lo + 1))
end

local function host_fill(t, fill)
   if t.device == 'cpu' then
      fill(t.c.data)
      return t
   end
   local host = t:to('cpu')
   fill(host.c.data)
   t:copy(host)
   return t
end

function Generator:fill_uniform(t, lo, hi)
   return host_fill(t, function(p) C.mrt_rng_fill_uniform(self.state, p, t:numel(), lo, hi) end)
end

function Generator:fill_normal(t, mean, std)
   return host_fill(t, function(p) C.mrt_rng_fill_normal(self.state, p, t:numel(), mean, std) end)
end

function Generator:fill_bernoulli(t, p)
   return host_fill(t, function(ptr) C.mrt_rng_fill_bernoulli(self.state, ptr, t:numel(), p) end)
end

-- A random permutation of 1..n as a Lua list.
function Generator:permutation(n)
   if not is_count(n, SEED_BOUND) then
      error('permutation: n must be a non-negative integer, got ' .. tostring(n), 2)
   end
   local buf = ffi.new('int64_t[?]', math.max(n, 1))
   C.mrt_rng_permutation(self.state, buf, n)
   local out = {}
   for i = 0, n - 1 do
      out[i + 1] = tonumber(buf[i]) + 1
   end
   return out
end

return M
