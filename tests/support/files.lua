-- Small file helpers shared by the specs that write and corrupt files in a
-- temporary folder.

local M = {}

function M.write_bytes(path, bytes)
   local f = assert(io.open(path, 'wb'))
   f:write(bytes)
   f:close()
end

function M.read_bytes(path)
   local f = assert(io.open(path, 'rb'))
   local bytes = f:read('*a')
   f:close()
   return bytes
end

function M.exists(path)
   local f = io.open(path, 'rb')
   if f then
      f:close()
   end
   return f ~= nil
end

-- Names of the files in a folder, sorted.
function M.listing(dir)
   local names = {}
   local pipe = io.popen("ls -A '" .. dir .. "'")
   for line in pipe:lines() do
      names[#names + 1] = line
   end
   pipe:close()
   return names
end

return M
