-- mrt.optim.config: validation of option tables for optimizers, partitions
-- and schedules.
--
-- A schema maps each valid key to a rule { kind =, default =, min =, max =,
-- above =, below =, one_of =, expect = }. check() rejects unknown keys with
-- the list of valid ones and wrong values with the key, the value and what
-- was expected, and returns a copy of the options with defaults filled in.

local M = {}

-- A schedule is any table with an `at(self, iteration)` method (mrt.optim.schedule).
function M.is_schedule(v)
   return type(v) == 'table' and type(v.at) == 'function'
end

local function render(v)
   if type(v) == 'string' then
      return "'" .. v .. "'"
   end
   if type(v) == 'table' and v.describe ~= nil then
      return v:describe()
   end
   return tostring(v)
end
M.render = render

local function sorted_keys(t)
   local keys = {}
   for k in pairs(t) do
      keys[#keys + 1] = tostring(k)
   end
   table.sort(keys)
   return keys
end
M.sorted_keys = sorted_keys

local function bounds_text(rule)
   local parts = {}
   if rule.min ~= nil then
      parts[#parts + 1] = '>= ' .. rule.min
   end
   if rule.above ~= nil then
      parts[#parts + 1] = '> ' .. rule.above
   end
   if rule.max ~= nil then
      parts[#parts + 1] = '<= ' .. rule.max
   end
   if rule.below ~= nil then
      parts[#parts + 1] = '< ' .. rule.below
   end
   return #parts > 0 and (' ' .. table.concat(parts, ' and ')) or ''
end

-- What a rule accepts, in words ("a number >= 0").
local function expected(rule)
   if rule.expect ~= nil then
      return rule.expect
   end
   local kind = rule.kind
   if kind == 'number' then
      return 'a number' .. bounds_text(rule)
   elseif kind == 'integer' then
      return 'an integer' .. bounds_text(rule)
   elseif kind == 'lr' then
      return 'a number' .. bounds_text(rule) .. ' or a schedule'
   elseif kind == 'string' and rule.one_of ~= nil then
      return 'one of ' .. table.concat(rule.one_of, ', ')
   elseif kind == 'boolean' then
      return 'true or false'
   end
   return 'a ' .. kind
end
M.expected = expected

local function in_bounds(rule, v)
   return (rule.min == nil or v >= rule.min) and (rule.max == nil or v <= rule.max)
      and (rule.above == nil or v > rule.above) and (rule.below == nil or v < rule.below)
end

-- True when v satisfies the rule.
local function valid(rule, v)
   local kind = rule.kind
   if kind == 'number' or kind == 'integer' or kind == 'lr' then
      if kind == 'lr' and M.is_schedule(v) then
         return true
      end
      if type(v) ~= 'number' or v ~= v or v == math.huge or v == -math.huge then
         return false
      end
      if kind == 'integer' and v ~= math.floor(v) then
         return false
      end
      return in_bounds(rule, v)
   elseif kind == 'string' then
      if type(v) ~= 'string' then
         return false
      end
      if rule.one_of == nil then
         return true
      end
      for _, allowed in ipairs(rule.one_of) do
         if v == allowed then
            return true
         end
      end
      return false
   elseif kind == 'any' then
      return true
   end
   return type(v) == kind
end

-- Raises "<fn>: option '<key>' is <value> (expected ...)" at the given level.
function M.fail_option(fn, key, value, what, level)
   error(string.format("%s: option '%s' is %s (expected %s)", fn, key, render(value), what),
      level + 1)
end

-- As fail_option, with the value already rendered as text ("{0.9, 1}").
function M.fail_option_text(fn, key, text, what, level)
   error(string.format("%s: option '%s' is %s (expected %s)", fn, key, text, what), level + 1)
end

-- A list of numbers as "{a, b, c}".
function M.render_list(list)
   local parts = {}
   for i, v in ipairs(list) do
      parts[i] = tostring(v)
   end
   return '{' .. table.concat(parts, ', ') .. '}'
end

-- Returns a copy of opts with defaults filled in, or raises an error at
-- `level` (1 = the function calling check) naming the offending key.
-- A rule with `required = true` must be present.
function M.check(fn, opts, schema, level)
   level = (level or 1) + 1
   if opts == nil then
      opts = {}
   end
   if type(opts) ~= 'table' then
      error(string.format('%s: options are a %s (expected a table of options)', fn, type(opts)),
         level)
   end
   for key in pairs(opts) do
      if schema[key] == nil then
         error(string.format("%s: unknown option '%s' (valid options: %s)", fn, tostring(key),
            table.concat(sorted_keys(schema), ', ')), level)
      end
   end
   local out = {}
   for key, rule in pairs(schema) do
      local v = opts[key]
      if v == nil then
         if rule.required then
            error(string.format("%s: option '%s' is missing (expected %s)", fn, key,
               expected(rule)), level)
         end
         v = rule.default
      elseif not valid(rule, v) then
         M.fail_option(fn, key, v, expected(rule), level)
      end
      out[key] = v
   end
   return out
end

return M
