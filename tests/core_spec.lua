-- Specs for the engine core of mrt_core.h and its Lua wrappers: the error
-- message of a failed allocation, the thread-count limit, and the checks on
-- seeds and states of mrt.random generators.

local lib = require 'mrt.ffi'
local random = require 'mrt.random'
local T = require 'mrt.tensor'

local ffi, C = lib.ffi, lib.C

-- The message of the error fn raises, without the "file:line: " prefix.
local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert(not ok, 'expected an error')
   return (tostring(err):gsub('^[^:]*:%d+: ', ''))
end

-- 2^62 bytes: more than any x86-64 address space, so the allocation fails.
local TOO_MANY_BYTES = 2 ^ 62

describe('mrt_alloc', function()
   it('reports its own failure after another error', function()
      assert.are_not.equal(0, C.mrt_threads_set(-1))
      assert.truthy(ffi.string(C.mrt_error_message()):match('^mrt_threads_set: '))
      assert.are.equal(nil, C.mrt_alloc(0, TOO_MANY_BYTES))
      assert.are.equal('mrt_alloc: out of memory allocating 4611686018427387904 bytes on cpu',
         ffi.string(C.mrt_error_message()))
   end)

   it('reports a tensor allocation failure', function()
      -- A shape error from the engine, then an allocation that cannot succeed.
      local a, b = T.zeros({ 2 }, 'cpu'), T.zeros({ 3 }, 'cpu')
      assert.truthy(error_of(a.copy, a, b):match('^mrt_tensor_copy: '))
      assert.are.equal('mrt_alloc: out of memory allocating 4611686018427387904 bytes on cpu',
         error_of(T.zeros, { 2 ^ 60 }, 'cpu'))
   end)

   it('reports a negative size', function()
      assert.are.equal(nil, C.mrt_alloc(0, -4))
      assert.are.equal('mrt_alloc: negative size -4', ffi.string(C.mrt_error_message()))
   end)
end)

describe('mrt_threads_set', function()
   local before

   before_each(function()
      before = C.mrt_threads_get()
   end)

   after_each(function()
      assert.are.equal(0, C.mrt_threads_set(before))
   end)

   -- The limit is 4 threads per core, and at least 64. nproc counts the
   -- cores this process may use, as omp_get_num_procs does, unless
   -- OMP_NUM_THREADS or OMP_THREAD_LIMIT is set, so both are removed.
   local function limit()
      local pipe = io.popen('env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc')
      local procs = tonumber(pipe:read('*l'))
      pipe:close()
      return math.max(64, 4 * procs), procs
   end

   it('rejects more threads than the limit', function()
      local max, procs = limit()
      for _, n in ipairs({ max + 1, 65536, 2 ^ 31 - 1 }) do
         assert.are_not.equal(0, C.mrt_threads_set(n))
         assert.are.equal(string.format('mrt_threads_set: %d threads (expected 0 for all cores, '
            .. 'or 1 to %d: 4 per core on %d cores, at least 64)', n, max, procs),
            ffi.string(C.mrt_error_message()))
      end
   end)

   it('rejects a negative count', function()
      local max, procs = limit()
      assert.are_not.equal(0, C.mrt_threads_set(-1))
      assert.are.equal(string.format('mrt_threads_set: -1 threads (expected 0 for all cores, or '
         .. '1 to %d: 4 per core on %d cores, at least 64)', max, procs),
         ffi.string(C.mrt_error_message()))
   end)

   it('accepts the limit and 0 for all cores', function()
      local max, procs = limit()
      assert.are.equal(0, C.mrt_threads_set(max))
      assert.are.equal(max, C.mrt_threads_get())
      assert.are.equal(0, C.mrt_threads_set(0))
      assert.are.equal(procs, C.mrt_threads_get())
   end)
end)

describe('random.new', function()
   it('rejects seeds from 2^53 on', function()
      for _, seed in ipairs({ 2 ^ 53, 2 ^ 64, -1, 0.5, math.huge }) do
         assert.are.equal('random.new: seed must be an integer in [0, 2^53), got '
            .. tostring(seed), error_of(random.new, seed))
      end
   end)

   it('returns the largest seed unchanged', function()
      assert.are.same({ seed = 2 ^ 53 - 1, counter = 0 }, random.new(2 ^ 53 - 1):get_state())
   end)
end)

describe('Generator:permutation', function()
   it('rejects a negative or fractional length', function()
      local g = random.new(1)
      assert.are.equal('permutation: n must be a non-negative integer, got -1',
         error_of(g.permutation, g, -1))
      assert.are.equal('permutation: n must be a non-negative integer, got 2.5',
         error_of(g.permutation, g, 2.5))
      assert.are.same({}, g:permutation(0))
   end)
end)

describe('Generator fills', function()
   -- 70001 values take the threaded path (from 65536 on). Every fill reads
   -- the stream in order, so one long fill equals a short fill and then the
   -- rest.
   local N = 70001

   local function pieces(kind, seed, args)
      local g = random.new(seed)
      g:uniform()                       -- start off a Philox block boundary
      local head = g[kind](g, T.zeros({ 5 }, 'cpu'), unpack(args)):totable()
      local tail = g[kind](g, T.zeros({ N - 5 }, 'cpu'), unpack(args)):totable()
      return head, tail, g:get_state()
   end

   for _, case in ipairs({ { 'fill_uniform', { -1, 2 }, 1 }, { 'fill_normal', { 0.5, 2 }, 2 },
      { 'fill_bernoulli', { 0.3 }, 1 } }) do
      local kind, args, words = case[1], case[2], case[3]
      it(kind .. ' gives the same values on 1 and 2 threads', function()
         local runs = {}
         for threads = 1, 2 do
            lib.check(C.mrt_threads_set(threads))
            local g = random.new(11)
            g:uniform()
            runs[threads] = g[kind](g, T.zeros({ N }, 'cpu'), unpack(args)):totable()
            assert.are.same({ seed = 11, counter = 1 + words * N }, g:get_state())
         end
         lib.check(C.mrt_threads_set(0))
         assert.are.same(runs[1], runs[2])
         local head, tail = pieces(kind, 11, args)
         for i = 1, 5 do
            assert.are.equal(runs[1][i], head[i])
         end
         for i = 1, N - 5 do
            assert.are.equal(runs[1][i + 5], tail[i])
         end
      end)
   end
end)

describe('Generator:set_state', function()
   it('rejects a state that is not {seed=, counter=}', function()
      local g = random.new(1)
      assert.are.equal('set_state: counter is nil (expected an integer in [0, 2^64))',
         error_of(g.set_state, g, { seed = 1 }))
      assert.are.equal('set_state: seed is -1 (expected an integer in [0, 2^64))',
         error_of(g.set_state, g, { seed = -1, counter = 0 }))
      assert.are.equal('set_state: expected {seed=, counter=} from get_state, got 5',
         error_of(g.set_state, g, 5))
      assert.are.same({ seed = 1, counter = 0 }, g:get_state())
   end)
end)
