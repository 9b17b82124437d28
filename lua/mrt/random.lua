-- mrt.random: the engine's seeded Philox generator, for initialisation,
-- shuffling, masks and noise. A Generator's whole state is (seed, counter),
-- so saving both fields reproduces the stream.

local lib = require 'mrt.ffi'

local ffi, C = lib.ffi, lib.C

local M = {}

local Generator = {}
Generator.__index = Generator
M.Generator = Generator

function M.new(seed)
   if type(seed) ~= 'number' or seed < 0 or seed ~= math.floor(seed) then
      error('random.new: seed must be a non-negative integer, got ' .. tostring(seed), 2)
   end
   local g = setmetatable({ state = ffi.new('mrt_rng') }, Generator)
   C.mrt_rng_init(g.state, seed)
   return g
end

function Generator:get_state()
   return { seed = tonumber(self.state.seed), counter = tonumber(self.state.counter) }
end

function Generator:set_state(s)
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
   local buf = ffi.new('int64_t[?]', math.max(n, 1))
   C.mrt_rng_permutation(self.state, buf, n)
   local out = {}
   for i = 0, n - 1 do
      out[i + 1] = tonumber(buf[i]) + 1
   end
   return out
end

return M
