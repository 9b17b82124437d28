-- mrt.transforms: image transforms on whole batches x[N,C,H,W], built as
-- functions (x) -> x' that compose and that a data loader applies to each
-- batch (its `transform` option).
--
--    local transforms = require 'mrt.transforms'
--    local g = require('mrt.random').new(1)
--    local augment = transforms.compose({
--       transforms.random_crop(32, { padding = 4, rng = g }),
--       transforms.random_hflip({ rng = g }),
--       transforms.resize(224),
--       transforms.normalize({ 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }),
--    })
--    local y = augment(x)
--
-- Each transform follows torchvision 0.14's class of the same name on
-- float tensors; the random ones draw from an mrt.random Generator, per
-- image. A transform writes into an output tensor that it keeps and reuses
-- for the next batch of the same shape, so its result is valid until that
-- transform's next call: copy it to keep it longer.

local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'

local ffi, C = lib.ffi, lib.C

local M = {}

local function is_tensor(v)
   return type(v) == 'table' and getmetatable(v) == T.Tensor
end

local function is_size(v)
   return type(v) == 'number' and v >= 1 and v == math.floor(v)
end

local function check_images(fn, x, level)
   if not is_tensor(x) then
      error(string.format('%s: expected a Tensor batch [N,C,H,W], got %s', fn, type(x)),
         level + 1)
   end
   if x:dim() ~= 4 then
      error(string.format('%s: expected a 4-D batch [N,C,H,W], got %s', fn, x:shape_string()),
         level + 1)
   end
end

-- A {h, w} size from an integer or a two-element list, checked.
local function size_pair(fn, size, level)
   if is_size(size) then
      return size, size
   end
   if type(size) == 'table' and #size == 2 and is_size(size[1]) and is_size(size[2]) then
      return size[1], size[2]
   end
   error(string.format('%s: size must be a positive integer or a list {h, w} of them, got %s',
      fn, type(size) == 'table' and '{' .. table.concat(size, ',') .. '}' or tostring(size)),
      level + 1)
end

local function check_rng(fn, rng, level)
   if type(rng) ~= 'table' or rng.state == nil then
      error(fn .. ': option rng must be an mrt.random Generator (random.new(seed))', level + 1)
   end
end

local function check_options(fn, opts, known, level)
   if opts == nil then
      return {}
   end
   if type(opts) ~= 'table' then
      error(string.format('%s: options must be a table, got %s', fn, type(opts)), level + 1)
   end
   for k in pairs(opts) do
      if not known[k] then
         local names = {}
         for name in pairs(known) do
            names[#names + 1] = name
         end
         table.sort(names)
         error(string.format("%s: unknown option '%s' (expected %s)", fn, tostring(k),
            table.concat(names, ', ')), level + 1)
      end
   end
   return opts
end

-- A per-transform cache of output tensors, one per shape and device.
local function output_cache()
   local cache = {}
   return function(shape, device)
      local key = T.shape_string(shape) .. device
      local t = cache[key]
      if t == nil then
         t = T.zeros(shape, device)
         cache[key] = t
      end
      return t
   end
end

------------------------------------------------------------------ functions

-- y := x resized bilinearly to y's H and W (see mrt_resize_bilinear).
function M.resize_bilinear(x, y)
   lib.check(C.mrt_resize_bilinear(x:context(), x.c, y.c), 2)
   return y
end

-- Output size {h, w} of torchvision 0.14's Resize for an image of h x w:
-- an integer size sets the shorter edge and scales the longer one
-- (truncated), capped at max_size; a pair {h, w} is taken as is.
function M.resize_shape(h, w, size, max_size)
   if type(size) == 'table' then
      return size[1], size[2]
   end
   local short, long = math.min(h, w), math.max(h, w)
   local new_short, new_long = size, math.floor(size * long / short)
   if max_size ~= nil and new_long > max_size then
      new_short, new_long = math.floor(max_size * new_short / new_long), max_size
   end
   if w <= h then
      return new_long, new_short
   end
   return new_short, new_long
end

----------------------------------------------------------------- transforms

-- Resize(size): bilinear, no antialiasing, as torchvision 0.14's Resize on
-- tensors. size is an integer (the shorter edge; the longer one keeps the
-- aspect ratio) or {h, w}. opts.max_size caps the longer edge of an integer
-- size. A batch that already has the output size is returned unchanged.
function M.resize(size, opts)
   opts = check_options('resize', opts, { max_size = true }, 2)
   size_pair('resize', size, 2)
   local max_size = opts.max_size
   if max_size ~= nil then
      if type(size) == 'table' then
         error('resize: max_size applies only to an integer size (the shorter edge)', 2)
      end
      if not is_size(max_size) or max_size <= size then
         error(string.format('resize: max_size %s must be an integer greater than size %d',
            tostring(max_size), size), 2)
      end
   end
   local out = output_cache()
   return function(x)
      check_images('resize', x, 2)
      local h, w = x.shape[3], x.shape[4]
      local oh, ow = M.resize_shape(h, w, size, max_size)
      if oh == h and ow == w then
         return x
      end
      local y = out({ x.shape[1], x.shape[2], oh, ow }, x.device)
      lib.check(C.mrt_resize_bilinear(x:context(), x.c, y.c), 2)
      return y
   end
end

-- Normalize(mean, std): (x - mean[c]) / std[c] per channel, one mean and
-- one std per channel of the batch. opts.inplace writes into x itself.
function M.normalize(mean, std, opts)
   opts = check_options('normalize', opts, { inplace = true }, 2)
   if type(mean) ~= 'table' or type(std) ~= 'table' or #mean == 0 or #mean ~= #std then
      error('normalize: mean and std must be lists of one number per channel, of equal length',
         2)
   end
   local channels = #mean
   local cmean, cstd = ffi.new('float[?]', channels), ffi.new('float[?]', channels)
   for c = 1, channels do
      if type(mean[c]) ~= 'number' or type(std[c]) ~= 'number' then
         error(string.format('normalize: mean[%d] and std[%d] must be numbers', c, c), 2)
      end
      cmean[c - 1], cstd[c - 1] = mean[c], std[c]
      if cstd[c - 1] == 0 then
         error(string.format('normalize: std[%d] is 0 as a float (expected nonzero values)', c),
            2)
      end
   end
   local out = output_cache()
   return function(x)
      if not is_tensor(x) or x:dim() < 2 or x.shape[2] ~= channels then
         error(string.format('normalize: expected a batch with %d channels in dimension 2, '
            .. 'got %s', channels, is_tensor(x) and x:shape_string() or type(x)), 2)
      end
      local y = opts.inplace and x or out(x.shape, x.device)
      lib.check(C.mrt_normalize(x:context(), x.c, cmean, cstd, y.c), 2)
      return y
   end
end

-- RandomCrop(size, padding): pads each image with opts.padding zeros (0)
-- on every side and cuts a size window at a position drawn uniformly from
-- opts.rng (row, then column, image by image). size is an integer or {h, w}.
function M.random_crop(size, opts)
   opts = check_options('random_crop', opts, { padding = true, rng = true }, 2)
   local oh, ow = size_pair('random_crop', size, 2)
   local padding = opts.padding or 0
   if type(padding) ~= 'number' or padding < 0 or padding ~= math.floor(padding) then
      error('random_crop: padding must be an integer >= 0, got ' .. tostring(padding), 2)
   end
   check_rng('random_crop', opts.rng, 2)
   local out = output_cache()
   return function(x)
      check_images('random_crop', x, 2)
      local y = out({ x.shape[1], x.shape[2], oh, ow }, x.device)
      lib.check(C.mrt_random_crop(x:context(), x.c, padding, opts.rng.state, y.c), 2)
      return y
   end
end

-- RandomHorizontalFlip(p): mirrors each image with probability opts.p
-- (0.5), one uniform draw from opts.rng per image.
function M.random_hflip(opts)
   opts = check_options('random_hflip', opts, { p = true, rng = true }, 2)
   local p = opts.p or 0.5
   if type(p) ~= 'number' or not (p >= 0 and p <= 1) then
      error('random_hflip: p must be a probability in [0, 1], got ' .. tostring(p), 2)
   end
   check_rng('random_hflip', opts.rng, 2)
   local out = output_cache()
   return function(x)
      check_images('random_hflip', x, 2)
      local y = out(x.shape, x.device)
      lib.check(C.mrt_random_hflip(x:context(), x.c, p, opts.rng.state, y.c), 2)
      return y
   end
end

-- Crop and flip with given per-image offsets: window i of y's size at
-- (top[i], left[i]) of x (0-based, zero outside the image), mirrored where
-- flip[i] is true. top, left and flip are Lua lists of N entries or nil.
function M.crop_flip(x, y, top, left, flip)
   local n = x.shape[1]
   local function ints(list, name)
      if list == nil then
         return nil
      end
      if #list ~= n then
         error(string.format('crop_flip: %s has %d entries for %d images', name, #list, n), 3)
      end
      local out = ffi.new('int32_t[?]', math.max(n, 1))
      for i = 1, n do
         out[i - 1] = list[i]
      end
      return out
   end
   local ctop, cleft = ints(top, 'top'), ints(left, 'left')
   local cflip
   if flip ~= nil then
      if #flip ~= n then
         error(string.format('crop_flip: flip has %d entries for %d images', #flip, n), 2)
      end
      cflip = ffi.new('uint8_t[?]', math.max(n, 1))
      for i = 1, n do
         cflip[i - 1] = flip[i] and 1 or 0
      end
   end
   lib.check(C.mrt_crop_flip(x:context(), x.c, ctop, cleft, cflip, y.c), 2)
   return y
end

-- Adapts a transform (x) -> x' to the loader's `transform` option, which
-- calls transform(x, labels, count) and uses the batch it returns (a resize
-- may change the shape).
function M.for_loader(transform)
   if type(transform) ~= 'function' then
      error('for_loader: expected a function (x) -> x, got ' .. type(transform), 2)
   end
   return function(x)
      return transform(x)
   end
end

-- Chains transforms left to right into one function (x) -> x'.
function M.compose(list)
   if type(list) ~= 'table' then
      error('compose: expected a list of transforms, got ' .. type(list), 2)
   end
   for i, f in ipairs(list) do
      if type(f) ~= 'function' then
         error(string.format('compose: item %d is a %s (expected a function (x) -> x)', i,
            type(f)), 2)
      end
   end
   local steps = { unpack(list) }
   return function(x)
      for _, f in ipairs(steps) do
         x = f(x)
      end
      return x
   end
end

return M
