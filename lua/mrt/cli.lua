-- mrt.cli: the `bin/mrt RECIPE [--key value ...]` command.
--
-- Loads the recipe, applies --key value overrides to its config (an unknown
-- key is an error listing the valid ones), runs it, and writes the result
-- file (--out, default results/<recipe>.h5) and its plots only when the
-- recipe finished. Set MRT_DEBUG=1 for a Lua traceback on errors.

local M = {}

local USAGE = [[
usage: mrt RECIPE [--key value ...] [--out FILE.h5] [--device cpu|cuda] [--threads N] [--profile]
       mrt                      (interactive LuaJIT prompt with mrt loaded)

  RECIPE         a recipe script, e.g. recipes/transfer.lua, or the name of one in
                 recipes/ (transfer)
  --key value    overrides the recipe's config entry `key`; numbers are parsed as numbers,
                 lists as comma-separated items; `mrt RECIPE --help` lists the keys
  --out FILE.h5  result file (default results/<recipe>.h5); plots go beside it as .png
  --device NAME  cpu (default) or cuda; MRT_DEVICE sets the same
  --threads N    CPU threads for BLAS and the engine's loops (default: all cores)
  --profile      print a per-layer time profile of training steps
]]

local GLOBAL_FLAGS = { out = true, device = true, threads = true, profile = false, help = false }

-- Splits argv into the recipe path, config overrides and global options.
function M.parse(argv)
   local recipe, overrides, options = nil, {}, {}
   local i = 1
   while i <= #argv do
      local a = argv[i]
      local key = a:match('^%-%-(.+)$')
      if key == nil then
         if recipe ~= nil then
            error(string.format("unexpected argument '%s' (options are --key value)", a), 0)
         end
         recipe = a
         i = i + 1
      else
         local inline_key, inline_value = key:match('^([^=]+)=(.*)$')
         local value
         if inline_key then
            key, value = inline_key, inline_value
         end
         local takes_value = GLOBAL_FLAGS[key]
         if takes_value == false then
            options[key] = true
            i = i + 1
         else
            if value == nil then
               value = argv[i + 1]
               if value == nil then
                  error(string.format('--%s needs a value', key), 0)
               end
               i = i + 2
            else
               i = i + 1
            end
            if takes_value then
               options[key] = value
            else
               overrides[key] = value
            end
         end
      end
   end
   return recipe, overrides, options
end

local function print_keys(recipe)
   local R = require 'mrt.recipe'
   io.stdout:write(string.format('%s: %s\n\nconfig keys (defaults):\n', recipe.name,
      recipe.description or ''))
   for _, k in ipairs(R.sorted_keys(recipe.config)) do
      local v = recipe.config[k]
      local text = require('mrt.util').render(v)
      if type(v) == 'table' then
         local items = {}
         for i, item in ipairs(v) do
            items[i] = tostring(item)
         end
         text = table.concat(items, ',')
      end
      io.stdout:write(string.format('  --%-20s %s\n', k, text))
   end
   io.stdout:write('\nand --out FILE.h5, --device cpu|cuda, --threads N, --profile (see mrt '
      .. '--help)\n')
end

local function setup(options)
   local T = require 'mrt.tensor'
   local lib = require 'mrt.ffi'
   local device = options.device or os.getenv('MRT_DEVICE') or 'cpu'
   if device ~= 'cpu' and device ~= 'cuda' then
      error(string.format("%s must be cpu or cuda, got '%s'",
         options.device and '--device' or 'MRT_DEVICE', device), 0)
   end
   T.set_default_device(device)
   local threads = tonumber(options.threads or 0)
   if threads == nil or threads < 0 or threads ~= math.floor(threads) or threads > 2 ^ 31 then
      error(string.format("--threads expects a non-negative integer, got '%s'",
         tostring(options.threads)), 0)
   end
   lib.check(lib.C.mrt_threads_set(threads))
   return device
end

-- Fails before any training when the result file or its plot cannot be
-- written: a folder in the way, or a folder that cannot be created or
-- written to. Returns the folders it created for the result.
function M.check_output(out)
   local util = require 'mrt.util'
   local R = require 'mrt.recipe'
   local created = util.mkdir_p(util.dirname(out))
   for _, path in ipairs({ out, R.plot_path(out, {}, 1) }) do
      if util.is_dir(path) then
         error(string.format("cannot write '%s': it is a folder; choose another --out", path), 0)
      end
   end
   local probe = out .. '.tmp.probe'
   local f, err = io.open(probe, 'w')
   if f == nil then
      error(string.format("cannot write in '%s': %s; choose another --out", util.dirname(out),
         tostring(err)), 0)
   end
   f:close()
   os.remove(probe)
   return created
end

-- Runs a recipe with the given options; returns nothing, raises on failure.
function M.run(argv)
   local R = require 'mrt.recipe'
   local util = require 'mrt.util'
   local path, overrides, options = M.parse(argv)
   if path == '-h' or (path == nil and options.help) then
      path, options.help = nil, nil
   end
   -- A bare name such as `transfer` means recipes/transfer.lua when no such file exists.
   if path ~= nil and not path:find('/') and not util.is_file(path) then
      local candidate = require('mrt.ffi').root .. '/recipes/' .. path:gsub('%.lua$', '')
         .. '.lua'
      if util.is_file(candidate) then
         path = candidate
      end
   end
   if path == nil then
      io.stdout:write(USAGE)
      return
   end
   local recipe = R.load(path)
   if options.help then
      print_keys(recipe)
      return
   end
   local config = R.apply_overrides(recipe.config, overrides)
   local device = setup(options)
   local out = options.out or ('results/' .. recipe.name .. '.h5')
   if not out:match('%.h5$') then
      error(string.format("--out must name an .h5 file, got '%s'", out), 0)
   end
   local created = M.check_output(out)
   local results = R.results()
   local ctx = {
      config = config, results = results, device = device, out = out,
      profile = options.profile or false,
      cache_dir = os.getenv('MRT_CACHE') or (require('mrt.ffi').root .. '/cache'),
      log = function(fmt, ...)
         io.stderr:write(string.format(fmt, ...), '\n')
      end,
   }
   local t0 = util.now()
   local ran, failure = xpcall(recipe.run, function(e)
      -- The traceback is only complete here, before the stack unwinds.
      return os.getenv('MRT_DEBUG') and debug.traceback(tostring(e), 2) or e
   end, config, ctx)
   if not ran then
      -- A failed run leaves no result, so the folders made for it go again when they are
      -- still empty (os.remove removes no folder that contains files).
      for i = #created, 1, -1 do
         os.remove(created[i])
      end
      error(failure, 0)
   end
   -- Another run that failed meanwhile may have removed a folder this run made.
   util.mkdir_p(util.dirname(out))
   local written = {}
   for i, spec in ipairs(results.plots) do
      local png = R.plot_path(out, spec, i)
      results:write_plot(png, spec)
      written[#written + 1] = png
   end
   local ok, err = pcall(results.write_h5, results, out, recipe, config)
   if not ok then
      for _, png in ipairs(written) do
         os.remove(png)
      end
      error(err, 0)
   end
   io.stderr:write(string.format('wrote %s%s (%.0f s)\n', out,
      #written > 0 and (' and ' .. table.concat(written, ', ')) or '', util.now() - t0))
end

-- The message without the "file.lua:12: " positions Lua prefixes to errors,
-- which point into mrt's sources rather than at the user's mistake.
local function user_message(e)
   local text = tostring(e)
   local stripped
   repeat
      stripped = text
      text = text:gsub('^[^:\n]*%.lua:%d+: ', '', 1)
   until text == stripped
   return text
end

function M.main(argv)
   local ok, err = xpcall(M.run, function(e)
      if os.getenv('MRT_DEBUG') then
         return debug.traceback(tostring(e), 2)
      end
      return user_message(e)
   end, argv)
   if not ok then
      if err == 'interrupted!' then
         io.stderr:write('\nmrt: interrupted; no result file was written\n')
         os.exit(130)
      end
      io.stderr:write('mrt: ', err, '\n')
      os.exit(1)
   end
end

if arg and arg[0] and arg[0]:match('cli%.lua$') then
   M.main({ ... })
end

return M
