-- mrt.checkpoint: model state by name, in mrt's HDF5 checkpoints and in
-- safetensors files as published for torchvision/timm ResNets.
--
-- A state is a map from dotted names (`layer1.0.bn1.running_mean`) to CPU
-- Tensors covering every parameter and batch-norm buffer. Loading checks
-- every name: missing, unexpected and wrong-shaped tensors are all listed
-- in one error unless the caller asks to be lenient.

local T = require 'mrt.tensor'

local M = {}

-- The model's state as name -> Tensor (on the model's device, shared, not copied).
function M.state_dict(model)
   local state, order = {}, {}
   for _, p in ipairs(model:parameters()) do
      state[p.name] = p.entry.value
      order[#order + 1] = p.name
   end
   for _, b in ipairs(model:named_buffers()) do
      state[b.name] = b.value
      order[#order + 1] = b.name
   end
   return state, order
end

-- Names that checkpoints carry but mrt keeps elsewhere or does not need:
-- PyTorch's batch-norm step counter is only used when momentum is None.
local function ignorable(name)
   return name:match('%.num_batches_tracked$') ~= nil
end

-- Copies tensors (name -> Tensor, any device) into the model's parameters
-- and buffers. opts.strict (default true) makes any missing, unexpected or
-- wrong-shaped name an error; with strict = false they are skipped and
-- returned in the report { missing = {}, unexpected = {}, mismatched = {} }.
-- opts.prefix is stripped from incoming names (e.g. 'module.').
function M.load_state(model, tensors, opts)
   opts = opts or {}
   local strict = opts.strict ~= false
   local state, order = M.state_dict(model)
   local report = { missing = {}, unexpected = {}, mismatched = {}, loaded = 0 }
   local incoming = {}
   for name, t in pairs(tensors) do
      local key = name
      if opts.prefix and key:sub(1, #opts.prefix) == opts.prefix then
         key = key:sub(#opts.prefix + 1)
      end
      incoming[key] = t
   end
   for _, name in ipairs(order) do
      local src, dst = incoming[name], state[name]
      if src == nil then
         report.missing[#report.missing + 1] = name
      elseif src:numel() ~= dst:numel() or src:dim() ~= dst:dim()
         or T.shape_string(src.shape) ~= T.shape_string(dst.shape) then
         report.mismatched[#report.mismatched + 1] = string.format('%s (checkpoint %s, model %s)',
            name, src:shape_string(), dst:shape_string())
      end
   end
   local unexpected = {}
   for name in pairs(incoming) do
      if state[name] == nil and not ignorable(name) then
         unexpected[#unexpected + 1] = name
      end
   end
   table.sort(unexpected)
   report.unexpected = unexpected
   local bad = #report.missing + #report.unexpected + #report.mismatched
   if strict and bad > 0 then
      local parts = {}
      for _, kind in ipairs({ 'missing', 'unexpected', 'mismatched' }) do
         if #report[kind] > 0 then
            parts[#parts + 1] = string.format('%d %s: %s', #report[kind], kind,
               table.concat(report[kind], ', '))
         end
      end
      error('load_state: checkpoint does not match the model (' .. table.concat(parts, '; ')
         .. '); pass strict = false to load the matching tensors only', 2)
   end
   for _, name in ipairs(order) do
      local src, dst = incoming[name], state[name]
      if src ~= nil and src:numel() == dst:numel()
         and T.shape_string(src.shape) == T.shape_string(dst.shape) then
         dst:copy(src)
         report.loaded = report.loaded + 1
      end
   end
   return report
end

-- Loads a safetensors file (F32, F16, BF16 or F64 tensors) into the model by name.
function M.load_safetensors(model, path, opts)
   local mio = require 'mrt.io'
   local tensors = mio.safetensors_read(path)
   return M.load_state(model, tensors, opts)
end

-- Writes the model's parameters and buffers as a safetensors file (float32).
function M.save_safetensors(model, path, metadata)
   local mio = require 'mrt.io'
   local state, order = M.state_dict(model)
   local list = {}
   for _, name in ipairs(order) do
      list[#list + 1] = { name = name, tensor = state[name]:to('cpu') }
   end
   mio.safetensors_write(path, list, metadata or {})
end

return M
