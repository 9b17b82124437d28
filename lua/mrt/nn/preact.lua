-- mrt.nn.preact: the pre-activation residual block of wide ResNets.
--
--    a = pre(x)                      (batch norm, ReLU)
--    y = branch(a) + shortcut(s)     s = a when the shortcut is a layer, else x
--
-- With no shortcut layer the identity adds x itself, not a. The children of
-- pre and branch are named directly on the block (`bn1`, `conv1`, `bn2`,
-- `conv2`), the shortcut after them (`convShortcut` unless
-- opts.shortcut_name says otherwise), which is the order and naming of the
-- common PyTorch WideResNet code. Backward stops early like the other
-- containers: nothing below the block runs when neither dx nor a parameter
-- gradient inside it is needed, and pre runs backward only when dx or one
-- of its own parameters needs it.

local module = require 'mrt.nn.module'

local M = {}

local PreActResidual = module.class('PreActResidual')
M.PreActResidual = PreActResidual

-- pre and branch are Sequentials; shortcut is a module or nil (identity on x).
-- opts: shortcut_name ('convShortcut'), device.
function M.preact_residual(pre, branch, shortcut, opts)
   opts = opts or {}
   local self = setmetatable({}, PreActResidual):init(opts.device)
   self.pre = pre
   self.branch = branch
   self.shortcut = shortcut
   self.shortcut_name = opts.shortcut_name or 'convShortcut'
   for _, part in ipairs({ pre, branch, shortcut }) do
      part.container = self
   end
   for _, c in ipairs(self:named_children()) do
      if self[c.name] == nil then
         self[c.name] = c.module
      end
   end
   return self
end

function PreActResidual:named_children()
   local out = {}
   for _, part in ipairs({ self.pre, self.branch }) do
      for _, c in ipairs(part.children) do
         out[#out + 1] = c
      end
   end
   if self.shortcut ~= nil then
      out[#out + 1] = { name = self.shortcut_name, module = self.shortcut }
   end
   return out
end

function PreActResidual:refresh_grad_flags()
   local any = self.pre:refresh_grad_flags()
   any = self.branch:refresh_grad_flags() or any
   if self.shortcut ~= nil then
      any = self.shortcut:refresh_grad_flags() or any
   end
   self.grad_below = any
   return any
end

-- Passes this block's keep and input_grad (see mrt.nn.containers) on to its
-- parts: the gradient at a is needed for dx and for pre's own parameters.
function PreActResidual:pass_keep()
   local keep = self.keep
   local need_da = keep ~= false and (self.input_grad or self.pre:any_grad())
   self.pre.keep, self.pre.input_grad = keep, keep ~= false and self.input_grad
   self.branch.keep, self.branch.input_grad = keep, need_da
   if self.shortcut ~= nil then
      self.shortcut.keep, self.shortcut.input_grad = keep, need_da
   end
end

function PreActResidual:update_output(x)
   self:pass_keep()
   local a = self.pre:forward(x)
   local b = self.branch:forward(a)
   local s = self.shortcut ~= nil and self.shortcut:forward(a) or x
   -- The branch starts with a convolution, which may make its output channels-last.
   local y = self:output_like('y', b.shape, b.channels_last)
   y:add(b, self:as_layout_of('s', s, b))
   return y
end

function PreActResidual:update_grad(x, dy, need_dx)
   if not need_dx and not self.grad_below then
      return nil
   end
   local a = self.pre.output
   -- The gradient at a is needed for dx and for pre's own parameters.
   local need_da = need_dx or self.pre:any_grad()
   local da = self.branch:backward(a, dy, need_da)
   if self.shortcut ~= nil then
      local ds = self.shortcut:backward(a, dy, need_da)
      if need_da then
         local sum = self:output_like('da', a.shape, a.channels_last)
         sum:add(self:as_layout_of('da_branch', da, a), self:as_layout_of('da_short', ds, a))
         da = sum
      end
   end
   if not need_da then
      return nil
   end
   local dx = self.pre:backward(x, da, need_dx)
   if not need_dx then
      return nil
   end
   if self.shortcut == nil then
      local sum = self:output_like('dx', x.shape, x.channels_last)
      sum:add(self:as_layout_of('dx_pre', dx, x), self:as_layout_of('dy', dy, x))
      dx = sum
   end
   return dx
end

return M
