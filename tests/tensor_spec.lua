-- Specs for mrt.tensor and the shape checks of engine/tensor.c: shapes
-- whose element count or size in bytes does not fit in int64, values that
-- are not numbers, and label buffers of an invalid length.

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'

local ffi, C = lib.ffi, lib.C

-- The message of the error fn raises, without the "file:line: " prefix.
local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert(not ok, 'expected an error')
   return (tostring(err):gsub('^[^:]*:%d+: ', ''))
end

local SIZE_RULE = 'sizes and the element count must be below 2^61 so that the size in bytes '
   .. 'fits in int64'

describe('zeros', function()
   it('rejects an element count beyond int64', function()
      assert.are.equal('tensor shape [10000000,10000000,10000000] is too large '
         .. '(1000000000000000000000 elements; ' .. SIZE_RULE .. ')',
         error_of(T.zeros, { 1e7, 1e7, 1e7 }))
      assert.are.equal('tensor shape [4294967296,4294967296] is too large '
         .. '(18446744073709551616 elements; ' .. SIZE_RULE .. ')',
         error_of(T.zeros, { 2 ^ 32, 2 ^ 32 }))
   end)

   it('rejects a size in bytes beyond int64', function()
      -- 2^61 floats take 2^63 bytes, one more than int64 holds.
      assert.are.equal('tensor shape [2305843009213693952] is too large '
         .. '(2305843009213693952 elements; ' .. SIZE_RULE .. ')', error_of(T.zeros, { 2 ^ 61 }))
   end)

   it('rejects a huge size next to a zero', function()
      assert.are.equal('tensor shape [0,1180591620717411303424] is too large (0 elements; '
         .. SIZE_RULE .. ')', error_of(T.zeros, { 0, 2 ^ 70 }))
   end)

   it('rejects infinite and fractional sizes', function()
      assert.are.equal('tensor size 1 is inf (expected a non-negative integer)',
         error_of(T.zeros, { math.huge }))
      assert.are.equal('tensor size 2 is 1.5 (expected a non-negative integer)',
         error_of(T.zeros, { 2, 1.5 }))
      assert.are.equal('tensor size 1 is nan (expected a non-negative integer)',
         error_of(T.zeros, { 0 / 0 }))
   end)

   it('reports running out of memory with its size', function()
      -- 2^60 floats are 2^62 bytes, more than any x86-64 address space.
      assert.are.equal('mrt_alloc: out of memory allocating 4611686018427387904 bytes on cpu',
         error_of(T.zeros, { 2 ^ 60 }, 'cpu'))
   end)

   it('creates empty tensors', function()
      assert.are.equal(0, T.zeros({ 0, 2 ^ 40 }, 'cpu'):numel())
   end)
end)

describe('view', function()
   it('rejects a shape beyond int64', function()
      local t = T.zeros({ 4 }, 'cpu')
      assert.are.equal('tensor shape [2305843009213693952,2] is too large '
         .. '(4611686018427387904 elements; ' .. SIZE_RULE .. ')', error_of(t.view, t,
         { 2 ^ 61, 2 }))
   end)
end)

describe('from_table', function()
   it('names a value that is not a number', function()
      assert.are.equal('from_table: value 2 is a string (expected a number)',
         error_of(T.from_table, { 1, 'x', 3 }))
      assert.are.equal('from_table: value 4 is a boolean (expected a number)',
         error_of(T.from_table, { 1, 2, 3, true }, { 2, 2 }))
   end)
end)

describe('labels', function()
   it('rejects a length that is not a count', function()
      for _, n in ipairs({ -1, 2.5, 2 ^ 61, math.huge }) do
         assert.are.equal('labels: n is ' .. tostring(n) .. ' (expected a non-negative integer '
            .. 'below 2^61)', error_of(T.labels, n, 'cpu'))
      end
      assert.are.equal('labels: n is x (expected a non-negative integer below 2^61)',
         error_of(T.labels, 'x', 'cpu'))
   end)

   it('makes a buffer of n int32 labels', function()
      local labels = T.labels(3, 'cpu')
      labels.ptr[2] = 7
      assert.are.equal(3, labels.n)
      assert.are.equal(7, labels.ptr[2])
   end)
end)

describe('mrt_tensor_set_shape', function()
   local function set_shape(sizes)
      local t = ffi.new('mrt_tensor')
      local dims = ffi.new('int64_t[8]', sizes)
      local status = C.mrt_tensor_set_shape(t, #sizes, dims)
      return status, ffi.string(C.mrt_error_message()), t
   end

   it('rejects a product that overflows int64', function()
      -- 2^32 * 2^31 = 2^63 elements overflow int64; 2^62 * 4 = 2^64 wraps to 0,
      -- which a check on the sign alone would miss.
      for _, sizes in ipairs({ { 2 ^ 32, 2 ^ 31 }, { 2 ^ 62, 4 }, { 3, 2 ^ 61 } }) do
         local status, msg = set_shape(sizes)
         assert.are_not.equal(0, status)
         local shape = string.format('[%.0f,%.0f]', sizes[1], sizes[2])
         assert.are.equal('mrt_tensor_set_shape: shape ' .. shape .. ' is too large (more than '
            .. '2305843009213693951 elements, so the size in bytes overflows int64)', msg)
      end
   end)

   it('accepts a count just below the bound', function()
      -- 2^32 * (2^29 - 1) = 2^61 - 2^32 elements, whose 4-byte floats take
      -- less than 2^63 bytes.
      local status, _, t = set_shape({ 2 ^ 32, 2 ^ 29 - 1 })
      assert.are.equal(0, status)
      assert.are.equal(2 ^ 32 * (2 ^ 29 - 1), tonumber(t.numel))
   end)

   it('accepts any size next to a zero', function()
      local status, _, t = set_shape({ 0, 2 ^ 62 })
      assert.are.equal(0, status)
      assert.are.equal(0, tonumber(t.numel))
   end)
end)
