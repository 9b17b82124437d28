-- mrt.nn.module: the Module base class shared by every layer and container.
--
-- A module owns named parameters (each with a gradient tensor and a
-- needs_grad flag), named buffers (batch-norm running statistics) and named
-- children. Dotted names (`layer2.0.conv1.weight`) come from the child
-- names, so models built with torchvision's child names load torchvision
-- checkpoints by name.
--
-- The layer contract has two verbs. forward(x) computes and keeps what
-- backward needs; backward(x, dy, need_dx) writes the gradients of the
-- parameters whose needs_grad is set (overwriting them) and returns dx only
-- when need_dx is true. Containers use any_grad() to stop backward below the
-- deepest parameter that needs a gradient.
--
-- Channels-last activations. On a backend that supports them (the CPU),
-- a Conv2d turns an NCHW input into a channels-last one ([N,H,W,C], marked
-- by the field `channels_last = true` on the tensor) and every layer after
-- it keeps that layout, because the convolution kernels are fastest on it.
-- The layout stays inside a model: a module outside any container (field
-- `container`, set when a container takes it; usually the model the caller
-- runs) returns a 4-D output in NCHW and takes its gradient in NCHW, and a
-- Conv2d that converted its input returns dx in NCHW.
-- module.channels_last = false (see set_channels_last) keeps a Conv2d on
-- NCHW.

local F = require 'mrt.F'
local T = require 'mrt.tensor'

local M = {}

local Module = {}
Module.__index = Module
M.Module = Module

-- Creates a subclass whose instances get `kind` as their type name.
function M.class(kind, parent)
   parent = parent or Module
   local cls = setmetatable({}, { __index = parent })
   cls.__index = cls
   cls.__tostring = parent.__tostring
   cls.kind = kind
   cls.parent = parent
   return cls
end

function Module:__tostring()
   return 'nn.' .. (self.kind or 'Module')
end

-- Sets the fields every module has; subclasses call it first.
function Module:init(device)
   self.params = {}        -- ordered list of parameter entries
   self.param_index = {}   -- local name -> entry
   self.buffers = {}       -- ordered list of { name=, value= }
   self.children = {}      -- ordered list of { name=, module= }
   self.training = true
   self.device = device or T.default_device()
   self.cache = {}         -- output and scratch tensors, reused across steps
   self.views = {}         -- reshaped views of tensors, reused while the tensor is the same
   self.grad_below = false
   return self
end

-- Registers a parameter. kind is 'weight' or 'bias'; it drives partitions by kind.
function Module:add_param(name, value, kind)
   local entry = {
      name = name,
      value = value,
      grad = T.zeros(value.shape, value.device),
      needs_grad = true,
      kind = kind or (name == 'bias' and 'bias' or 'weight'),
      module = self,
   }
   self.params[#self.params + 1] = entry
   self.param_index[name] = entry
   return entry
end

function Module:param(name)
   return self.param_index[name]
end

function Module:add_buffer(name, value)
   self.buffers[#self.buffers + 1] = { name = name, value = value }
   return value
end

function Module:add(name, child)
   if type(name) ~= 'string' then
      child, name = name, tostring(#self.children)
   end
   for _, c in ipairs(self.children) do
      if c.name == name then
         error(string.format("add: %s already has a child named '%s'", tostring(self), name), 2)
      end
   end
   self.children[#self.children + 1] = { name = name, module = child }
   self[name] = self[name] == nil and child or self[name]
   child.container = self
   return self
end

-- Children as (name, module) pairs in registration order.
function Module:named_children()
   return self.children
end

-- Every parameter of this module and its children, depth first:
-- a list of { name = 'layer1.0.conv1.weight', entry = <parameter entry> }.
function Module:parameters(prefix, out)
   out = out or {}
   prefix = prefix or ''
   for _, e in ipairs(self.params) do
      out[#out + 1] = { name = prefix .. e.name, entry = e }
   end
   for _, c in ipairs(self:named_children()) do
      c.module:parameters(prefix .. c.name .. '.', out)
   end
   return out
end

-- Every buffer, depth first: a list of { name =, value =, module = }.
function Module:named_buffers(prefix, out)
   out = out or {}
   prefix = prefix or ''
   for _, b in ipairs(self.buffers) do
      out[#out + 1] = { name = prefix .. b.name, value = b.value, module = self }
   end
   for _, c in ipairs(self:named_children()) do
      c.module:named_buffers(prefix .. c.name .. '.', out)
   end
   return out
end

-- Every module, depth first, with its dotted name ('' for the root).
function Module:named_modules(prefix, out)
   out = out or {}
   prefix = prefix or ''
   out[#out + 1] = { name = prefix:gsub('%.$', ''), module = self }
   for _, c in ipairs(self:named_children()) do
      c.module:named_modules(prefix .. c.name .. '.', out)
   end
   return out
end

function Module:train(on)
   if on == nil then
      on = true
   end
   for _, m in ipairs(self:named_modules()) do
      m.module.training = on
   end
   return self
end

function Module:evaluate()
   return self:train(false)
end

-- Recomputes grad_below (this module or a descendant has a parameter
-- needing a gradient) bottom up; call after changing needs_grad flags.
function Module:refresh_grad_flags()
   local any = false
   for _, e in ipairs(self.params) do
      any = any or e.needs_grad
   end
   for _, c in ipairs(self:named_children()) do
      any = c.module:refresh_grad_flags() or any
   end
   self.grad_below = any
   return any
end

function Module:any_grad()
   return self.grad_below
end

-- Sets needs_grad of every parameter from predicate(name, entry), then
-- refreshes the flags. A flattened model reuses its parameter list, since
-- optimizers call this on every step.
function Module:set_needs_grad(predicate)
   local list = self.flat ~= nil and self.flat.list or self:parameters()
   for _, p in ipairs(list) do
      p.entry.needs_grad = predicate(p.name, p.entry) and true or false
   end
   self:refresh_grad_flags()
   return self
end

-- A tensor kept in this module under key, reallocated only when the shape
-- changes. Shapes are part of the key, so alternating training and
-- evaluation batch sizes reuse two buffers instead of reallocating.
function Module:tensor(key, shape)
   local full = key .. T.shape_string(shape)
   local t = self.cache[full]
   if t == nil then
      t = T.zeros(shape, self.device)
      self.cache[full] = t
   end
   return t
end

-- A tensor cached like tensor(key, shape), marked channels-last when
-- `channels_last` is true. The two layouts never share a tensor.
function Module:output_like(key, shape, channels_last)
   if channels_last then
      local t = self:tensor(key .. ':last', shape)
      t.channels_last = true
      return t
   end
   return self:tensor(key, shape)
end

-- A view of t with the given shape, made once and reused while the same
-- tensor with the same shape comes back under key.
function Module:view_of(key, t, shape)
   local entry = self.views[key]
   if entry ~= nil and entry.base == t and entry.base_shape == t.shape then
      return entry.view
   end
   local v = t:view(shape)
   self.views[key] = { base = t, base_shape = t.shape, view = v }
   return v
end

-- The channels-last copy of an NCHW tensor t[N,C,H,W], cached under key.
function Module:channels_last_copy(key, t)
   local s = t.shape
   return F.to_channels_last(t, self:output_like(key, { s[1], s[3], s[4], s[2] }, true))
end

-- The NCHW copy of a channels-last tensor t[N,H,W,C], cached under key.
function Module:channels_first_copy(key, t)
   local s = t.shape
   return F.to_channels_first(t, self:tensor(key, { s[1], s[4], s[2], s[3] }))
end

-- t in the layout of `like`: t itself, or a copy cached under key.
function Module:as_layout_of(key, t, like)
   if (t.channels_last or false) == (like.channels_last or false) then
      return t
   end
   if like.channels_last then
      return self:channels_last_copy(key, t)
   end
   return self:channels_first_copy(key, t)
end

-- Sets whether the Conv2d layers of this module may switch to channels-last
-- activations (true, the default) or stay on NCHW (false).
function Module:set_channels_last(on)
   for _, m in ipairs(self:named_modules()) do
      m.module.channels_last = on and true or false
      m.module.cache = {}
      m.module.views = {}
   end
   return self
end

function Module:forward(x)
   local y = self:update_output(x)
   self.output = y
   if y.channels_last and self.container == nil then
      return self:channels_first_copy('output:nchw', y)
   end
   return y
end

function Module:backward(x, dy, need_dx)
   local out = self.output
   if self.container == nil and out ~= nil and out.channels_last and not dy.channels_last then
      dy = self:channels_last_copy('dy', dy)
   end
   return self:update_grad(x, dy, need_dx)
end

function Module:update_output(x)
   error('update_output is not implemented by ' .. tostring(self), 2)
end

function Module:update_grad(x, dy, need_dx)
   error('update_grad is not implemented by ' .. tostring(self), 2)
end

-- Moves every parameter, gradient and buffer to a device (before flatten).
function Module:to(device)
   for _, m in ipairs(self:named_modules()) do
      local mod = m.module
      if mod.flat ~= nil and mod.device ~= device then
         error('to: move the model before its parameters are flattened', 2)
      end
      for _, e in ipairs(mod.params) do
         e.value = e.value:to(device)
         e.grad = e.grad:to(device)
      end
      for _, b in ipairs(mod.buffers) do
         b.value = b.value:to(device)
         mod[b.name] = b.value
      end
      mod.device = device
      mod.cache = {}
      mod.views = {}
   end
   return self
end

-- Moves all parameters into one flat buffer and all gradients into another,
-- so an optimizer updates a whole part in one fused pass. Each parameter
-- entry gets `offset` (0-based, in elements) into the flat buffers. Returns
-- { params = Tensor, grads = Tensor, numel = n, list = parameters() }.
function Module:flatten()
   if self.flat ~= nil then
      return self.flat
   end
   local list = self:parameters()
   local total = 0
   for _, p in ipairs(list) do
      total = total + p.entry.value:numel()
   end
   local device = self.device
   local pstore = T.storage(math.max(total, 1), device)
   local gstore = T.storage(math.max(total, 1), device)
   local offset = 0
   for _, p in ipairs(list) do
      local e = p.entry
      local n = e.value:numel()
      T.view_of(pstore, offset, e.value.shape, device):copy(e.value)
      e.value:rebind(pstore, offset)
      e.grad:rebind(gstore, offset)
      e.grad:zero()
      e.offset = offset
      e.full_name = p.name
      offset = offset + n
   end
   self.flat = {
      params = T.view_of(pstore, 0, { total }, device),
      grads = T.view_of(gstore, 0, { total }, device),
      numel = total,
      list = list,
   }
   self.flat.grads:zero()
   self:refresh_grad_flags()
   return self.flat
end

-- Swaps the classifier (the child named by self.head_name, 'fc' by default)
-- for a freshly initialised Linear with n outputs. A flattened model gets
-- new flat buffers, so optimizers must be created after this call.
-- opts: rng, bias (true).
function Module:replace_head(n, opts)
   opts = opts or {}
   local name = self.head_name or 'fc'
   for _, c in ipairs(self.children) do
      if c.name == name then
         local layers = require 'mrt.nn.layers'
         local old = c.module
         if old.n_in == nil then
            error(string.format("replace_head: child '%s' is not a Linear layer", name), 2)
         end
         local head = layers.linear(old.n_in, n, { rng = opts.rng, bias = opts.bias,
            device = 'cpu' })
         if self.device ~= 'cpu' then
            head:to(self.device)
         end
         head.training = self.training
         head.container = self
         c.module = head
         self[name] = head
         if self.flat ~= nil then
            self.flat = nil
            self:flatten()
         end
         return self
      end
   end
   error(string.format("replace_head: no child named '%s'", name), 2)
end

-- Number of parameter elements.
function Module:num_params()
   local n = 0
   for _, p in ipairs(self:parameters()) do
      n = n + p.entry.value:numel()
   end
   return n
end

return M
