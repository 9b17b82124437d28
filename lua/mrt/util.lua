-- mrt.util: wall clock, string helpers and small file utilities shared by
-- the trainer, the recipe runner and the command.

local bit = require 'bit'
local ffi = require 'ffi'

local M = {}

ffi.cdef [[
typedef struct mrt_timespec { long tv_sec; long tv_nsec; } mrt_timespec;
int clock_gettime(int clk_id, mrt_timespec *tp);
int getpid(void);
int mkdir(const char *path, unsigned int mode);
char *strerror(int errnum);
typedef struct mrt_dir mrt_dir;
mrt_dir *opendir(const char *name);
int closedir(mrt_dir *dir);
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

-- Creates a folder and its parents (like mkdir -p) and returns the list of
-- folders it created, outermost first. Errors name the folder and the
-- system's reason.
function M.mkdir_p(dir)
   local path, created = '', {}
   for part in dir:gmatch('[^/]+') do
      path = (path == '' and dir:sub(1, 1) ~= '/') and part or (path .. '/' .. part)
      if ffi.C.mkdir(path, 493) == 0 then -- 493 = 0755
         created[#created + 1] = path
      else
         local errno = ffi.errno()
         if errno ~= 17 then -- EEXIST
            error(string.format("cannot create folder '%s': %s", dir,
               ffi.string(ffi.C.strerror(errno))), 2)
         end
      end
   end
   if not M.is_dir(dir) then
      error(string.format("cannot create folder '%s': a file of that name exists", dir), 2)
   end
   return created
end

-- True when path names an existing folder.
function M.is_dir(path)
   local dir = ffi.C.opendir(path)
   if dir == nil then
      return false
   end
   ffi.C.closedir(dir)
   return true
end

-- True when path names a file that can be opened for reading (not a folder).
function M.is_file(path)
   if M.is_dir(path) then
      return false
   end
   local f = io.open(path, 'r')
   if f == nil then
      return false
   end
   f:close()
   return true
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
