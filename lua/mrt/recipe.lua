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
   elseif kind == 'string' then
      return text
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
   return setmetatable({ runs = {}, order = {}, attrs = {}, plots = {}, summaries = {},
      summary_order = {} }, Results)
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

-- Records a 1-D float64 dataset written at /summary/<name>, e.g.
-- 'sgd/final_test_acc' for one value per seed.
function Results:add_summary(name, values)
   if self.summaries[name] ~= nil then
      error(string.format("add_summary: a summary named '%s' was already recorded", name), 2)
   end
   self.summaries[name] = values
   self.summary_order[#self.summary_order + 1] = name
end

-- Element-wise mean of histories that have the same keys and lengths (the
-- runs of one approach over several seeds).
function M.mean_history(histories)
   if #histories == 0 then
      error('mean_history: expected at least one history', 2)
   end
   local mean = {}
   for key, first in pairs(histories[1]) do
      local values = {}
      for i = 1, #first do
         local sum = 0
         for _, h in ipairs(histories) do
            if h[key] == nil or #h[key] ~= #first then
               error(string.format("mean_history: histories differ in length or keys at '%s'",
                  key), 2)
            end
            sum = sum + h[key][i]
         end
         values[i] = sum / #histories
      end
      mean[key] = values
   end
   return mean
end

-- Mean, minimum and maximum of a non-empty list of numbers.
function M.mean_min_max(values)
   local sum, lo, hi = 0, math.huge, -math.huge
   for _, v in ipairs(values) do
      sum, lo, hi = sum + v, math.min(lo, v), math.max(hi, v)
   end
   return sum / #values, lo, hi
end

-- Summarises one approach over seeds: records the run '<approach>/mean'
-- (the element-wise mean of the histories, with attrs and the seeds as
-- attributes) and the summaries <approach>/final_test_acc and
-- <approach>/seeds, and returns { approach =, mean =, min =, max = } of
-- the final test accuracies.
function Results:add_seed_summary(approach, seeds, histories, attrs)
   local finals = {}
   for i, h in ipairs(histories) do
      finals[i] = h.test_acc[#h.test_acc]
   end
   local mean_attrs = { seeds = seeds }
   for k, v in pairs(attrs or {}) do
      mean_attrs[k] = v
   end
   mean_attrs.seed = nil
   self:add_run(approach .. '/mean', M.mean_history(histories), mean_attrs)
   self:add_summary(approach .. '/final_test_acc', finals)
   self:add_summary(approach .. '/seeds', seeds)
   local mean, lo, hi = M.mean_min_max(finals)
   return { approach = approach, mean = mean, min = lo, max = hi, n = #finals }
end

-- Checks the two lists of a recipe that compares approaches over seeds:
-- config.seeds must be a non-empty list of distinct integers >= 0, and
-- config.approaches a non-empty list of distinct names from `valid` (see
-- check_choices). Errors name the recipe and the option.
function M.check_seeds_and_approaches(recipe_name, config, valid)
   local seeds = config.seeds
   if type(seeds) ~= 'table' or #seeds == 0 then
      error(string.format('%s: --seeds must list at least one seed, e.g. --seeds 1,2,3',
         recipe_name), 0)
   end
   local seen = {}
   for _, seed in ipairs(seeds) do
      if type(seed) ~= 'number' or seed < 0 or seed ~= math.floor(seed) then
         error(string.format("%s: --seeds entry '%s' is not an integer >= 0", recipe_name,
            tostring(seed)), 0)
      end
      if seen[seed] then
         error(string.format("%s: seed %d appears twice in --seeds; give each seed once",
            recipe_name, seed), 0)
      end
      seen[seed] = true
   end
   M.check_choices(recipe_name, config, 'approaches', valid)
end

-- Logs the table `approach  mean  min  max` of final test accuracy from
-- rows returned by add_seed_summary.
function M.log_accuracy_table(log, rows)
   local width = #'approach'
   for _, row in ipairs(rows) do
      width = math.max(width, #row.approach)
   end
   local fmt = '%-' .. width .. 's %8s %8s %8s %6s'
   log(fmt, 'approach', 'mean', 'min', 'max', 'seeds')
   for _, row in ipairs(rows) do
      log('%-' .. width .. 's %8.4f %8.4f %8.4f %6d', row.approach, row.mean, row.min, row.max,
         row.n)
   end
end

-- Asks for a PNG plot of y against x for the given runs (all runs if nil).
-- spec: x, y (history keys), xlabel, ylabel, title, runs, file suffix,
-- style (gnuplot plot style, default 'linespoints'; 'lines' suits long
-- histories) and key (gnuplot key position, default 'bottom right').
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
      for _, name in ipairs(self.summary_order) do
         h5:write('/summary/' .. name, self.summaries[name], 'f64')
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
      'set key ' .. (spec.key or 'bottom right'),
      'set grid',
   }
   if #runs == 0 then
      error(string.format('plot %s: there are no runs to draw', path), 0)
   end
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
      plots[#plots + 1] = string.format('%s with %s lw 2 title %s',
         gnuplot_quote(file), spec.style or 'linespoints', gnuplot_quote(name))
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
      if os.execute('command -v gnuplot >/dev/null 2>&1') ~= 0 then
         error(string.format('cannot draw %s: gnuplot is not installed; run make deps', path), 0)
      end
      local first = errtext:match('[^\n]*"[^"]*" line %d+: ([^\n]*)') or errtext:match('[^\n]+')
      error(string.format('gnuplot failed drawing %s: %s', path, first or 'no message'), 0)
   end
   local renamed, rename_err = os.rename(path .. '.tmp.png', path)
   if not renamed then
      os.remove(path .. '.tmp.png')
      error(string.format('cannot write plot %s: %s', path, tostring(rename_err)), 0)
   end
end

------------------------------------------------------------- config checks

-- The checks below raise errors shaped like "transfer: --epochs must be an
-- integer >= 1, got 0", so recipes can validate every option before any
-- expensive work starts.

local function range_text(min, max)
   if min and max then
      return string.format('in %s..%s', tostring(min), tostring(max))
   elseif min then
      return '>= ' .. tostring(min)
   elseif max then
      return '<= ' .. tostring(max)
   end
   return ''
end

-- Checks that config[key] is an integer in [min, max] (either bound may be nil).
function M.check_integer(recipe_name, config, key, min, max)
   local v = config[key]
   if type(v) ~= 'number' or v ~= math.floor(v) or (min and v < min) or (max and v > max) then
      error(string.format('%s: --%s must be an integer %s, got %s', recipe_name, key,
         range_text(min, max), tostring(v)), 0)
   end
end

-- Checks that config[key] is a finite number in [min, max]; with `positive`
-- it must also be above zero.
function M.check_number(recipe_name, config, key, min, max, positive)
   local v = config[key]
   local bad = type(v) ~= 'number' or v ~= v or v == math.huge or v == -math.huge
      or (min and v < min) or (max and v > max) or (positive and v <= 0)
   if bad then
      local want = positive and ('> 0' .. (max and ' and <= ' .. max or ''))
         or range_text(min, max)
      error(string.format('%s: --%s must be a finite number %s, got %s', recipe_name, key,
         want, tostring(v)), 0)
   end
end

-- Checks that config[key] is a valid Lua pattern.
function M.check_pattern(recipe_name, config, key)
   local v = config[key]
   local ok, err = pcall(string.find, '', tostring(v))
   if type(v) ~= 'string' or not ok then
      error(string.format("%s: --%s '%s' is not a valid Lua pattern (%s)", recipe_name, key,
         tostring(v), tostring(err):gsub('^.-: ', '')), 0)
   end
end

-- Returns "1 seed", "3 seeds": a count and a word in the singular or plural.
function M.count_of(n, word)
   return string.format('%d %s%s', n, word, n == 1 and '' or 's')
end

-- Checks that config[key] is one of the `valid` names.
function M.check_choice(recipe_name, config, key, valid)
   for _, name in ipairs(valid) do
      if config[key] == name then
         return
      end
   end
   error(string.format("%s: --%s is '%s' (expected one of %s)", recipe_name, key,
      tostring(config[key]), table.concat(valid, ', ')), 0)
end

-- Checks that the list config[key] is non-empty, has no repeats and holds only `valid` names.
function M.check_choices(recipe_name, config, key, valid)
   local list = config[key]
   local known, seen = {}, {}
   for _, name in ipairs(valid) do
      known[name] = true
   end
   if type(list) ~= 'table' or #list == 0 then
      error(string.format('%s: --%s must list at least one of %s', recipe_name, key,
         table.concat(valid, ', ')), 0)
   end
   for _, name in ipairs(list) do
      if not known[name] then
         error(string.format("%s: unknown entry '%s' in --%s (expected %s)", recipe_name,
            tostring(name), key, table.concat(valid, ', ')), 0)
      end
      if seen[name] then
         error(string.format("%s: '%s' appears twice in --%s", recipe_name, name, key), 0)
      end
      seen[name] = true
   end
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
