-- mrt.io: IDX arrays, HDF5 files and safetensors weights, on top of the
-- engine's readers and writers (engine/include/mrt_io.h).
--
-- Load it under another name than `io` so Lua's own io library stays
-- visible: `local mio = require 'mrt.io'`. Element types are named 'u8',
-- 'i8', 'u16', 'i16', 'u32', 'i32', 'u64', 'i64', 'f16', 'bf16', 'f32',
-- 'f64' and 'bool'. Every writer writes a temporary file and renames it
-- into place, so a failed or aborted write leaves no file at the path.
-- Errors are raised at the caller's level with the engine's message.

local lib = require 'mrt.ffi'
local tensor = require 'mrt.tensor'

local ffi, C = lib.ffi, lib.C

local M = {}

local DTYPES = {
   u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, u64 = 6, i64 = 7,
   f16 = 8, bf16 = 9, f32 = 10, f64 = 11, bool = 12,
}
local DTYPE_NAMES = {}
for name, code in pairs(DTYPES) do
   DTYPE_NAMES[code] = name
end

-- C element types of the dtypes that have one in C.
local CTYPES = {
   u8 = 'uint8_t', i8 = 'int8_t', u16 = 'uint16_t', i16 = 'int16_t', u32 = 'uint32_t',
   i32 = 'int32_t', u64 = 'uint64_t', i64 = 'int64_t', f32 = 'float', f64 = 'double',
}

-- Range [low, high) of each integer dtype.
local INT_RANGES = {
   u8 = { 0, 2 ^ 8 }, i8 = { -2 ^ 7, 2 ^ 7 }, u16 = { 0, 2 ^ 16 }, i16 = { -2 ^ 15, 2 ^ 15 },
   u32 = { 0, 2 ^ 32 }, i32 = { -2 ^ 31, 2 ^ 31 }, u64 = { 0, 2 ^ 64 }, i64 = { -2 ^ 63, 2 ^ 63 },
}

local function dtype_code(dtype, allowed, fn, level)
   if not allowed[dtype] then
      local names = {}
      for name in pairs(allowed) do
         names[#names + 1] = name
      end
      table.sort(names)
      error(string.format("%s: unknown element type '%s' (expected %s)", fn, tostring(dtype),
         table.concat(names, ', ')), level + 1)
   end
   return DTYPES[dtype]
end

local function is_tensor(value)
   return type(value) == 'table' and getmetatable(value) == tensor.Tensor
end

local function shape_numel(shape)
   local n = 1
   for i = 1, #shape do
      n = n * shape[i]
   end
   return n
end

-- Copies a Lua list of numbers into a new C array of dtype, checking each value.
local function list_to_buffer(values, dtype, fn, level)
   local n = #values
   local buf = ffi.new(CTYPES[dtype] .. '[?]', math.max(n, 1))
   local range = INT_RANGES[dtype]
   for i = 1, n do
      local v = values[i]
      if type(v) ~= 'number' then
         error(string.format('%s: value %d is a %s (expected a number)', fn, i, type(v)),
            level + 1)
      end
      if range and (v ~= math.floor(v) or v < range[1] or v >= range[2]) then
         error(string.format('%s: value %d (%s) is not an integer in the range of %s', fn, i,
            tostring(v), dtype), level + 1)
      end
      buf[i - 1] = v
   end
   return buf
end

local function int64_shape(shape)
   local dims = ffi.new('int64_t[8]')
   for i = 1, #shape do
      dims[i - 1] = shape[i]
   end
   return dims
end

local function shape_of(c_shape, ndim)
   local shape = {}
   for i = 1, ndim do
      shape[i] = tonumber(c_shape[i - 1])
   end
   return shape
end

---------------------------------------------------------------------------
-- IDX
---------------------------------------------------------------------------

local IDX_DTYPES = { u8 = true, i8 = true, i16 = true, i32 = true, f32 = true, f64 = true }

-- Reads an IDX file; errors are raised `level` levels above this function.
local function idx_read(path, level)
   local arr = ffi.new('mrt_idx_array')
   lib.check(C.mrt_idx_read(path, arr), level + 1)
   local dtype = DTYPE_NAMES[arr.dtype]
   local data = ffi.gc(ffi.cast(CTYPES[dtype] .. ' *', arr.data), C.mrt_io_free)
   return { dtype = dtype, shape = shape_of(arr.shape, arr.ndim), numel = tonumber(arr.numel),
            data = data }
end

-- Reads an IDX file (raw or gzip) into { dtype =, shape =, numel =, data = }.
-- data is a typed C pointer (0-based) to memory that the garbage collector
-- frees once no reference to it is left.
function M.idx_read(path)
   local array = idx_read(path, 2)
   return array
end

local function idx_write(path, dtype, shape, data, gzip, level)
   local code = dtype_code(dtype, IDX_DTYPES, 'idx_write', level + 1)
   if type(shape) ~= 'table' or #shape < 1 or #shape > 8 then
      error('idx_write: shape must be a list of 1 to 8 sizes, got ' .. tostring(shape),
         level + 1)
   end
   local numel = shape_numel(shape)
   if type(data) == 'table' then
      if #data ~= numel then
         error(string.format('idx_write: %d values for shape [%s] (%d elements)', #data,
            table.concat(shape, ','), numel), level + 1)
      end
      data = list_to_buffer(data, dtype, 'idx_write', level + 1)
   elseif type(data) ~= 'cdata' then
      error('idx_write: data must be a C array or a Lua list, got ' .. type(data), level + 1)
   end
   local arr = ffi.new('mrt_idx_array')
   arr.data = ffi.cast('void *', data)
   arr.ndim = #shape
   arr.dtype = code
   arr.numel = numel
   for i = 1, #shape do
      arr.shape[i - 1] = shape[i]
   end
   lib.check(C.mrt_idx_write(path, arr, gzip and 1 or 0), level + 1)
end

-- Writes an IDX file, gzip-compressed when gzip is true. data is a C array
-- or pointer holding the elements of dtype in row-major order, or a flat
-- Lua list of numbers.
function M.idx_write(path, dtype, shape, data, gzip)
   idx_write(path, dtype, shape, data, gzip, 2)
end

-- The IDX functions with an explicit error level as last argument, for
-- mrt modules that raise errors at their own caller's level.
M.leveled = { idx_read = idx_read, idx_write = idx_write }

---------------------------------------------------------------------------
-- HDF5
---------------------------------------------------------------------------

local H5_DTYPES = {
   u8 = true, i8 = true, u16 = true, i16 = true, u32 = true, i32 = true, u64 = true, i64 = true,
   f32 = true, f64 = true,
}
local KIND_NAMES = { [0] = false, [1] = 'group', [2] = 'dataset', [3] = 'other' }
local NAME_SIZE = 4096

local H5File = {}
H5File.__index = H5File
M.H5File = H5File

local function h5_handle(self, level)
   if self.handle == nil then
      error(string.format("h5: '%s' is already closed", self.path), level + 1)
   end
   return self.handle
end

local function h5_wrap(raw, path, writable)
   -- mrt_h5_close aborts a writer, so a file never committed never appears.
   local handle = ffi.gc(raw[0], C.mrt_h5_close)
   return setmetatable({ handle = handle, path = path, writable = writable }, H5File)
end

-- Creates an HDF5 file, written to a temporary file until :commit().
function M.h5_create(path)
   local raw = ffi.new('mrt_h5 *[1]')
   lib.check(C.mrt_h5_create(path, raw), 2)
   return h5_wrap(raw, path, true)
end

-- Opens an HDF5 file read-only.
function M.h5_open(path)
   local raw = ffi.new('mrt_h5 *[1]')
   lib.check(C.mrt_h5_open(path, raw), 2)
   return h5_wrap(raw, path, false)
end

-- Detaches the handle from the garbage collector before a call that frees it.
local function h5_release(self, level)
   local handle = h5_handle(self, level + 1)
   ffi.gc(handle, nil)
   self.handle = nil
   return handle
end

-- Closes the file and renames it into place.
function H5File:commit()
   if not self.writable then
      error(string.format("h5 commit: '%s' was opened read-only", self.path), 2)
   end
   lib.check(C.mrt_h5_commit(h5_release(self, 2)), 2)
end

-- Closes a created file and deletes it.
function H5File:abort()
   C.mrt_h5_abort(h5_release(self, 2))
end

-- Closes a file opened read-only; on a created file this is :abort().
function H5File:close()
   if self.handle ~= nil then
      lib.check(C.mrt_h5_close(h5_release(self, 2)), 2)
   end
end

-- Turns a value for :write into (shape, C data, memory dtype, keep-alive).
local function h5_source(values, dtype, level)
   if is_tensor(values) then
      local host = values:to('cpu')
      return host.shape, host.c.data, 'f32', host
   end
   if type(values) == 'number' then
      return {}, list_to_buffer({ values }, dtype, 'h5 write', level + 1), dtype
   end
   if type(values) ~= 'table' then
      error('h5 write: values must be a Tensor, a number, a list or {shape=, data=}, got '
         .. type(values), level + 1)
   end
   local shape, data = { #values }, values
   if values.shape ~= nil then
      shape, data = values.shape, values.data
   end
   local numel = shape_numel(shape)
   if type(data) == 'cdata' then
      return shape, data, dtype, data
   end
   if type(data) ~= 'table' or #data ~= numel then
      error(string.format('h5 write: %s values for shape [%s] (%d elements)',
         type(data) == 'table' and #data or type(data), table.concat(shape, ','), numel),
         level + 1)
   end
   return shape, list_to_buffer(data, dtype, 'h5 write', level + 1), dtype
end

-- Writes a dataset at a slash path, creating intermediate groups. values is
-- a Tensor (stored as f32 unless dtype requests another type), a number (a
-- scalar dataset), a Lua list (1-D) or { shape =, data = <Lua list or C
-- array of dtype> }. Lists and numbers default to f64.
function H5File:write(path, values, dtype)
   local handle = h5_handle(self, 2)
   local default = is_tensor(values) and 'f32' or 'f64'
   dtype = dtype or default
   local file_code = dtype_code(dtype, H5_DTYPES, 'h5 write', 2)
   -- keep anchors the memory that data points into until the call returns.
   local shape, data, mem_dtype, keep = h5_source(values, dtype, 2)
   local dims = int64_shape(shape)
   lib.check(C.mrt_h5_write(handle, path, file_code, #shape, dims, DTYPES[mem_dtype], data), 2)
   return self, keep
end

-- Writes an attribute on a group or dataset: a number (f64, or i64 when
-- dtype is 'i64'), a boolean (i64 0 or 1), a string, or a list of numbers
-- (a 1-D f64 or i64 attribute).
function H5File:attr(object, name, value, dtype)
   local handle = h5_handle(self, 2)
   local t = type(value)
   if t == 'string' then
      lib.check(C.mrt_h5_attr_write_string(handle, object, name, value), 2)
      return
   end
   if dtype ~= nil and dtype ~= 'f64' and dtype ~= 'i64' then
      error(string.format("h5 attr: element type '%s' (expected 'f64' or 'i64')",
         tostring(dtype)), 2)
   end
   local ndim, list = 0, nil
   if t == 'boolean' then
      dtype, list = 'i64', { value and 1 or 0 }
   elseif t == 'number' then
      list = { value }
   elseif t == 'table' then
      ndim, list = 1, value
   else
      error(string.format("h5 attr: attribute '%s' is a %s (expected a number, boolean, "
         .. 'string or list of numbers)', tostring(name), t), 2)
   end
   dtype = dtype or 'f64'
   local buf = list_to_buffer(list, dtype, 'h5 attr', 2)
   if dtype == 'i64' then
      lib.check(C.mrt_h5_attr_write_i64(handle, object, name, ndim, #list, buf), 2)
   else
      lib.check(C.mrt_h5_attr_write_f64(handle, object, name, ndim, #list, buf), 2)
   end
end

-- The kind of object at path: 'group', 'dataset', 'other', or false.
function H5File:exists(path)
   local kind = ffi.new('int[1]')
   lib.check(C.mrt_h5_exists(h5_handle(self, 2), path, kind), 2)
   return KIND_NAMES[kind[0]]
end

local function h5_info(self, path, level)
   local dtype, ndim, shape = ffi.new('int[1]'), ffi.new('int[1]'), ffi.new('int64_t[8]')
   lib.check(C.mrt_h5_dataset_info(h5_handle(self, level + 1), path, dtype, ndim, shape),
      level + 1)
   return { dtype = DTYPE_NAMES[dtype[0]], shape = shape_of(shape, ndim[0]) }
end

-- Element type and shape of a dataset: { dtype =, shape = }.
function H5File:info(path)
   local info = h5_info(self, path, 2)
   return info
end

-- Reads a dataset as Lua numbers: a number for a scalar, a list for 1-D,
-- and { shape =, dtype =, data = <flat row-major list> } otherwise.
-- Floats are read as f64 and integers as i64; integers beyond 2^53 lose
-- precision as Lua numbers.
function H5File:read(path)
   local handle = h5_handle(self, 2)
   local info = h5_info(self, path, 2)
   local numel = shape_numel(info.shape)
   local float = info.dtype == 'f32' or info.dtype == 'f64'
   local buf = ffi.new((float and 'double' or 'int64_t') .. '[?]', math.max(numel, 1))
   lib.check(C.mrt_h5_read(handle, path, float and DTYPES.f64 or DTYPES.i64, buf, numel), 2)
   local data = {}
   for i = 1, numel do
      data[i] = tonumber(buf[i - 1])
   end
   if #info.shape == 0 then
      return data[1]
   end
   if #info.shape == 1 then
      return data
   end
   return { shape = info.shape, dtype = info.dtype, data = data }
end

-- Reads a dataset into a float32 Tensor of its shape on a device (default: CPU).
function H5File:read_tensor(path, device)
   local handle = h5_handle(self, 2)
   local info = h5_info(self, path, 2)
   local host = tensor.zeros(info.shape, 'cpu')
   lib.check(C.mrt_h5_read(handle, path, DTYPES.f32, host.c.data, host:numel()), 2)
   return host:to(device or 'cpu')
end

-- Names of the links in a group, sorted by name, and a map name -> kind.
function H5File:list(group)
   local handle = h5_handle(self, 2)
   local count = ffi.new('int64_t[1]')
   lib.check(C.mrt_h5_child_count(handle, group, count), 2)
   local name, kind = ffi.new('char[?]', NAME_SIZE), ffi.new('int[1]')
   local names, kinds = {}, {}
   for i = 0, tonumber(count[0]) - 1 do
      lib.check(C.mrt_h5_child(handle, group, i, name, NAME_SIZE, kind), 2)
      local s = ffi.string(name)
      names[#names + 1] = s
      kinds[s] = KIND_NAMES[kind[0]]
   end
   return names, kinds
end

-- Reads one attribute described by mrt_h5_attr_info.
local function read_attr(handle, object, name, kind, ndim, size)
   if kind == 3 then
      local buf = ffi.new('char[?]', size + 1)
      lib.check(C.mrt_h5_attr_read_string(handle, object, name, buf, size + 1), 3)
      return ffi.string(buf, size)
   end
   local float = kind == 1
   local buf = ffi.new((float and 'double' or 'int64_t') .. '[?]', math.max(size, 1))
   local read = float and C.mrt_h5_attr_read_f64 or C.mrt_h5_attr_read_i64
   lib.check(read(handle, object, name, buf, size), 3)
   if ndim == 0 then
      return tonumber(buf[0])
   end
   local list = {}
   for i = 1, size do
      list[i] = tonumber(buf[i - 1])
   end
   return list
end

-- All attributes of a group or dataset as a table name -> value: numbers,
-- strings, and lists for 1-D attributes. Booleans were stored as 0 and 1
-- and read back as numbers.
function H5File:attrs(object)
   local handle = h5_handle(self, 2)
   local count = ffi.new('int64_t[1]')
   lib.check(C.mrt_h5_attr_count(handle, object, count), 2)
   local name, kind, ndim, size = ffi.new('char[?]', NAME_SIZE), ffi.new('int[1]'),
      ffi.new('int[1]'), ffi.new('int64_t[1]')
   local out = {}
   for i = 0, tonumber(count[0]) - 1 do
      lib.check(C.mrt_h5_attr_info(handle, object, i, name, NAME_SIZE, kind, ndim, size), 2)
      local key = ffi.string(name)
      out[key] = read_attr(handle, object, key, kind[0], ndim[0], tonumber(size[0]))
   end
   return out
end

---------------------------------------------------------------------------
-- safetensors
---------------------------------------------------------------------------

local function st_open(path, level)
   local raw = ffi.new('mrt_safetensors *[1]')
   lib.check(C.mrt_safetensors_open(path, raw), level + 1)
   return ffi.gc(raw[0], C.mrt_safetensors_close)
end

local function st_close(st)
   ffi.gc(st, nil)
   C.mrt_safetensors_close(st)
end

local function st_metadata(st)
   local key, value = ffi.new('const char *[1]'), ffi.new('const char *[1]')
   local meta = {}
   for i = 0, tonumber(C.mrt_safetensors_metadata_count(st)) - 1 do
      lib.check(C.mrt_safetensors_metadata(st, i, key, value), 3)
      meta[ffi.string(key[0])] = ffi.string(value[0])
   end
   return meta
end

local function st_entries(st)
   local name, dtype = ffi.new('const char *[1]'), ffi.new('int[1]')
   local ndim, shape = ffi.new('int[1]'), ffi.new('int64_t[8]')
   local entries = {}
   for i = 0, tonumber(C.mrt_safetensors_count(st)) - 1 do
      lib.check(C.mrt_safetensors_info(st, i, name, dtype, ndim, shape), 3)
      entries[#entries + 1] = { name = ffi.string(name[0]), dtype = DTYPE_NAMES[dtype[0]],
                                shape = shape_of(shape, ndim[0]), index = i }
   end
   return entries
end

-- Lists the tensors of a safetensors file without reading their data: a
-- list of { name =, dtype =, shape = } in header order, and the metadata.
function M.safetensors_info(path)
   local st = st_open(path, 2)
   local entries = st_entries(st)
   local meta = st_metadata(st)
   st_close(st)
   for _, e in ipairs(entries) do
      e.index = nil
   end
   return entries, meta
end

-- Reads every tensor of a safetensors file converted to float32 on the CPU.
-- Returns a map name -> Tensor, the metadata (a map of strings) and the
-- names in header order.
function M.safetensors_read(path)
   local st = st_open(path, 2)
   local tensors, names = {}, {}
   for _, e in ipairs(st_entries(st)) do
      local t = tensor.zeros(e.shape, 'cpu')
      local status = C.mrt_safetensors_read_f32(st, e.index, t.c.data, t:numel())
      if status ~= 0 then
         st_close(st)
         lib.fail(status, 2)
      end
      tensors[e.name] = t
      names[#names + 1] = e.name
   end
   local meta = st_metadata(st)
   st_close(st)
   return tensors, meta, names
end

-- Puts the tensors to write into a list of { name =, tensor = }: a list is
-- kept in its order, a map name -> Tensor is sorted by name.
local function st_items(tensors, level)
   local items = {}
   if tensors[1] ~= nil then
      for i, item in ipairs(tensors) do
         if type(item) ~= 'table' or type(item.name) ~= 'string' or not is_tensor(item.tensor) then
            error(string.format('safetensors_write: item %d must be {name=<string>, '
               .. 'tensor=<Tensor>}', i), level + 1)
         end
         items[i] = item
      end
      return items
   end
   for name, t in pairs(tensors) do
      if type(name) ~= 'string' or not is_tensor(t) then
         error(string.format('safetensors_write: entry %s must map a name to a Tensor',
            tostring(name)), level + 1)
      end
      items[#items + 1] = { name = name, tensor = t }
   end
   table.sort(items, function(a, b) return a.name < b.name end)
   return items
end

-- Writes float32 tensors and string metadata to a safetensors file.
-- tensors is a list of { name =, tensor = } (kept in order) or a map
-- name -> Tensor (written sorted by name).
function M.safetensors_write(path, tensors, metadata)
   if type(tensors) ~= 'table' then
      error('safetensors_write: tensors must be a list or a map, got ' .. type(tensors), 2)
   end
   local items = st_items(tensors, 2)
   local n = #items
   local names = ffi.new('const char *[?]', math.max(n, 1))
   local ndims = ffi.new('int32_t[?]', math.max(n, 1))
   local shapes = ffi.new('int64_t[?]', 8 * math.max(n, 1))
   local data = ffi.new('const float *[?]', math.max(n, 1))
   local keep = {}
   for i, item in ipairs(items) do
      local host = item.tensor:to('cpu')
      keep[#keep + 1] = host
      names[i - 1] = item.name
      ndims[i - 1] = #host.shape
      for d = 1, #host.shape do
         shapes[8 * (i - 1) + d - 1] = host.shape[d]
      end
      data[i - 1] = host.c.data
   end
   local keys, values = {}, {}
   for k, v in pairs(metadata or {}) do
      if type(k) ~= 'string' or type(v) ~= 'string' then
         error(string.format('safetensors_write: metadata %s = %s (expected strings)',
            tostring(k), tostring(v)), 2)
      end
      keys[#keys + 1] = k
   end
   table.sort(keys)
   local ckeys = ffi.new('const char *[?]', math.max(#keys, 1))
   local cvalues = ffi.new('const char *[?]', math.max(#keys, 1))
   for i, k in ipairs(keys) do
      values[i] = metadata[k]
      ckeys[i - 1] = k
      cvalues[i - 1] = values[i]
   end
   lib.check(C.mrt_safetensors_write(path, n, names, ndims, shapes, data, #keys, ckeys,
      cvalues), 2)
end

-- Element type names -> enum mrt_io_dtype codes, and -> C type names.
M.DTYPES = DTYPES
M.CTYPES = CTYPES

return M
