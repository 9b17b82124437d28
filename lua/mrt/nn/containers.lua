-- mrt.nn.containers: Sequential and Residual, the containers that compose
-- layers, and where backward stops early.
--
-- Backward in a container runs from the output down only as far as the
-- lowest child that still has a parameter needing a gradient (or to the
-- input when the caller needs dx). Below that point no input gradient is
-- computed, and a child whose parameters are all frozen computes no weight
-- gradient either.
--
-- Fusion: where the engine has the fused batch-norm ops, a BatchNorm and
-- the ReLU after it in a Sequential run as one pass over the activation
-- (BatchNorm:forward_act). So do the last BatchNorm of a residual branch,
-- the sum with the shortcut and the ReLU after the sum. The ReLU's output
-- is then the fused output, and its own forward and backward do not run.

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

-- True when `m` is a BatchNorm that can absorb the ReLU module `next` on input h.
local function fuses_relu(m, next, h)
   return next ~= nil and next.kind == 'ReLU' and m.forward_act ~= nil and m:can_fuse(h)
end

-- Whether `prev`, the sibling before a module, writes a buffer of its own
-- that only that module reads, so that the module may overwrite it.
local function private_output(prev)
   return prev ~= nil and (prev.kind == 'Conv2d' or prev.kind == 'Linear')
end

-- Runs children first..last on x (with fusion) and returns the last output.
-- Sets each child's `keep` and `input_grad` (whether its backward will be
-- asked for dx) from this container's and from the lowest trained child.
function Sequential:forward_range(x, first, last)
   local children = self.children
   local lowest = self:lowest_grad_child()
   local input_grad = self.input_grad
   if input_grad == nil then
      input_grad = self.last_need_dx or false
   end
   self.forward_lowest, self.forward_input_grad = lowest, input_grad
   local h = x
   local i = first
   while i <= last do
      local m = children[i].module
      local next = i < last and children[i + 1].module or nil
      m.keep = self.keep ~= false and (input_grad or (lowest ~= nil and i >= lowest))
      m.input_grad = input_grad or (lowest ~= nil and lowest < i)
      if fuses_relu(m, next, h) then
         local prev = i > first and children[i - 1].module or nil
         h = m:forward_act(h, nil, true, not m.keep and private_output(prev))
         next:absorbed_by(m, h)
         i = i + 2
      else
         if m.kind == 'ReLU' then
            m:absorbed_by(nil)
         end
         h = m:forward(h)
         i = i + 1
      end
   end
   return h
end

function Sequential:update_output(x)
   return self:forward_range(x, 1, #self.children)
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

-- Runs backward from child `last` down, with dy the gradient of its
-- output; returns dx when need_dx.
function Sequential:backward_range(x, dy, last, need_dx)
   local children = self.children
   local lowest = self:lowest_grad_child()
   if (lowest == nil or lowest > last) and not need_dx then
      return nil
   end
   for i = last, 1, -1 do
      local child = children[i].module
      local input = i == 1 and x or children[i - 1].module.output
      local child_need_dx = need_dx or (lowest ~= nil and lowest < i)
      if child.absorber ~= nil then
         -- A ReLU fused into the BatchNorm below it: that BatchNorm applies its mask.
      elseif child.act ~= nil then
         dy = child:backward_act(input, dy, child_need_dx)
      else
         dy = child:backward(input, dy, child_need_dx)
      end
      if not child_need_dx then
         return nil
      end
   end
   return dy
end

-- True when a backward pass with need_dx reaches a child that ran without keeping.
function Sequential:forward_was_short(need_dx)
   local lowest = self:lowest_grad_child()
   if need_dx and not self.forward_input_grad then
      return true
   end
   return lowest ~= nil and (self.forward_lowest == nil or lowest < self.forward_lowest)
end

function Sequential:update_grad(x, dy, need_dx)
   if self.container == nil then
      self.last_need_dx = need_dx
      if self:forward_was_short(need_dx) then
         -- Runs the forward again, keeping everything; the batch-norm running
         -- statistics already took this batch once.
         self.input_grad = need_dx
         local bns = {}
         for _, m in ipairs(self:named_modules()) do
            if m.module.kind == 'BatchNorm' and not m.module.hold_stats then
               bns[#bns + 1] = m.module
               m.module.hold_stats = true
            end
         end
         self:update_output(x)
         for _, bn in ipairs(bns) do
            bn.hold_stats = false
         end
         self.input_grad = nil
      end
   end
   return self:backward_range(x, dy, #self.children, need_dx)
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
   branch.container = self
   if shortcut ~= nil then
      shortcut.container = self
   end
   if self.post ~= nil then
      self.post.container = self
   end
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

-- The BatchNorm ending the branch when it can absorb the sum and post
-- (a ReLU or nothing) on x, else nil.
function Residual:fused_tail(x)
   local children = self.branch.children
   local last = children[#children] and children[#children].module
   if last == nil or last.forward_act == nil or #children < 2 then
      return nil
   end
   if self.post ~= nil and self.post.kind ~= 'ReLU' then
      return nil
   end
   return last:can_fuse(x) and last or nil
end

-- Passes this block's keep and input_grad on to its parts: a kept block
-- runs backward through its branch and shortcut, down to their inputs when
-- the block's dx is needed.
function Residual:pass_keep()
   for _, part in ipairs({ self.branch, self.shortcut or false, self.post or false }) do
      if part then
         part.keep = self.keep
         part.input_grad = self.keep ~= false and self.input_grad
      end
   end
end

-- Forward with the branch's last BatchNorm, the sum and the ReLU in one pass.
-- Without keep, the result overwrites the branch's last convolution output.
function Residual:fused_output(x, bn)
   local branch = self.branch
   local n = #branch.children
   local h = branch:forward_range(x, 1, n - 1)
   local b = self.shortcut ~= nil and self.shortcut:forward(x) or x
   local inplace = self.keep == false and private_output(branch.children[n - 1].module)
   local y = bn:forward_act(h, self:as_layout_of('b', b, h), self.post ~= nil, inplace)
   branch.output = y
   if self.post ~= nil then
      self.post:absorbed_by(bn, y)
   end
   self.sum = nil
   return y
end

function Residual:update_output(x)
   self:pass_keep()
   local bn = self:fused_tail(x)
   self.fused_bn = bn
   if bn ~= nil then
      return self:fused_output(x, bn)
   end
   if self.post ~= nil then
      self.post:absorbed_by(nil)
   end
   local a = self.branch:forward(x)
   local b = self.shortcut ~= nil and self.shortcut:forward(x) or x
   -- A branch that starts with a convolution may return channels-last output for NCHW x.
   b = self:as_layout_of('b', b, a)
   local sum = self:output_like('sum', a.shape, a.channels_last)
   sum:add(a, b)
   self.sum = sum
   if self.post ~= nil then
      return self.post:forward(sum)
   end
   return sum
end

-- Backward of fused_output: the fused op gives the gradients of the branch
-- before its BatchNorm and of the shortcut's output (dy masked by the ReLU).
function Residual:fused_grad(x, dy, need_dx)
   local branch, shortcut, bn = self.branch, self.shortcut, self.fused_bn
   local n = #branch.children
   local lowest = branch:lowest_grad_child()
   local need_dh = need_dx or (lowest ~= nil and lowest < n)
   local need_dres = need_dx or (shortcut ~= nil and shortcut:any_grad())
   local dh, dres = bn:backward_act(branch.children[n - 1].module.output, dy, need_dh, need_dres)
   local dx_branch = need_dh and branch:backward_range(x, dh, n - 1, need_dx) or nil
   local dx_short
   if shortcut ~= nil then
      dx_short = need_dres and shortcut:backward(x, dres, need_dx) or nil
   else
      dx_short = dres
   end
   if not need_dx then
      return nil
   end
   local dx = self:output_like('dx', x.shape, x.channels_last)
   dx:add(self:as_layout_of('dx_branch', dx_branch, x), self:as_layout_of('dx_short', dx_short, x))
   return dx
end

function Residual:update_grad(x, dy, need_dx)
   if not need_dx and not self.grad_below then
      return nil
   end
   if self.fused_bn ~= nil then
      return self:fused_grad(x, dy, need_dx)
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
   local dx = self:output_like('dx', x.shape, x.channels_last)
   dx:add(self:as_layout_of('dx_branch', dx_branch, x), self:as_layout_of('dx_short', dx_short, x))
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
