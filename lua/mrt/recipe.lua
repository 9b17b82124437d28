-- mrt.recipe: loading recipes, applying command-line overrides to their
-- config, and writing their results (an HDF5 file and a PNG plot) only when
-- the whole recipe succeeded.
--
-- A recipe file returns a table:
--    return {
--       name = 'transfer',
--       description = 'one line',
--       config = { lr = 0.01, k = 5, ... },     -- every key a user may override
--       run = function(config, ctx) ... end,    -- ctx: see Context below
--    }

local util = require 'mrt.util'

local M = {}

-- Loads a recipe file and checks its shape.
function M.load(path)
   local chunk, err = loadfile(path)
   if chunk == nil then
      error(string.format("cannot load recipe '%s': %s", path, err), 0)
   end
   local recipe = chunk()
   if type(recipe) ~= 'table' or type(recipe.run) ~= 'function'
      or type(recipe.config) ~= 'table' then
      error(string.format("recipe '%s' must return a table with a config table and a run "
         .. 'function', path), 0)
   end
   recipe.path = path
   recipe.name = recipe.name or path:match('([^/]+)%.lua$') or path
   return recipe
end

local function sorted_keys(t)
   local keys = {}
   for k in pairs(t) do
      keys[#keys + 1] = k
   end
   table.sort(keys)
   return keys
end
M.sorted_keys = sorted_keys

-- Converts a command-line string to the type of the config's default value.
local function convert(key, text, default)
   local kind = type(default)
   if kind == 'number' then
      local v = tonumber(text)
      if v == nil then
         error(string.format("--%s expects a number, got '%s'", key, text), 0)
      end
      return v
   elseif kind == 'boolean' then
      if text == 'true' or text == '1' or text == 'yes' then
         return true
      elseif text == 'false' or text == '0' or text == 'no' then
         return false
      end
      error(string.format("--%s expects true or false, got '%s'", key, text), 0)
   elseif kind == 'table' then
      -- A comma-separated list of numbers or words, e.g. --seeds 1,2,3.
      local list = {}
      for item in text:gmatch('[^,]+') do
         list[#list + 1] = tonumber(item) or item
      end
      return list
   end
   return tonumber(text) or text
end

-- Returns a copy of config with overrides (key -> string) applied; an
-- unknown key is an error that lists the valid keys.
function M.apply_overrides(config, overrides)
   local out = {}
   for k, v in pairs(config) do
      out[k] = v
   end
   for _, key in ipairs(sorted_keys(overrides)) do
      if config[key] == nil then
         error(string.format("unknown option --%s; valid options: --%s (and --out, --device, "
            .. '--threads, --profile)', key, table.concat(sorted_keys(config), ', --')), 0)
      end
      out[key] = convert(key, overrides[key], config[key])
   end
   return out
end

------------------------------------------------------------------- results

local Results = {}
Results.__index = Results

function M.results()
   return setmetatable({ runs = {}, order = {}, attrs = {}, plots = {} }, Results)
end

-- Records one run: history is { name = list of numbers, ... } (all of one
-- length), attrs is a table of settings stored as attributes of the group.
function Results:add_run(name, history, attrs)
   if self.runs[name] ~= nil then
      error(string.format("add_run: a run named '%s' was already recorded", name), 2)
   end
   self.runs[name] = { history = history, attrs = attrs or {} }
   self.order[#self.order + 1] = name
end

function Results:set_attr(name, value)
   self.attrs[name] = value
end

-- Asks for a PNG plot of y against x for the given runs (all runs if nil).
-- spec: x, y (history keys), xlabel, ylabel, title, runs, file suffix.
function Results:plot(spec)
   self.plots[#self.plots + 1] = spec
end

local function attr_value(v)
   if type(v) == 'table' then
      local all_numbers = #v > 0
      for _, x in ipairs(v) do
         all_numbers = all_numbers and type(x) == 'number'
      end
      if all_numbers then
         return v
      end
      return util.render(v)
   end
   return v
end

-- Writes runs and attributes to an HDF5 file through a temporary file, so
-- a failure leaves nothing at path.
function Results:write_h5(path, recipe, config)
   local mio = require 'mrt.io'
   local h5 = mio.h5_create(path)
   local ok, err = pcall(function()
      h5:attr('/', 'mrt_format_version', 1)
      h5:attr('/', 'mrt_version', require('mrt').version())
      h5:attr('/', 'recipe', recipe.name)
      for _, k in ipairs(sorted_keys(config)) do
         h5:attr('/', 'config.' .. k, attr_value(config[k]))
      end
      for _, k in ipairs(sorted_keys(self.attrs)) do
         h5:attr('/', k, attr_value(self.attrs[k]))
      end
      for _, name in ipairs(self.order) do
         local run = self.runs[name]
         local group = '/runs/' .. name
         for _, key in ipairs(sorted_keys(run.history)) do
            h5:write(group .. '/' .. key, run.history[key], 'f64')
         end
         for _, k in ipairs(sorted_keys(run.attrs)) do
            h5:attr(group, k, attr_value(run.attrs[k]))
         end
      end
   end)
   if not ok then
      h5:abort()
      error(err, 0)
   end
   h5:commit()
end

local function gnuplot_quote(s)
   return "'" .. tostring(s):gsub("'", "''") .. "'"
end

-- Draws one PNG with gnuplot: data files and script go to a temporary
-- folder, and the image is renamed into place only when gnuplot succeeded.
function Results:write_plot(path, spec)
   local tmpdir = os.tmpname()
   os.remove(tmpdir)
   util.mkdir_p(tmpdir)
   local runs = spec.runs or self.order
   local lines = {
      'set terminal pngcairo size 900,600 noenhanced',
      'set output ' .. gnuplot_quote(path .. '.tmp.png'),
      'set title ' .. gnuplot_quote(spec.title or ''),
      'set xlabel ' .. gnuplot_quote(spec.xlabel or spec.x),
      'set ylabel ' .. gnuplot_quote(spec.ylabel or spec.y),
      'set key bottom right',
      'set grid',
   }
   local plots = {}
   for i, name in ipairs(runs) do
      local run = self.runs[name]
      if run == nil then
         error(string.format("plot: no run named '%s'", name), 2)
      end
      local xs, ys = run.history[spec.x], run.history[spec.y]
      local file = string.format('%s/run%d.dat', tmpdir, i)
      local f = assert(io.open(file, 'w'))
      for j = 1, #xs do
         f:write(string.format('%.17g %.17g\n', xs[j], ys[j]))
      end
      f:close()
      plots[#plots + 1] = string.format('%s with linespoints lw 2 title %s',
         gnuplot_quote(file), gnuplot_quote(name))
   end
   lines[#lines + 1] = 'plot ' .. table.concat(plots, ', ')
   local script = tmpdir .. '/plot.gp'
   local f = assert(io.open(script, 'w'))
   f:write(table.concat(lines, '\n'), '\n')
   f:close()
   local status = os.execute(string.format("gnuplot '%s' 2>'%s/err.txt'", script, tmpdir))
   local errf = io.open(tmpdir .. '/err.txt')
   local errtext = errf and errf:read('*a') or ''
   if errf then
      errf:close()
   end
   os.execute(string.format("rm -rf '%s'", tmpdir))
   if status ~= 0 and status ~= true then
      os.remove(path .. '.tmp.png')
      error(string.format('gnuplot failed drawing %s: %s (install it with make deps)', path,
         errtext), 0)
   end
   assert(os.rename(path .. '.tmp.png', path))
end

-- Plot file names: out.h5 -> out.png, or out-<suffix>.png for extra plots.
function M.plot_path(out, spec, index)
   local base = out:gsub('%.h5$', '')
   if spec.suffix then
      return base .. '-' .. spec.suffix .. '.png'
   end
   return index == 1 and base .. '.png' or string.format('%s-%d.png', base, index)
end

return M
