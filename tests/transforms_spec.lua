-- Specs for mrt.transforms and engine/transform.c: bilinear resize,
-- normalisation, random crop with zero padding, random horizontal flip and
-- their composition.
--
-- Agreement with torchvision is checked bit for bit: the resize reproduces
-- PyTorch 1.13's CPU kernel exactly (its index and weight arithmetic and
-- its fused multiply-adds), and normalisation, crop and flip involve one
-- correctly rounded float operation per element or none. The torchvision
-- comparison runs /usr/bin/python3 with torch and torchvision 0.14 on inputs
-- this spec writes; it is pending where they are not installed.

local ffi = require 'ffi'
local T = require 'mrt.tensor'
local mio = require 'mrt.io'
local lib = require 'mrt.ffi'
local random = require 'mrt.random'
local transforms = require 'mrt.transforms'

local device = T.default_device()

---------------------------------------------------------------- helpers

local function normal(shape, seed)
   return random.new(seed):fill_normal(T.zeros(shape, device), 0, 1)
end

-- Index of element (n, c, i, j) of a [N,C,H,W] tensor in its flat list, 1-based.
local function at(shape, n, c, i, j)
   return ((n * shape[2] + c) * shape[3] + i) * shape[4] + j + 1
end

-- Rounds a Lua number to float32.
local f32 = ffi.new('float[1]')
local function float(v)
   f32[0] = v
   return f32[0]
end

-- Number of elements where a and b differ (both flat Lua lists).
local function count_differences(a, b)
   assert.are.equal(#b, #a)
   local count = 0
   for i = 1, #a do
      if a[i] ~= b[i] then
         count = count + 1
      end
   end
   return count
end

-- The window of x at (top, left) of size oh x ow, zero outside, mirrored
-- when flip is true, computed element by element in Lua.
local function expected_crop(xs, shape, n, top, left, flip, oh, ow)
   local out = {}
   for c = 0, shape[2] - 1 do
      for i = 0, oh - 1 do
         for j = 0, ow - 1 do
            local row = top + i
            local col = left + (flip and ow - 1 - j or j)
            local inside = row >= 0 and row < shape[3] and col >= 0 and col < shape[4]
            out[#out + 1] = inside and xs[at(shape, n, c, row, col)] or 0
         end
      end
   end
   return out
end

-- Elements of image n of a [N,C,H,W] tensor as a flat list.
local function image(values, shape, n)
   local per = shape[2] * shape[3] * shape[4]
   local out = {}
   for k = 1, per do
      out[k] = values[n * per + k]
   end
   return out
end

-- Skips a spec where the default device's backend has no transforms yet.
local function backend_message()
   local ok, err = pcall(function()
      local x = T.zeros({ 1, 1, 2, 2 }, device)
      transforms.resize_bilinear(x, T.zeros({ 1, 1, 3, 3 }, device))
   end)
   if ok then
      return nil
   end
   return tostring(err)
end
local unavailable = backend_message()

local function run_it(name, fn)
   if unavailable ~= nil and unavailable:match('NYI:') then
      it(name, function() pending(unavailable) end)
   else
      it(name, fn)
   end
end

---------------------------------------------------------------- torchvision oracle

local has_torch
local function torch_available()
   if has_torch == nil then
      has_torch = os.execute('/usr/bin/python3 -c "import torch, torchvision" >/dev/null 2>&1')
         == 0
   end
   return has_torch
end

local ORACLE = [[
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import safetensors_file

torch.set_num_threads(1)
inputs, meta = safetensors_file.read(sys.argv[2])
x, small = inputs["x"], inputs["small"]
out = {}
for size in meta["sizes"].split(";"):
    oh, ow = (int(v) for v in size.split("x"))
    out["resize." + size] = T.Resize((oh, ow))(x)
out["short.224"] = T.Resize(224)(x)
out["small.224"] = T.Resize(224)(small)
mean = [float(v) for v in meta["mean"].split(",")]
std = [float(v) for v in meta["std"].split(",")]
out["normalize"] = T.Normalize(mean, std)(x)
pad, oh, ow = (int(v) for v in meta["crop"].split(","))
tops = [int(v) for v in meta["tops"].split(",")]
lefts = [int(v) for v in meta["lefts"].split(",")]
flips = [v == "1" for v in meta["flips"].split(",")]
crops = []
for i in range(x.shape[0]):
    img = TF.crop(TF.pad(x[i], pad), tops[i] + pad, lefts[i] + pad, oh, ow)
    crops.append(TF.hflip(img) if flips[i] else img)
out["crop"] = torch.stack(crops)
safetensors_file.write(sys.argv[3], {k: v.contiguous() for k, v in out.items()})
]]

local SIZES = { '64x40', '224x224', '20x11', '37x80', '5x53', '74x106', '18x26', '1x1',
   '100x7', '37x53' }
local MEAN, STD = { 0.4914, 0.4822, 0.4465 }, { 0.2470, 0.2435, 0.2616 }
local CROP = { pad = 4, oh = 32, ow = 32, tops = { -4, 9 }, lefts = { 25, -2 },
   flips = { true, false } }

-- Runs torchvision on this spec's inputs once; returns inputs and outputs.
local oracle
local function torchvision_results()
   if oracle ~= nil then
      return oracle
   end
   local dir = os.tmpname()
   os.remove(dir)
   assert(os.execute('mkdir -p ' .. dir) == 0)
   local x, small = normal({ 2, 3, 37, 53 }, 11), normal({ 4, 3, 32, 32 }, 12)
   mio.safetensors_write(dir .. '/in.safetensors', { x = x, small = small }, {
      sizes = table.concat(SIZES, ';'), mean = table.concat(MEAN, ','),
      std = table.concat(STD, ','),
      crop = table.concat({ CROP.pad, CROP.oh, CROP.ow }, ','),
      tops = table.concat(CROP.tops, ','), lefts = table.concat(CROP.lefts, ','),
      flips = CROP.flips[1] and '1,0' or '0,0',
   })
   local script = io.open(dir .. '/oracle.py', 'w')
   script:write(ORACLE)
   script:close()
   local command = string.format('/usr/bin/python3 %s/oracle.py %s/tests/fixtures '
      .. '%s/in.safetensors %s/out.safetensors >%s/log 2>&1', dir, lib.root, dir, dir, dir)
   local status = os.execute(command)
   local log = io.open(dir .. '/log'):read('*a')
   assert(status == 0, 'torchvision oracle failed: ' .. log)
   local out = mio.safetensors_read(dir .. '/out.safetensors')
   os.execute('rm -rf ' .. dir)
   oracle = { x = x, small = small, out = out }
   return oracle
end

local function oracle_it(name, fn)
   if not torch_available() then
      it(name, function() pending('needs /usr/bin/python3 with torch and torchvision') end)
   else
      run_it(name, function() fn(torchvision_results()) end)
   end
end

---------------------------------------------------------------- resize

describe('transforms.resize', function()
   oracle_it('matches torchvision Resize bit for bit', function(o)
      for _, size in ipairs(SIZES) do
         local oh, ow = size:match('(%d+)x(%d+)')
         local y = transforms.resize({ tonumber(oh), tonumber(ow) })(o.x)
         local ref = o.out['resize.' .. size]
         assert.are.same(ref.shape, y.shape)
         assert.are.equal(0, count_differences(y:totable(), ref:totable()), size)
      end
   end)

   oracle_it('scales the shorter edge like torchvision', function(o)
      local y = transforms.resize(224)(o.x)
      assert.are.same({ 2, 3, 224, 320 }, y.shape)
      assert.are.equal(0, count_differences(y:totable(), o.out['short.224']:totable()))
      local up = transforms.resize(224)(o.small)
      assert.are.same({ 4, 3, 224, 224 }, up.shape)
      assert.are.equal(0, count_differences(up:totable(), o.out['small.224']:totable()))
   end)

   run_it('averages pixel blocks when halving', function()
      -- Scale 2 puts every output at the centre of a 2x2 block (weights 0.5,
      -- 0.5), and small integers keep every sum exact.
      local values = {}
      for k = 1, 2 * 4 * 6 do
         values[k] = (k * 7) % 13
      end
      local x = T.from_table(values, { 1, 2, 4, 6 }, device)
      local y = transforms.resize({ 2, 3 })(x):totable()
      for c = 0, 1 do
         for i = 0, 1 do
            for j = 0, 2 do
               local shape = { 1, 2, 4, 6 }
               local sum = values[at(shape, 0, c, 2 * i, 2 * j)]
                  + values[at(shape, 0, c, 2 * i, 2 * j + 1)]
                  + values[at(shape, 0, c, 2 * i + 1, 2 * j)]
                  + values[at(shape, 0, c, 2 * i + 1, 2 * j + 1)]
               assert.are.equal(sum / 4, y[at({ 1, 2, 2, 3 }, 0, c, i, j)])
            end
         end
      end
   end)

   run_it('copies an image of the target size', function()
      local x = normal({ 2, 3, 5, 7 }, 3)
      assert.are.equal(x, transforms.resize({ 5, 7 })(x))
      local y = transforms.resize_bilinear(x, T.zeros({ 2, 3, 5, 7 }, device))
      assert.are.same(x:totable(), y:totable())
   end)

   it('computes torchvision output sizes', function()
      assert.are.same({ 224, 336 }, { transforms.resize_shape(32, 48, 224) })
      assert.are.same({ 336, 224 }, { transforms.resize_shape(48, 32, 224) })
      assert.are.same({ 224, 320 }, { transforms.resize_shape(37, 53, 224) })
      assert.are.same({ 100, 50 }, { transforms.resize_shape(32, 48, { 100, 50 }) })
      assert.are.same({ 150, 300 }, { transforms.resize_shape(32, 64, 224, 300) })
   end)

   run_it('reuses its output tensor', function()
      local resize = transforms.resize({ 8, 8 })
      local a = resize(normal({ 1, 1, 4, 4 }, 1))
      local b = resize(normal({ 1, 1, 4, 4 }, 2))
      assert.are.equal(a, b)
   end)

   it('rejects bad sizes and inputs', function()
      assert.has_error(function() transforms.resize(0) end,
         'resize: size must be a positive integer or a list {h, w} of them, got 0')
      assert.has_error(function() transforms.resize({ 3 }) end,
         'resize: size must be a positive integer or a list {h, w} of them, got {3}')
      assert.has_error(function() transforms.resize(224, { max_size = 200 }) end,
         'resize: max_size 200 must be an integer greater than size 224')
      assert.has_error(function() transforms.resize({ 2, 2 }, { max_size = 300 }) end,
         'resize: max_size applies only to an integer size (the shorter edge)')
      assert.has_error(function() transforms.resize(2, { antialias = true }) end,
         "resize: unknown option 'antialias' (expected max_size)")
      assert.has_error(function() transforms.resize(2)(T.zeros({ 3, 4, 4 }, device)) end,
         'resize: expected a 4-D batch [N,C,H,W], got [3,4,4]')
   end)

   run_it('rejects an output that overlaps the input', function()
      local x = T.zeros({ 1, 1, 4, 4 }, device)
      assert.has_error(function() transforms.resize_bilinear(x, x:view({ 1, 1, 2, 8 })) end,
         "mrt_resize_bilinear: 'y' overlaps 'x' (expected separate storage)")
      assert.has_error(function()
         transforms.resize_bilinear(x, T.zeros({ 1, 2, 4, 4 }, device))
      end, "mrt_resize_bilinear: 'y' has shape [1,2,4,4], expected [1,1,-1,-1] (-1 = any)")
   end)
end)

---------------------------------------------------------------- normalize

describe('transforms.normalize', function()
   oracle_it('matches torchvision Normalize bit for bit', function(o)
      local y = transforms.normalize(MEAN, STD)(o.x)
      assert.are.equal(0, count_differences(y:totable(), o.out.normalize:totable()))
   end)

   run_it('subtracts then divides in float32', function()
      -- Double arithmetic rounded to float32 gives the correctly rounded
      -- float32 result of one subtraction or division, so this is exact.
      local shape = { 2, 3, 4, 5 }
      local x = normal(shape, 5)
      local xs = x:totable()
      local y = transforms.normalize(MEAN, STD)(x):totable()
      for n = 0, 1 do
         for c = 0, 2 do
            for i = 0, 3 do
               for j = 0, 4 do
                  local k = at(shape, n, c, i, j)
                  local centred = float(xs[k] - float(MEAN[c + 1]))
                  assert.are.equal(float(centred / float(STD[c + 1])), y[k])
               end
            end
         end
      end
   end)

   run_it('normalises in place on request', function()
      local x = normal({ 2, 3, 2, 2 }, 6)
      assert.are.equal(x, transforms.normalize(MEAN, STD, { inplace = true })(x))
   end)

   run_it('accepts [N,C] rows', function()
      local x = T.from_table({ 1, 2, 3, 4 }, { 2, 2 }, device)
      local y = transforms.normalize({ 1, 2 }, { 2, 4 })(x)
      assert.are.same({ 0, 0, 1, 0.5 }, y:totable())
   end)

   it('rejects bad statistics and inputs', function()
      assert.has_error(function() transforms.normalize({ 0.5 }, { 1, 2 }) end,
         'normalize: mean and std must be lists of one number per channel, of equal length')
      assert.has_error(function() transforms.normalize({ 0.5 }, { 0 }) end,
         'normalize: std[1] is 0 as a float (expected nonzero values)')
      assert.has_error(function()
         transforms.normalize(MEAN, STD)(T.zeros({ 2, 1, 4, 4 }, device))
      end, 'normalize: expected a batch with 3 channels in dimension 2, got [2,1,4,4]')
   end)
end)

---------------------------------------------------------------- crop and flip

describe('transforms.crop_flip', function()
   oracle_it('matches torchvision pad, crop and hflip', function(o)
      local y = T.zeros({ 2, 3, CROP.oh, CROP.ow }, device)
      transforms.crop_flip(o.x, y, CROP.tops, CROP.lefts, CROP.flips)
      assert.are.equal(0, count_differences(y:totable(), o.out.crop:totable()))
   end)

   run_it('fills the window outside the image with zeros', function()
      local shape = { 2, 2, 3, 4 }
      local x = normal(shape, 7)
      local y = T.zeros({ 2, 2, 5, 5 }, device)
      transforms.crop_flip(x, y, { -1, 2 }, { -2, 1 }, { false, true })
      local xs, ys = x:totable(), y:totable()
      for n = 0, 1 do
         local top, left, flip = ({ -1, 2 })[n + 1], ({ -2, 1 })[n + 1], n == 1
         assert.are.same(expected_crop(xs, shape, n, top, left, flip, 5, 5),
            image(ys, { 2, 2, 5, 5 }, n))
      end
   end)

   run_it('rejects offsets of the wrong length', function()
      local x = T.zeros({ 2, 1, 4, 4 }, device)
      assert.has_error(function() transforms.crop_flip(x, x:clone(), { 0 }) end,
         'crop_flip: top has 1 entries for 2 images')
   end)
end)

describe('transforms.random_crop', function()
   run_it('crops where the generator draws', function()
      -- Replays the draws: row then column, floor(u * positions), per image.
      local shape, pad, size = { 6, 2, 9, 7 }, 3, 8
      local x = normal(shape, 8)
      local y = transforms.random_crop(size, { padding = pad, rng = random.new(42) })(x)
      local replay = random.new(42)
      local xs, ys = x:totable(), y:totable()
      for n = 0, shape[1] - 1 do
         local top = math.floor(replay:uniform() * (shape[3] + 2 * pad - size + 1)) - pad
         local left = math.floor(replay:uniform() * (shape[4] + 2 * pad - size + 1)) - pad
         assert.are.same(expected_crop(xs, shape, n, top, left, false, size, size),
            image(ys, { 6, 2, 8, 8 }, n))
      end
   end)

   run_it('reaches every position of the padded image', function()
      -- 400 images, 3 x 3 positions: each is missed with probability
      -- (8/9)^400 < 1e-20.
      local x = T.zeros({ 400, 1, 4, 4 }, device):fill(1)
      local y = transforms.random_crop(4, { padding = 1, rng = random.new(3) })(x):totable()
      local seen = {}
      for n = 0, 399 do
         local top = y[at({ 400, 1, 4, 4 }, n, 0, 0, 1)] == 0 and -1
            or y[at({ 400, 1, 4, 4 }, n, 0, 3, 1)] == 0 and 1 or 0
         local left = y[at({ 400, 1, 4, 4 }, n, 0, 1, 0)] == 0 and -1
            or y[at({ 400, 1, 4, 4 }, n, 0, 1, 3)] == 0 and 1 or 0
         seen[top .. ',' .. left] = true
      end
      for _, top in ipairs({ -1, 0, 1 }) do
         for _, left in ipairs({ -1, 0, 1 }) do
            assert.is_true(seen[top .. ',' .. left] == true, top .. ',' .. left)
         end
      end
   end)

   run_it('rejects a window larger than the padded image', function()
      local crop = transforms.random_crop(40, { padding = 2, rng = random.new(1) })
      assert.has_error(function() crop(T.zeros({ 2, 3, 32, 32 }, device)) end,
         "mrt_random_crop: window 40x40 of 'y' [2,3,40,40] is larger than 'x' [2,3,32,32] "
            .. 'padded by 2')
   end)

   it('rejects bad options', function()
      assert.has_error(function() transforms.random_crop(8, { padding = 1 }) end,
         'random_crop: option rng must be an mrt.random Generator (random.new(seed))')
      assert.has_error(function() transforms.random_crop(8, { padding = -1, rng = {} }) end,
         'random_crop: padding must be an integer >= 0, got -1')
   end)
end)

describe('transforms.random_hflip', function()
   run_it('flips where the generator draws below p', function()
      local shape = { 8, 2, 3, 5 }
      local x = normal(shape, 9)
      local y = transforms.random_hflip({ p = 0.5, rng = random.new(5) })(x)
      local replay = random.new(5)
      local xs, ys = x:totable(), y:totable()
      local flipped = 0
      for n = 0, shape[1] - 1 do
         local flip = replay:uniform() < 0.5
         flipped = flipped + (flip and 1 or 0)
         assert.are.same(expected_crop(xs, shape, n, 0, 0, flip, 3, 5), image(ys, shape, n))
      end
      assert.is_true(flipped > 0 and flipped < shape[1])
   end)

   run_it('flips everything at p = 1 and nothing at p = 0', function()
      local shape = { 3, 1, 2, 4 }
      local x = normal(shape, 10)
      local xs = x:totable()
      local all = transforms.random_hflip({ p = 1, rng = random.new(1) })(x):totable()
      local none = transforms.random_hflip({ p = 0, rng = random.new(1) })(x):totable()
      for n = 0, 2 do
         assert.are.same(expected_crop(xs, shape, n, 0, 0, true, 2, 4), image(all, shape, n))
      end
      assert.are.same(xs, none)
   end)

   run_it('draws once per image', function()
      local g, replay = random.new(77), random.new(77)
      transforms.random_hflip({ rng = g })(T.zeros({ 5, 1, 2, 2 }, device))
      for _ = 1, 5 do
         replay:uniform()
      end
      assert.are.same(replay:get_state(), g:get_state())
   end)

   it('rejects a probability outside [0, 1]', function()
      assert.has_error(function() transforms.random_hflip({ p = 1.5, rng = random.new(1) }) end,
         'random_hflip: p must be a probability in [0, 1], got 1.5')
   end)
end)

---------------------------------------------------------------- loader

describe('transforms.for_loader', function()
   -- A dataset of four 1x2x3 float images valued 1..24, in order.
   local function loader_with(transform)
      local data = require 'mrt.data'
      local values = {}
      for k = 1, 24 do
         values[k] = k
      end
      local labels = ffi.new('int32_t[4]')
      return data.loader(data.dataset({ n = 4, shape = { 1, 2, 3 }, classes = 2,
         images = T.from_table(values, { 4, 1, 2, 3 }, 'cpu'), labels = labels }),
         { batch_size = 4, shuffle = false, transform = transform })
   end

   run_it('returns the transformed batch', function()
      local loader = loader_with(transforms.for_loader(transforms.random_hflip({ p = 1,
         rng = random.new(1) })))
      local x = loader:epoch()()
      assert.are.same({ 3, 2, 1, 6, 5, 4 }, image(x:totable(), { 4, 1, 2, 3 }, 0))
   end)

   run_it('passes a resized batch on from the loader', function()
      local loader = loader_with(transforms.for_loader(transforms.resize({ 4, 4 })))
      local x, _, count = loader:epoch()()
      assert.are.same({ 4, 1, 4, 4 }, x.shape)
      assert.are.equal(4, count)
   end)
end)

---------------------------------------------------------------- compose

describe('transforms.compose', function()
   run_it('applies transforms left to right', function()
      local x = normal({ 2, 3, 8, 8 }, 13)
      local chain = transforms.compose({
         transforms.resize(4),
         transforms.normalize(MEAN, STD),
      })
      local expected = transforms.normalize(MEAN, STD)(transforms.resize(4)(x)):totable()
      assert.are.same(expected, chain(x):totable())
   end)

   it('rejects items that are not functions', function()
      assert.has_error(function() transforms.compose({ transforms.resize(4), 3 }) end,
         'compose: item 2 is a number (expected a function (x) -> x)')
   end)
end)
