-- mrt.F: the engine's layer functions (engine/include/mrt_nn.h) on Tensors.
--
-- Each function runs on the context of its first tensor argument and writes
-- into output tensors the caller allocated, whose shapes the *_out_shape
-- helpers return. Optional tensors may be nil, and a backward skips a nil
-- output. Parameter gradients are combined as grad := beta*grad + new
-- (beta 0 overwrites, 1 accumulates); input gradients are overwritten. The
-- engine checks every shape and raises its message at the caller's level.

local lib = require 'mrt.ffi'
local tensor = require 'mrt.tensor'

local ffi, C = lib.ffi, lib.C

local F = {}

-- Returns the descriptor of an optional Tensor, or NULL.
local function descriptor(t)
   if t == nil then
      return nil
   end
   return t.c
end

local function is_integer(v)
   return type(v) == 'number' and v == math.floor(v)
end

-- A {h, w} pair of integers from an integer or a two-element list. The
-- engine checks their ranges.
local function pair(value, name, default, level)
   if value == nil then
      value = default
   end
   if is_integer(value) then
      return value, value
   end
   if type(value) == 'table' and #value == 2 and is_integer(value[1])
         and is_integer(value[2]) then
      return value[1], value[2]
   end
   error(string.format('%s must be an integer or a list {h, w} of integers, got %s', name,
      type(value) == 'table' and '{' .. table.concat(value, ',') .. '}' or tostring(value)),
      level + 1)
end

-- Returns 1 for true and 0 for false or nil. Anything else is an error,
-- because a C-style 0 would count as true in Lua.
local function flag(value, name, level)
   if value == nil or value == false then
      return 0
   end
   if value == true then
      return 1
   end
   error(string.format('%s must be a boolean, got %s', name, tostring(value)), level + 1)
end

--------------------------------------------------------------------- linear

-- y[N,O] := x[N,I] w[O,I]^T + b[O], where b may be nil.
function F.linear_forward(x, w, b, y)
   lib.check(C.mrt_linear_forward(x:context(), x.c, w.c, descriptor(b), y.c), 2)
   return y
end

-- Computes dx, dw and db from dy[N,O]. Each output may be nil.
function F.linear_backward(dy, x, w, dx, dw, db, beta)
   lib.check(C.mrt_linear_backward(dy:context(), dy.c, x.c, w.c, descriptor(dx),
      descriptor(dw), descriptor(db), beta or 0), 2)
end

--------------------------------------------------------------------- conv2d

-- Returns convolution parameters. Each of stride, pad and dilation is an
-- integer or {h, w}, with defaults stride 1, padding 0 and dilation 1.
-- channels_last (a boolean, default false) makes the activations
-- channels-last: x {N, H, W, C} and y {N, OH, OW, O}. groups is always 1.
function F.conv2d_params(stride, pad, dilation, channels_last)
   local sh, sw = pair(stride, 'conv2d_params: stride', 1, 2)
   local ph, pw = pair(pad, 'conv2d_params: pad', 0, 2)
   local dh, dw = pair(dilation, 'conv2d_params: dilation', 1, 2)
   return ffi.new('mrt_conv2d_params', {
      stride_h = sh, stride_w = sw, pad_h = ph, pad_w = pw,
      dilation_h = dh, dilation_w = dw, groups = 1,
      channels_last = flag(channels_last, 'conv2d_params: channels_last', 2),
   })
end

-- Output shape {N, O, OH, OW} of x {N, C, H, W} convolved with w {O, C, KH, KW};
-- {N, OH, OW, O} of x {N, H, W, C} when p is channels-last.
function F.conv2d_out_shape(xshape, wshape, p)
   if p.stride_h < 1 or p.stride_w < 1 or p.pad_h < 0 or p.pad_w < 0 or p.dilation_h < 1
         or p.dilation_w < 1 then
      error(string.format('conv2d_out_shape: invalid parameters stride %dx%d, padding %dx%d, '
         .. 'dilation %dx%d (expected stride and dilation >= 1, padding >= 0)', p.stride_h,
         p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w), 2)
   end
   local last = p.channels_last ~= 0
   local h, w = xshape[last and 2 or 3], xshape[last and 3 or 4]
   local oh = tonumber(C.mrt_conv2d_out_size(h, wshape[3], p.stride_h, p.pad_h, p.dilation_h))
   local ow = tonumber(C.mrt_conv2d_out_size(w, wshape[4], p.stride_w, p.pad_w, p.dilation_w))
   if oh < 1 or ow < 1 then
      error(string.format('conv2d_out_shape: input %s is too small for kernel %dx%d with '
         .. 'stride %dx%d, padding %dx%d and dilation %dx%d', tensor.shape_string(xshape),
         wshape[3], wshape[4], p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h,
         p.dilation_w), 2)
   end
   if last then
      return { xshape[1], oh, ow, wshape[1] }
   end
   return { xshape[1], wshape[1], oh, ow }
end

function F.conv2d_forward(p, x, w, b, y)
   lib.check(C.mrt_conv2d_forward(x:context(), p, x.c, w.c, descriptor(b), y.c), 2)
   return y
end

function F.conv2d_backward(p, dy, x, w, dx, dw, db, beta)
   lib.check(C.mrt_conv2d_backward(dy:context(), p, dy.c, x.c, w.c, descriptor(dx),
      descriptor(dw), descriptor(db), beta or 0), 2)
end

------------------------------------------------------------------ batchnorm

-- training and update_running are booleans (nil is false); momentum and eps
-- default to PyTorch's 0.1 and 1e-5. save_mean and save_invstd receive the
-- batch statistics that batchnorm_backward needs; evaluation accepts nil
-- for them.
function F.batchnorm_forward(x, gamma, beta, running_mean, running_var, save_mean,
                             save_invstd, y, training, update_running, momentum, eps)
   local train = flag(training, 'batchnorm_forward: training', 2)
   local update = flag(update_running, 'batchnorm_forward: update_running', 2)
   lib.check(C.mrt_batchnorm_forward(x:context(), x.c, gamma.c, beta.c,
      descriptor(running_mean), descriptor(running_var), descriptor(save_mean),
      descriptor(save_invstd), y.c, train, update, momentum or 0.1, eps or 1e-5), 2)
   return y
end

-- Computes the backward of a training-mode forward. beta combines dgamma and dbeta.
function F.batchnorm_backward(dy, x, gamma, save_mean, save_invstd, dx, dgamma, dbeta, beta)
   lib.check(C.mrt_batchnorm_backward(dy:context(), dy.c, x.c, gamma.c, save_mean.c,
      save_invstd.c, descriptor(dx), descriptor(dgamma), descriptor(dbeta), beta or 0), 2)
end

-- True when the engine on `device` (default: the default device) has the
-- fused batchnorm_act ops.
function F.batchnorm_act_supported(device)
   return C.mrt_batchnorm_act_supported(tensor.context(device)) ~= 0
end

-- y := relu(bn(x) + residual) in one pass; residual may be nil and relu is
-- a boolean. The other arguments are those of batchnorm_forward. y may be x
-- when no backward follows.
function F.batchnorm_act_forward(x, gamma, beta, running_mean, running_var, save_mean,
                                 save_invstd, residual, y, training, update_running, momentum,
                                 eps, relu)
   local train = flag(training, 'batchnorm_act_forward: training', 2)
   local update = flag(update_running, 'batchnorm_act_forward: update_running', 2)
   lib.check(C.mrt_batchnorm_act_forward(x:context(), x.c, gamma.c, beta.c,
      descriptor(running_mean), descriptor(running_var), descriptor(save_mean),
      descriptor(save_invstd), descriptor(residual), y.c, train, update, momentum or 0.1,
      eps or 1e-5, flag(relu, 'batchnorm_act_forward: relu', 2)), 2)
   return y
end

-- Backward of batchnorm_act_forward: y is its output (needed when relu is
-- true); dresidual receives the residual's gradient. Each output may be nil.
function F.batchnorm_act_backward(dy, x, y, gamma, save_mean, save_invstd, dx, dresidual,
                                  dgamma, dbeta, beta, relu)
   lib.check(C.mrt_batchnorm_act_backward(dy:context(), dy.c, x.c, descriptor(y), gamma.c,
      save_mean.c, save_invstd.c, descriptor(dx), descriptor(dresidual), descriptor(dgamma),
      descriptor(dbeta), beta or 0, flag(relu, 'batchnorm_act_backward: relu', 2)), 2)
end

----------------------------------------------------------------------- relu

function F.relu_forward(x, y)
   lib.check(C.mrt_relu_forward(x:context(), x.c, y.c), 2)
   return y
end

-- dx may be dy itself.
function F.relu_backward(dy, y, dx)
   lib.check(C.mrt_relu_backward(dy:context(), dy.c, y.c, dx.c), 2)
   return dx
end

-------------------------------------------------------------------- pooling

-- Returns pooling parameters. kernel, stride and pad are integers or {h, w}.
-- As in PyTorch, stride defaults to the kernel, pad to 0 and
-- count_include_pad (a boolean for average pooling) to true. channels_last
-- (a boolean, default false) takes x {N, H, W, C} to y {N, OH, OW, C}.
function F.pool2d_params(kernel, stride, pad, count_include_pad, channels_last)
   if kernel == nil then
      error('pool2d_params: missing kernel size', 2)
   end
   local kh, kw = pair(kernel, 'pool2d_params: kernel', nil, 2)
   local sh, sw = pair(stride, 'pool2d_params: stride', { kh, kw }, 2)
   local ph, pw = pair(pad, 'pool2d_params: pad', 0, 2)
   return ffi.new('mrt_pool2d_params', {
      kernel_h = kh, kernel_w = kw, stride_h = sh, stride_w = sw, pad_h = ph, pad_w = pw,
      count_include_pad = count_include_pad == false and 0 or 1, ceil_mode = 0,
      channels_last = flag(channels_last, 'pool2d_params: channels_last', 2),
   })
end

-- Output shape {N, C, OH, OW} of pooling x {N, C, H, W}, or {N, OH, OW, C}
-- of x {N, H, W, C} when p is channels-last.
function F.pool2d_out_shape(xshape, p)
   if p.kernel_h < 1 or p.kernel_w < 1 or p.stride_h < 1 or p.stride_w < 1 or p.pad_h < 0
         or p.pad_w < 0 then
      error(string.format('pool2d_out_shape: invalid parameters kernel %dx%d, stride %dx%d, '
         .. 'padding %dx%d (expected kernel and stride >= 1, padding >= 0)', p.kernel_h,
         p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w), 2)
   end
   local last = p.channels_last ~= 0
   local h, w = xshape[last and 2 or 3], xshape[last and 3 or 4]
   local oh = tonumber(C.mrt_conv2d_out_size(h, p.kernel_h, p.stride_h, p.pad_h, 1))
   local ow = tonumber(C.mrt_conv2d_out_size(w, p.kernel_w, p.stride_w, p.pad_w, 1))
   if oh < 1 or ow < 1 then
      error(string.format('pool2d_out_shape: input %s is too small for kernel %dx%d with '
         .. 'stride %dx%d and padding %dx%d', tensor.shape_string(xshape), p.kernel_h,
         p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w), 2)
   end
   if last then
      return { xshape[1], oh, ow, xshape[4] }
   end
   return { xshape[1], xshape[2], oh, ow }
end

function F.maxpool2d_forward(p, x, y)
   lib.check(C.mrt_maxpool2d_forward(x:context(), p, x.c, y.c), 2)
   return y
end

-- Needs the forward's x and y: the maximum of each window is found again.
function F.maxpool2d_backward(p, dy, x, y, dx)
   lib.check(C.mrt_maxpool2d_backward(dy:context(), p, dy.c, x.c, y.c, dx.c), 2)
   return dx
end

function F.avgpool2d_forward(p, x, y)
   lib.check(C.mrt_avgpool2d_forward(x:context(), p, x.c, y.c), 2)
   return y
end

function F.avgpool2d_backward(p, dy, dx)
   lib.check(C.mrt_avgpool2d_backward(dy:context(), p, dy.c, dx.c), 2)
   return dx
end

-- y[N,C] := mean of x[N,C,H,W] over H and W, or of a channels-last x[N,S,C] over S.
function F.global_avgpool_forward(x, y)
   lib.check(C.mrt_global_avgpool_forward(x:context(), x.c, y.c), 2)
   return y
end

function F.global_avgpool_backward(dy, dx)
   lib.check(C.mrt_global_avgpool_backward(dy:context(), dy.c, dx.c), 2)
   return dx
end

------------------------------------------------------------- channels last

-- True when the engine on `device` (default: the default device) takes
-- channels-last activations in conv2d, pooling and global pooling.
function F.channels_last_supported(device)
   return C.mrt_channels_last_supported(tensor.context(device)) ~= 0
end

-- y[N,H,W,C] := x[N,C,H,W].
function F.to_channels_last(x, y)
   lib.check(C.mrt_to_channels_last(x:context(), x.c, y.c), 2)
   return y
end

-- y[N,C,H,W] := x[N,H,W,C].
function F.to_channels_first(x, y)
   lib.check(C.mrt_to_channels_first(x:context(), x.c, y.c), 2)
   return y
end

---------------------------------------------------------------------- loss

-- Checks that a label buffer from tensor.labels fits the rows of t.
local function check_labels(fname, name, t, labels, level)
   if type(labels) ~= 'table' or labels.ptr == nil then
      error(string.format('%s: labels must be a buffer from tensor.labels, got %s', fname,
         tostring(labels)), level + 1)
   end
   if labels.n ~= t.shape[1] then
      error(string.format("%s: %d labels for the %d rows of '%s' %s", fname, labels.n,
         t.shape[1] or 0, name, t:shape_string()), level + 1)
   end
   if labels.device ~= t.device then
      error(string.format("%s: labels are on %s but '%s' is on %s; copy them with "
         .. 'tensor.copy_labels first', fname, labels.device, name, t.device), level + 1)
   end
end

-- Computes the mean softmax cross-entropy and stores the softmax in probs.
-- Returns the loss and the number of rows whose first argmax is the label.
function F.xent_forward(logits, labels, probs)
   check_labels('xent_forward', 'logits', logits, labels, 2)
   local loss = ffi.new('double[1]')
   local correct = ffi.new('int64_t[1]')
   lib.check(C.mrt_xent_forward(logits:context(), logits.c, labels.ptr, probs.c, loss,
      correct), 2)
   return loss[0], tonumber(correct[0])
end

-- dlogits := scale*(probs - onehot(labels))/N. dlogits may be probs itself.
function F.xent_backward(probs, labels, scale, dlogits)
   check_labels('xent_backward', 'probs', probs, labels, 2)
   lib.check(C.mrt_xent_backward(probs:context(), probs.c, labels.ptr, scale or 1, dlogits.c), 2)
   return dlogits
end

return F
