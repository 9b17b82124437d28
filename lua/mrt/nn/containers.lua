-- mrt.nn.containers: Sequential and Residual, the containers that compose
-- layers, and where backward stops early.
--
-- Backward in a container runs from the output down only as far as the
-- lowest child that still has a parameter needing a gradient (or to the
-- input when the caller needs dx). Below that point no input gradient is
-- computed, and a child whose parameters are all frozen computes no weight
-- gradient either.

local T = require 'mrt.tensor'
local module = require 'mrt.nn.module'

local M = {}

------------------------------------------------------------------ Sequential

local Sequential = module.class('Sequential')
M.Sequential = Sequential

-- Children may be given as a list of modules (named '0', '1', ...) or added
-- later with :add(name, module).
function M.sequential(list, opts)
   opts = opts or {}
   local self = setmetatable({}, Sequential):init(opts.device)
   for _, m in ipairs(list or {}) do
      self:add(m)
   end
   return self
end

function Sequential:update_output(x)
   local h = x
   for _, c in ipairs(self.children) do
      h = c.module:forward(h)
   end
   return h
end

-- Index of the lowest child with a parameter that needs a gradient, or nil.
function Sequential:lowest_grad_child()
   for i, c in ipairs(self.children) do
      if c.module:any_grad() then
         return i
      end
   end
   return nil
end

function Sequential:update_grad(x, dy, need_dx)
   local children = self.children
   local lowest = self:lowest_grad_child()
   if lowest == nil and not need_dx then
      return nil
   end
   for i = #children, 1, -1 do
      local child = children[i].module
      local input = i == 1 and x or children[i - 1].module.output
      local child_need_dx = need_dx or (lowest ~= nil and lowest < i)
      dy = child:backward(input, dy, child_need_dx)
      if not child_need_dx then
         return nil
      end
   end
   return dy
end

-------------------------------------------------------------------- Residual

local Residual = module.class('Residual')
M.Residual = Residual

-- y = post(branch(x) + shortcut(x)), shortcut defaulting to identity and
-- post to nothing. The branch's children are named directly on the block
-- (torchvision's `layer1.0.conv1`), and the shortcut is named `downsample`
-- unless opts.shortcut_name says otherwise. opts.post is a module without
-- parameters (ReLU) applied after the addition.
function M.residual(branch, shortcut, opts)
   opts = opts or {}
   local self = setmetatable({}, Residual):init(opts.device)
   self.branch = branch
   self.shortcut = shortcut
   self.shortcut_name = opts.shortcut_name or 'downsample'
   self.post = opts.post
   for _, c in ipairs(branch.children) do
      if self[c.name] == nil then
         self[c.name] = c.module
      end
   end
   if shortcut ~= nil then
      self[self.shortcut_name] = shortcut
   end
   return self
end

function Residual:named_children()
   local out = {}
   for _, c in ipairs(self.branch.children) do
      out[#out + 1] = c
   end
   if self.shortcut ~= nil then
      out[#out + 1] = { name = self.shortcut_name, module = self.shortcut }
   end
   if self.post ~= nil then
      out[#out + 1] = { name = 'post', module = self.post }
   end
   return out
end

function Residual:refresh_grad_flags()
   local any = self.branch:refresh_grad_flags()
   if self.shortcut ~= nil then
      any = self.shortcut:refresh_grad_flags() or any
   end
   if self.post ~= nil then
      self.post:refresh_grad_flags()
   end
   self.grad_below = any
   return any
end

function Residual:update_output(x)
   local a = self.branch:forward(x)
   local b = self.shortcut ~= nil and self.shortcut:forward(x) or x
   local sum = self:tensor('sum', a.shape)
   sum:add(a, b)
   self.sum = sum
   if self.post ~= nil then
      return self.post:forward(sum)
   end
   return sum
end

function Residual:update_grad(x, dy, need_dx)
   if not need_dx and not self.grad_below then
      return nil
   end
   local dsum = dy
   if self.post ~= nil then
      dsum = self.post:backward(self.sum, dy, true)
   end
   local dx_branch = self.branch:backward(x, dsum, need_dx)
   local dx_short
   if self.shortcut ~= nil then
      dx_short = self.shortcut:backward(x, dsum, need_dx)
   elseif need_dx then
      dx_short = dsum
   end
   if not need_dx then
      return nil
   end
   local dx = self:tensor('dx', x.shape)
   dx:add(dx_branch, dx_short)
   return dx
end

-------------------------------------------------------------------- criterion

local F = require 'mrt.F'

local CrossEntropy = {}
CrossEntropy.__index = CrossEntropy
M.CrossEntropy = CrossEntropy

-- Mean softmax cross-entropy of logits [N, C] against int32 labels.
function M.cross_entropy()
   return setmetatable({ cache = {} }, CrossEntropy)
end

local function cached(self, key, shape, device)
   local full = key .. T.shape_string(shape) .. device
   local t = self.cache[full]
   if t == nil then
      t = T.zeros(shape, device)
      self.cache[full] = t
   end
   return t
end

-- Returns the mean loss and the number of correct argmax predictions.
function CrossEntropy:forward(logits, labels)
   self.probs = cached(self, 'probs', logits.shape, logits.device)
   self.labels = labels
   local loss, correct = F.xent_forward(logits, labels, self.probs)
   return loss, correct
end

-- Gradient of the mean loss (times scale) with respect to the logits.
function CrossEntropy:backward(scale)
   local d = cached(self, 'dlogits', self.probs.shape, self.probs.device)
   F.xent_backward(self.probs, self.labels, scale or 1, d)
   return d
end

return M
