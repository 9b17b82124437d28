-- mrt.util: wall clock, string helpers and small file utilities shared by
-- the trainer, the recipe runner and the command.

local bit = require 'bit'
local ffi = require 'ffi'

local M = {}

ffi.cdef [[
typedef struct mrt_timespec { long tv_sec; long tv_nsec; } mrt_timespec;
int clock_gettime(int clk_id, mrt_timespec *tp);
int getpid(void);
]]

local CLOCK_MONOTONIC = 1
local ts = ffi.new('mrt_timespec')

-- Seconds from an arbitrary fixed point, monotonic, with nanosecond resolution.
function M.now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

function M.pid()
   return ffi.C.getpid()
end

function M.file_exists(path)
   local f = io.open(path, 'rb')
   if f then
      f:close()
      return true
   end
   return false
end

function M.dirname(path)
   return path:match('^(.*)/[^/]*$') or '.'
end

-- Creates a folder and its parents (like mkdir -p); errors name the folder.
function M.mkdir_p(dir)
   local ok = os.execute(string.format("mkdir -p '%s'", dir:gsub("'", "'\\''")))
   if ok ~= 0 and ok ~= true then
      error(string.format("cannot create folder '%s'", dir), 2)
   end
end

-- 32-bit FNV-1a hash of a string, as 8 hex digits (for cache file names).
function M.hash(s)
   local h = bit.tobit(2166136261)
   for i = 1, #s do
      h = bit.bxor(h, s:byte(i))
      -- h * 16777619 mod 2^32, split as h*2^24 + h*403 so no product passes 2^53.
      h = bit.tobit(bit.lshift(h, 24) + h * 403)
   end
   return bit.tohex(h)
end

-- A stable one-line rendering of a config value (sorted keys for tables).
function M.render(v)
   if type(v) ~= 'table' then
      return tostring(v)
   end
   local keys = {}
   for k in pairs(v) do
      keys[#keys + 1] = k
   end
   table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
   local parts = {}
   for _, k in ipairs(keys) do
      if type(k) == 'number' then
         parts[#parts + 1] = M.render(v[k])
      else
         parts[#parts + 1] = tostring(k) .. '=' .. M.render(v[k])
      end
   end
   return '{' .. table.concat(parts, ',') .. '}'
end

return M
