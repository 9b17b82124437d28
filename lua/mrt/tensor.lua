-- mrt.tensor: float32 tensors on a device, engine contexts, and the
-- elementwise ops of engine/include/mrt_tensor.h.
--
-- A Tensor is a Lua table holding an mrt_tensor descriptor (`c`, passed to
-- the engine), its storage (freed by the garbage collector when the last
-- tensor that views it goes), its shape as a Lua list, and its device name.
-- Views share storage: flat parameter buffers are carved into per-parameter
-- views this way.

local lib = require 'mrt.ffi'

local ffi, C = lib.ffi, lib.C

local M = {}

local Tensor = {}
Tensor.__index = Tensor
M.Tensor = Tensor

local DEVICES = { cpu = 0, cuda = 1 }
local DEVICE_NAMES = { [0] = 'cpu', [1] = 'cuda' }
M.DEVICES = DEVICES

local function device_id(device)
   local id = DEVICES[device or 'cpu']
   if id == nil then
      error(string.format("unknown device '%s' (expected 'cpu' or 'cuda')", tostring(device)), 3)
   end
   return id
end

-- Engine contexts, one per device, created on first use.
local contexts = {}

function M.context(device)
   device = device or M.default_device()
   local ctx = contexts[device]
   if ctx == nil then
      local id = device_id(device)
      local raw = C.mrt_ctx_new(id)
      if raw == nil then
         lib.fail(nil, 2)
      end
      ctx = ffi.gc(raw, C.mrt_ctx_free)
      contexts[device] = ctx
   end
   return ctx
end

local default_device = os.getenv('MRT_DEVICE') or 'cpu'

function M.default_device()
   return default_device
end

function M.set_default_device(device)
   device_id(device)
   if device == 'cuda' then
      lib.check(C.mrt_cuda_init(), 2)
   end
   default_device = device
end

local function shape_numel(shape)
   local n = 1
   for i = 1, #shape do
      n = n * shape[i]
   end
   return n
end
M.shape_numel = shape_numel

-- '[2,3,4]'; integral sizes print in full (2^61 as 2305843009213693952).
local function shape_string(shape)
   local parts = {}
   for i = 1, #shape do
      local s = shape[i]
      local whole = type(s) == 'number' and s == math.floor(s) and math.abs(s) < math.huge
      parts[i] = whole and string.format('%.0f', s) or tostring(s)
   end
   return '[' .. table.concat(parts, ',') .. ']'
end
M.shape_string = shape_string

-- The bound on a float32 tensor's element count: its size in bytes must
-- fit in int64 (the engine's mrt_tensor_set_shape checks the same bound).
local MAX_NUMEL = 2 ^ 61

local function check_shape(shape, level)
   if type(shape) ~= 'table' or #shape > 8 then
      error('tensor shape must be a list of at most 8 sizes, got ' .. tostring(shape), level + 1)
   end
   local numel, largest = 1, 0
   for i = 1, #shape do
      local s = shape[i]
      if type(s) ~= 'number' or s < 0 or s ~= math.floor(s) or s == math.huge then
         error(string.format('tensor size %d is %s (expected a non-negative integer)', i,
            tostring(s)), level + 1)
      end
      numel = numel * s
      largest = math.max(largest, s)
   end
   -- A zero size makes the product 0, but every size must still convert to int64.
   if numel >= MAX_NUMEL or largest >= MAX_NUMEL then
      error(string.format('tensor shape %s is too large (%.0f elements; sizes and the element '
         .. 'count must be below 2^61 so that the size in bytes fits in int64)',
         shape_string(shape), numel), level + 1)
   end
end

local function describe(t, storage, offset, shape, device)
   local c = ffi.new('mrt_tensor')
   local dims = ffi.new('int64_t[8]')
   for i = 1, #shape do
      dims[i - 1] = shape[i]
   end
   lib.check(C.mrt_tensor_set_shape(c, #shape, dims), 3)
   c.data = ffi.cast('float *', storage.ptr) + offset
   c.device = device_id(device)
   t.c = c
   t.storage = storage
   t.offset = offset
   t.shape = shape
   t.device = device
   return setmetatable(t, Tensor)
end

-- Allocates uninitialised storage for n floats on a device.
local function new_storage(n, device)
   local id = device_id(device)
   local raw = C.mrt_alloc(id, n * 4)
   if raw == nil then
      lib.fail(nil, 3)
   end
   local storage = { ptr = ffi.gc(raw, function(p) C.mrt_free(id, p) end), numel = n }
   return storage
end

M.storage = new_storage

-- Creates a tensor of the given shape, filled with zeros.
function M.zeros(shape, device)
   check_shape(shape, 2)
   device = device or M.default_device()
   local copy = {}
   for i = 1, #shape do
      copy[i] = shape[i]
   end
   local n = shape_numel(copy)
   local t = describe({}, new_storage(n, device), 0, copy, device)
   if n > 0 then
      lib.check(C.mrt_fill(M.context(device), t.c, 0), 2)
   end
   return t
end

-- Creates a tensor from a flat Lua list of numbers.
function M.from_table(values, shape, device)
   shape = shape or { #values }
   check_shape(shape, 2)
   local n = shape_numel(shape)
   if n ~= #values then
      error(string.format('from_table: %d values for shape %s (%d elements)', #values,
         shape_string(shape), n), 2)
   end
   local host = M.zeros(shape, 'cpu')
   for i = 1, n do
      local v = values[i]
      if type(v) ~= 'number' then
         error(string.format('from_table: value %d is a %s (expected a number)', i, type(v)), 2)
      end
      host.c.data[i - 1] = v
   end
   if (device or M.default_device()) ~= 'cpu' then
      return host:to(device or M.default_device())
   end
   return host
end

-- Wraps n floats of `storage` from `offset` in a tensor of the given shape.
function M.view_of(storage, offset, shape, device)
   local n = shape_numel(shape)
   if offset < 0 or offset + n > storage.numel then
      error(string.format('view of %d elements at offset %d exceeds storage of %d', n, offset,
         storage.numel), 2)
   end
   return describe({}, storage, offset, shape, device)
end

function Tensor:numel()
   return tonumber(self.c.numel)
end

function Tensor:dim()
   return #self.shape
end

function Tensor:size(i)
   if i == nil then
      return self.shape
   end
   return self.shape[i]
end

function Tensor:shape_string()
   return shape_string(self.shape)
end

function Tensor:__tostring()
   return string.format('mrt.Tensor(%s, %s)', shape_string(self.shape), self.device)
end

-- A tensor sharing this one's storage with a new shape of the same size.
function Tensor:view(shape)
   check_shape(shape, 2)
   if shape_numel(shape) ~= self:numel() then
      error(string.format('view: shape %s does not match %d elements of %s', shape_string(shape),
         self:numel(), shape_string(self.shape)), 2)
   end
   return describe({}, self.storage, self.offset, shape, self.device)
end

-- Points this tensor at another storage (used to move parameters into flat buffers).
function Tensor:rebind(storage, offset)
   self.storage = storage
   self.offset = offset
   self.c.data = ffi.cast('float *', storage.ptr) + offset
end

function Tensor:context()
   return M.context(self.device)
end

function Tensor:fill(value)
   lib.check(C.mrt_fill(self:context(), self.c, value), 2)
   return self
end

function Tensor:zero()
   return self:fill(0)
end

-- Copies src into this tensor (same number of elements, any devices).
function Tensor:copy(src)
   lib.check(C.mrt_tensor_copy(self:context(), self.c, src.c), 2)
   return self
end

function Tensor:clone()
   local t = M.zeros(self.shape, self.device)
   return t:copy(self)
end

-- This tensor on another device (itself when already there).
function Tensor:to(device)
   if device == self.device then
      return self
   end
   local t = describe({}, new_storage(self:numel(), device), 0, self.shape, device)
   lib.check(C.mrt_tensor_copy(M.context(device), t.c, self.c), 2)
   return t
end

-- self := alpha*x + beta*self.
function Tensor:axpby(alpha, x, beta)
   lib.check(C.mrt_axpby(self:context(), alpha, x.c, beta, self.c), 2)
   return self
end

function Tensor:add(a, b)
   lib.check(C.mrt_add(self:context(), a.c, b.c, self.c), 2)
   return self
end

function Tensor:sum()
   local out = ffi.new('double[1]')
   lib.check(C.mrt_sum(self:context(), self.c, out), 2)
   return out[0]
end

function Tensor:sumsq()
   local out = ffi.new('double[1]')
   lib.check(C.mrt_sumsq(self:context(), self.c, out), 2)
   return out[0]
end

function Tensor:has_nonfinite()
   local out = ffi.new('int[1]')
   lib.check(C.mrt_nonfinite(self:context(), self.c, out), 2)
   return out[0] ~= 0
end

-- Flat element i (1-based), copied to the host when needed.
function Tensor:get(i)
   local n = self:numel()
   if i < 1 or i > n then
      error(string.format('get: index %d out of range 1..%d', i, n), 2)
   end
   if self.device == 'cpu' then
      return self.c.data[i - 1]
   end
   local out = ffi.new('float[1]')
   lib.check(C.mrt_memcpy(0, out, self.c.device, self.c.data + (i - 1), 4), 2)
   return out[0]
end

function Tensor:set(i, value)
   local n = self:numel()
   if i < 1 or i > n then
      error(string.format('set: index %d out of range 1..%d', i, n), 2)
   end
   if self.device == 'cpu' then
      self.c.data[i - 1] = value
      return self
   end
   local v = ffi.new('float[1]', value)
   lib.check(C.mrt_memcpy(self.c.device, self.c.data + (i - 1), 0, v, 4), 2)
   return self
end

-- All elements as a flat Lua list (for tests and small tensors).
function Tensor:totable()
   local host = self:to('cpu')
   local out = {}
   for i = 0, host:numel() - 1 do
      out[i + 1] = host.c.data[i]
   end
   return out
end

-- A CPU float pointer to the data; an error for tensors on another device.
function Tensor:ptr()
   if self.device ~= 'cpu' then
      error('ptr: tensor is on ' .. self.device .. '; copy it with :to("cpu") first', 2)
   end
   return self.c.data
end

-- An int32 label buffer of n entries on a device: { ptr = int32_t *, n = n, device = }.
-- Labels passed to the loss must live on the logits' device.
function M.labels(n, device)
   if type(n) ~= 'number' or n < 0 or n ~= math.floor(n) or n >= MAX_NUMEL then
      error(string.format('labels: n is %s (expected a non-negative integer below 2^61)',
         tostring(n)), 2)
   end
   device = device or M.default_device()
   local storage = new_storage(n, device)
   return { ptr = ffi.cast('int32_t *', storage.ptr), n = n, device = device, storage = storage }
end

-- Copies a CPU label buffer into a label buffer on its own device.
function M.copy_labels(dst, src)
   if dst.n ~= src.n then
      error(string.format('copy_labels: %d labels into a buffer of %d', src.n, dst.n), 2)
   end
   lib.check(C.mrt_memcpy(DEVICES[dst.device], dst.ptr, DEVICES[src.device], src.ptr, src.n * 4), 2)
   return dst
end

M.device_name = function(id)
   return DEVICE_NAMES[id]
end

return M
