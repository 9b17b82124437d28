-- mrt.ffi: loads libmrt.so and declares its API to LuaJIT's FFI, once.
--
-- The declarations are the public headers in engine/include, read at load
-- time with their preprocessor lines removed, so C and Lua share one source.
-- The library is found through MRT_LIB, then the build folder of this
-- checkout; MRT_HOME overrides the checkout root.

local ffi = require 'ffi'

local M = {}

local function script_root()
   local source = debug.getinfo(1, 'S').source
   local dir = source:match('^@(.*)/lua/mrt/ffi%.lua$')
   if dir == nil or dir == '' then
      dir = source:match('^@(.*)/lua/mrt/') or '.'
   end
   return dir
end

M.root = os.getenv('MRT_HOME') or script_root()

local HEADERS = { 'mrt_core.h', 'mrt_tensor.h', 'mrt_nn.h', 'mrt_optim.h', 'mrt_io.h',
   'mrt_transform.h' }

local function read_header(name)
   local path = M.root .. '/engine/include/' .. name
   local f = io.open(path, 'r')
   if f == nil then
      return nil
   end
   local text = f:read('*a')
   f:close()
   -- ffi.cdef understands no preprocessor lines: drop guards and includes.
   text = text:gsub('\n#[^\n]*', '\n'):gsub('^#[^\n]*', '')
   return text
end

local declared = rawget(_G, '__mrt_ffi_declared')
if not declared then
   for _, name in ipairs(HEADERS) do
      local text = read_header(name)
      if text == nil then
         if name ~= 'mrt_io.h' then
            error(string.format('mrt: header %s/engine/include/%s not found; set MRT_HOME '
               .. 'to the mrt checkout', M.root, name), 2)
         end
      else
         ffi.cdef(text)
      end
   end
   rawset(_G, '__mrt_ffi_declared', true)
end

local function load_library()
   local candidates = {}
   if os.getenv('MRT_LIB') then
      candidates[#candidates + 1] = os.getenv('MRT_LIB')
   end
   candidates[#candidates + 1] = M.root .. '/build/libmrt.so'
   local errors = {}
   for _, path in ipairs(candidates) do
      local ok, lib = pcall(ffi.load, path)
      if ok then
         return lib, path
      end
      errors[#errors + 1] = tostring(lib)
   end
   error('mrt: cannot load libmrt.so (' .. table.concat(errors, '; ')
      .. '); run "make" in ' .. M.root .. ' or set MRT_LIB to the library path', 2)
end

M.C, M.path = load_library()
M.ffi = ffi

-- Raises the engine's last error message at the caller's caller, as data.
function M.fail(status, level)
   local message = ffi.string(M.C.mrt_error_message())
   if message == '' then
      message = 'mrt: engine call failed with status ' .. tostring(status)
   end
   error(message, (level or 1) + 1)
end

-- Checks a status returned by the engine.
function M.check(status, level)
   if status ~= 0 then
      M.fail(status, (level or 1) + 1)
   end
end

return M
