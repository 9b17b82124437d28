-- Specs for mrt.checkpoint: loading state by name (the report and the
-- strict error), safetensors weights in every float dtype and corrupt
-- safetensors files, and mrt's HDF5 checkpoints: the value encoding, format
-- checks, atomic writes and bit-identical continuation of training runs.
--
-- Every file is written by this spec into a temporary folder. Safetensors
-- files in F16, BF16, F64 and I64 are assembled byte by byte here (mrt's
-- writer only writes F32), with values that each dtype represents exactly,
-- so their conversion to float32 is checked for equality.

local ffi = require 'ffi'
local lib = require 'mrt.ffi'
local T = require 'mrt.tensor'
local nn = require 'mrt.nn'
local models = require 'mrt.models'
local checkpoint = require 'mrt.checkpoint'
local data = require 'mrt.data'
local mio = require 'mrt.io'
local optim = require 'mrt.optim'
local random = require 'mrt.random'
local transforms = require 'mrt.transforms'

local device = T.default_device()

---------------------------------------------------------------- files

local tmpdir
local function tmp(name)
   if tmpdir == nil then
      tmpdir = os.tmpname()
      os.remove(tmpdir)
      assert(os.execute('mkdir -p ' .. tmpdir) == 0)
   end
   return tmpdir .. '/' .. name
end

teardown(function()
   if tmpdir ~= nil then
      os.execute('rm -rf ' .. tmpdir)
   end
end)

local function exists(path)
   local f = io.open(path, 'rb')
   if f then
      f:close()
   end
   return f ~= nil
end

local function read_bytes(path)
   local f = assert(io.open(path, 'rb'))
   local bytes = f:read('*a')
   f:close()
   return bytes
end

local function write_bytes(path, bytes)
   local f = assert(io.open(path, 'wb'))
   f:write(bytes)
   f:close()
end

---------------------------------------------------------------- raw safetensors

-- Little-endian bytes of a C value.
local function bytes_of(ctype, value)
   local v = ffi.new(ctype .. '[1]', value)
   return ffi.string(v, ffi.sizeof(ctype))
end

-- IEEE half-precision bits of v, which must be exactly representable.
local function half_bits(v)
   if v == 0 then
      return 0
   end
   local sign = v < 0 and 0x8000 or 0
   local a = math.abs(v)
   local m, e = math.frexp(a)         -- a = m * 2^e, 0.5 <= m < 1
   local exponent = e - 1 + 15        -- a = (2m) * 2^(e-1), biased
   local bits
   if exponent >= 1 then
      local fraction = (2 * m - 1) * 1024
      assert(fraction == math.floor(fraction) and exponent < 31, 'not a half: ' .. v)
      bits = exponent * 1024 + fraction
   else
      local fraction = a / 2 ^ -24   -- subnormal: a = fraction * 2^-24
      assert(fraction == math.floor(fraction), 'not a half: ' .. v)
      bits = fraction
   end
   return sign + bits
end

-- bfloat16 bits of v: the upper half of its float32 bits, the lower half zero.
local function bf16_bits(v)
   local u = ffi.new('union { float f; uint32_t u; }')
   u.f = v
   assert(u.u % 65536 == 0, 'not a bfloat16: ' .. v)
   return math.floor(u.u / 65536)
end

local ENCODERS = {
   F16 = function(v) return bytes_of('uint16_t', half_bits(v)) end,
   BF16 = function(v) return bytes_of('uint16_t', bf16_bits(v)) end,
   F32 = function(v) return bytes_of('float', v) end,
   F64 = function(v) return bytes_of('double', v) end,
   I64 = function(v) return bytes_of('int64_t', v) end,
}

-- Writes a safetensors file from { name =, dtype =, shape =, values = }
-- entries, in order. header(text) may rewrite the JSON header and
-- length(n) the header length field, to make lying files.
local function write_safetensors(path, entries, opts)
   opts = opts or {}
   local fields, chunks, offset = {}, {}, 0
   for _, e in ipairs(entries) do
      local parts = {}
      for _, v in ipairs(e.values) do
         parts[#parts + 1] = ENCODERS[e.dtype](v)
      end
      local chunk = table.concat(parts)
      fields[#fields + 1] = string.format('"%s":{"dtype":"%s","shape":[%s],'
         .. '"data_offsets":[%d,%d]}', e.name, e.dtype, table.concat(e.shape, ','), offset,
         offset + #chunk)
      chunks[#chunks + 1] = chunk
      offset = offset + #chunk
   end
   local header = '{' .. table.concat(fields, ',') .. '}'
   if opts.header then
      header = opts.header(header)
   end
   header = header .. string.rep(' ', (8 - #header % 8) % 8)
   local length = opts.length and opts.length(#header) or #header
   write_bytes(path, bytes_of('uint64_t', length) .. header .. table.concat(chunks))
end

local function float(v)
   return tonumber(ffi.new('float[1]', v)[0])
end

---------------------------------------------------------------- models and runs

local function tiny_mlp(seed)
   return models.mlp({ inputs = 2, hidden = 2, classes = 2, rng = random.new(seed or 1),
      device = device })
end

local function tiny_resnet(seed)
   return models.resnet({ block = 'basic', layers = { 1, 1 }, widths = { 4, 8 },
      stem = 'small', in_channels = 1, classes = 3, rng = random.new(seed), device = device })
end

-- Ten 1x8x8 images with labels 0..2, the same for every run.
local function tiny_dataset()
   local images = random.new(99):fill_normal(T.zeros({ 10, 1, 8, 8 }, 'cpu'), 0, 1)
   local labels = ffi.new('int32_t[10]')
   for i = 0, 9 do
      labels[i] = i % 3
   end
   return data.dataset({ n = 10, shape = { 1, 8, 8 }, classes = 3, images = images,
      labels = labels })
end

-- A training run: model, optimizer, shuffling loader (batches of 4, so an
-- epoch is 4 + 4 + 2) and a crop-and-flip augmentation with its own
-- generator. make_optimizer(model) builds the optimizer.
local function new_run(seed, make_optimizer)
   local run = { model = tiny_resnet(seed) }
   run.model:flatten()
   run.opt = make_optimizer(run.model)
   run.loader = data.loader(tiny_dataset(), { batch_size = 4, rng = random.new(seed + 1),
      device = device })
   run.aug_rng = random.new(seed + 2)
   run.augment = transforms.compose({
      transforms.random_crop(8, { padding = 1, rng = run.aug_rng }),
      transforms.random_hflip({ rng = run.aug_rng }),
   })
   run.step = 0
   return run
end

local function next_batch(run)
   run.batches = run.batches or run.loader:epoch()
   local x, labels = run.batches()
   if x == nil then
      run.batches = run.loader:epoch()
      x, labels = run.batches()
   end
   return x, labels
end

-- Trains for a number of steps; augmentation runs on the CPU.
local function train(run, steps)
   for _ = 1, steps do
      local x, labels = next_batch(run)
      x = run.augment(x:to('cpu')):to(device)
      run.opt:step(function()
         local criterion = nn.cross_entropy()
         local loss = criterion:forward(run.model:forward(x), labels)
         run.model:backward(x, criterion:backward(1), false)
         return loss
      end)
      run.step = run.step + 1
   end
end

-- Everything a run's future depends on, as plain Lua values.
local function snapshot(run)
   local s = { params = run.model.flat.params:totable(), buffers = {}, counters = {},
      aug = run.aug_rng:get_state(), position = run.loader:position(), step = run.step }
   for _, b in ipairs(run.model:named_buffers()) do
      s.buffers[b.name] = b.value:totable()
   end
   for _, m in ipairs(run.model:named_modules()) do
      s.counters[#s.counters + 1] = m.module.num_batches_tracked
   end
   local function plain(v)
      if type(v) == 'table' and getmetatable(v) == T.Tensor then
         return v:totable()
      elseif type(v) == 'table' then
         local out = {}
         for k, x in pairs(v) do
            out[k] = plain(x)
         end
         return out
      end
      return v
   end
   s.optimizer = plain(run.opt:state())
   return s
end

local function save_run(run, path)
   checkpoint.save(path, { model = run.model, optimizer = run.opt, step = run.step,
      rng = { augment = run.aug_rng }, data = run.loader })
end

local function load_run(run, path)
   local r = checkpoint.load(path, { model = run.model, optimizer = run.opt,
      rng = { augment = run.aug_rng }, data = run.loader })
   run.step = r.step
   run.batches = nil
   return r
end

local function sgd(model)
   return optim.sgd(model, { lr = 0.05, momentum = 0.9, weight_decay = 1e-3 })
end

local function multirate(model)
   return optim.multirate(model, { lr = 0.1, k = 3, momentum = 0.9, fast = '^fc%.' })
end

-- Trains n steps, saves, trains m more; then a fresh run with other seeds
-- loads the checkpoint and trains m steps. Returns both snapshots.
local function continue_run(make_optimizer, n, m, path)
   local first = new_run(10, make_optimizer)
   train(first, n)
   save_run(first, path)
   train(first, m)
   local second = new_run(20, make_optimizer)
   load_run(second, path)
   train(second, m)
   return snapshot(first), snapshot(second)
end

---------------------------------------------------------------- load_state

describe('checkpoint.load_state', function()
   it('copies tensors by name', function()
      local source, target = tiny_mlp(1), tiny_mlp(2)
      local report = checkpoint.load_state(target, (checkpoint.state_dict(source)))
      assert.are.equal(4, report.loaded)
      assert.are.same(source.fc1.params[1].value:totable(), target.fc1.params[1].value:totable())
      assert.are.same(source.fc2.params[2].value:totable(), target.fc2.params[2].value:totable())
   end)

   it('lists every missing, unexpected and wrong-shaped name', function()
      local model = tiny_mlp(1)
      local tensors = {
         ['fc1.weight'] = T.zeros({ 2, 2 }),
         ['fc1.bias'] = T.zeros({ 4 }),
         ['fc2.bias'] = T.zeros({ 2 }),
         ['extra.weight'] = T.zeros({ 1 }),
      }
      assert.has_error(function() checkpoint.load_state(model, tensors) end,
         'load_state: checkpoint does not match the model (1 missing: fc2.weight; '
            .. '1 unexpected: extra.weight; 1 mismatched: fc1.bias (checkpoint [4], model [2])); '
            .. 'pass strict = false to load the matching tensors only')
   end)

   it('loads the matching names when not strict', function()
      local model = tiny_mlp(1)
      local report = checkpoint.load_state(model, {
         ['fc1.weight'] = T.from_table({ 1, 2, 3, 4 }, { 2, 2 }),
         ['fc1.bias'] = T.zeros({ 3 }),
         ['head.bias'] = T.zeros({ 2 }),
      }, { strict = false })
      assert.are.same({ 'fc2.weight', 'fc2.bias' }, report.missing)
      assert.are.same({ 'head.bias' }, report.unexpected)
      assert.are.same({ 'fc1.bias (checkpoint [3], model [2])' }, report.mismatched)
      assert.are.equal(1, report.loaded)
      assert.are.same({ 1, 2, 3, 4 }, model.fc1.params[1].value:totable())
   end)

   it('strips a prefix from incoming names', function()
      local source, target = tiny_mlp(1), tiny_mlp(2)
      local prefixed = {}
      for name, t in pairs(checkpoint.state_dict(source)) do
         prefixed['module.' .. name] = t
      end
      checkpoint.load_state(target, prefixed, { prefix = 'module.' })
      assert.are.same(source.fc1.params[1].value:totable(), target.fc1.params[1].value:totable())
   end)

   it('rejects unknown options and a non-boolean strict', function()
      local model = tiny_mlp(1)
      local state = checkpoint.state_dict(tiny_mlp(2))
      assert.has_error(function() checkpoint.load_state(model, state, { strct = false }) end,
         "load_state: unknown option 'strct' (expected prefix, strict)")
      assert.has_error(function() checkpoint.load_state(model, state, { strict = 'no' }) end,
         'load_state: strict must be a boolean, got no')
      assert.has_error(function() checkpoint.load_state(model, state, { prefix = 1 }) end,
         'load_state: prefix must be a string, got 1')
   end)

   it('loads batch-norm counters and never requires them', function()
      local source, target = tiny_resnet(1), tiny_resnet(2)
      local state = checkpoint.state_dict(source)
      checkpoint.load_state(target, state)
      assert.are.equal(0, target.bn1.num_batches_tracked)
      state['bn1.num_batches_tracked'] = T.from_table({ 12 }, {})
      state['layer1.0.bn1.num_batches_tracked'] = 5
      checkpoint.load_state(target, state)
      assert.are.equal(12, target.bn1.num_batches_tracked)
      assert.are.equal(5, target.layer1['0'].bn1.num_batches_tracked)
      state['layer9.bn1.num_batches_tracked'] = 1
      assert.has_error(function() checkpoint.load_state(target, state) end,
         'load_state: checkpoint does not match the model (1 unexpected: '
            .. 'layer9.bn1.num_batches_tracked); pass strict = false to load the matching '
            .. 'tensors only')
   end)
end)

---------------------------------------------------------------- safetensors

describe('checkpoint.load_safetensors', function()
   it('converts F16, BF16, F64 and I64 tensors', function()
      -- fc1.weight contains half-precision extremes: the largest half, the
      -- smallest normal and the smallest subnormal; fc2.weight F64 values
      -- that float32 rounds.
      local path = tmp('dtypes.safetensors')
      local half = { 65504, 2 ^ -14, -(2 ^ -24), 0.375 }
      local bf16 = { 3.140625, -2 ^ 100 }
      local f64 = { 0.1, 1 / 3, -1e10, 2 ^ -140 }
      write_safetensors(path, {
         { name = 'fc1.weight', dtype = 'F16', shape = { 2, 2 }, values = half },
         { name = 'fc1.bias', dtype = 'BF16', shape = { 2 }, values = bf16 },
         { name = 'fc2.weight', dtype = 'F64', shape = { 2, 2 }, values = f64 },
         { name = 'fc2.bias', dtype = 'I64', shape = { 2 }, values = { -3, 7 } },
      })
      local model = tiny_mlp(1)
      local report = checkpoint.load_safetensors(model, path)
      assert.are.equal(4, report.loaded)
      assert.are.same(half, model.fc1.params[1].value:totable())
      assert.are.same(bf16, model.fc1.params[2].value:totable())
      local expected = {}
      for i, v in ipairs(f64) do
         expected[i] = float(v)
      end
      assert.are.same(expected, model.fc2.params[1].value:totable())
      assert.are.same({ -3, 7 }, model.fc2.params[2].value:totable())
   end)

   it('round-trips through save_safetensors', function()
      local path = tmp('roundtrip.safetensors')
      local source, target = tiny_resnet(3), tiny_resnet(4)
      checkpoint.save_safetensors(source, path, { note = 'test' })
      checkpoint.load_safetensors(target, path)
      assert.are.same(source:flatten().params:totable(), target:flatten().params:totable())
   end)

   it('rejects unknown options and a non-boolean strict', function()
      local path = tmp('opts.safetensors')
      checkpoint.save_safetensors(tiny_mlp(1), path)
      local model = tiny_mlp(2)
      local before = checkpoint.state_dict(model)['fc1.weight']:totable()
      assert.has_error(function() checkpoint.load_safetensors(model, path, { strct = false }) end,
         "load_safetensors: unknown option 'strct' (expected prefix, strict)")
      assert.has_error(function() checkpoint.load_safetensors(model, path, { strict = 'no' }) end,
         'load_safetensors: strict must be a boolean, got no')
      assert.are.same(before, checkpoint.state_dict(model)['fc1.weight']:totable())
   end)

   describe('on a corrupt file', function()
      local good = {
         { name = 'fc1.weight', dtype = 'F32', shape = { 2, 2 }, values = { 1, 2, 3, 4 } },
         { name = 'fc1.bias', dtype = 'F32', shape = { 2 }, values = { 5, 6 } },
      }

      it('rejects a truncated data section', function()
         local path = tmp('truncated.safetensors')
         write_safetensors(path, good)
         local bytes = read_bytes(path)
         write_bytes(path, bytes:sub(1, #bytes - 4))
         assert.has_error(function() checkpoint.load_safetensors(tiny_mlp(), path) end,
            "mrt_safetensors_open: '" .. path .. "': tensor 'fc1.bias': data_offsets [16,24] "
               .. 'exceed the data buffer of 20 bytes (file truncated?)')
      end)

      it('rejects a file shorter than the length field', function()
         local path = tmp('short.safetensors')
         write_bytes(path, '\16\0\0')
         assert.has_error(function() checkpoint.load_safetensors(tiny_mlp(), path) end,
            "mrt_safetensors_open: '" .. path .. "': truncated file of 3 bytes (expected at "
               .. 'least the 8-byte header length)')
      end)

      it('rejects a header length beyond the file', function()
         local path = tmp('length.safetensors')
         write_safetensors(path, good, { length = function(n) return n + 1000 end })
         local size = #read_bytes(path)
         assert.has_error(function() checkpoint.load_safetensors(tiny_mlp(), path) end,
            string.format("mrt_safetensors_open: '%s': header length %d is invalid (expected 2 "
               .. 'to 100000000 bytes and at most the %d bytes after the length field)', path,
               size - 8 - 24 + 1000, size - 8))
      end)

      it('rejects a shape that disagrees with the byte range', function()
         local path = tmp('shape.safetensors')
         write_safetensors(path, good, { header = function(h)
            return (h:gsub('"shape":%[2%]', '"shape":[3]'))
         end })
         assert.has_error(function() checkpoint.load_safetensors(tiny_mlp(), path) end,
            "mrt_safetensors_open: '" .. path .. "': tensor 'fc1.bias': data_offsets [16,24] "
               .. '(expected a range of 12 bytes for F32 [3])')
      end)

      it('rejects overlapping tensors', function()
         local path = tmp('overlap.safetensors')
         write_safetensors(path, good, { header = function(h)
            return (h:gsub('%[16,24%]', '[8,16]'))
         end })
         assert.has_error(function() checkpoint.load_safetensors(tiny_mlp(), path) end,
            "mrt_safetensors_open: '" .. path .. "': tensors 'fc1.weight' [0,16] and "
               .. "'fc1.bias' [8,16] overlap")
      end)
   end)
end)

---------------------------------------------------------------- HDF5 checkpoints

describe('checkpoint.save', function()
   it('round-trips every kind of value', function()
      local path = tmp('values.h5')
      local extra = {
         text = 'hello', yes = true, no = false, empty = {}, list = { 1, 2.5, 'x', { 3 } },
         ['a/b%c'] = 1, [''] = 2, ['#x'] = 3, ['.'] = 4, [7] = 'seven', [0.5] = 'half',
         nested = { tensor = T.from_table({ 1, 2, 3, 4, 5, 6 }, { 2, 3 }) },
         big = 2 ^ 53, tiny = 5e-324,
      }
      checkpoint.save(path, { step = 12, extra = extra })
      local r = checkpoint.load(path)
      assert.are.equal(12, r.step)
      local back = r.extra
      local tensor = back.nested.tensor
      back.nested.tensor, extra.nested.tensor = nil, nil
      assert.are.same(extra, back)
      assert.are.same({ 2, 3 }, tensor.shape)
      assert.are.same({ 1, 2, 3, 4, 5, 6 }, tensor:totable())
   end)

   it('stores weights by name with format attributes', function()
      local path = tmp('layout.h5')
      local model = tiny_resnet(5)
      model.bn1.num_batches_tracked = 3
      checkpoint.save(path, { model = model })
      local h = mio.h5_open(path)
      local attrs = h:attrs('/')
      local weight = h:read_tensor('/model/layer1.0.conv1.weight')
      local counter = h:read('/model/bn1.num_batches_tracked')
      h:close()
      assert.are.equal('mrt-checkpoint', attrs.format)
      assert.are.equal(1, attrs.format_version)
      assert.are.same({ 4, 4, 3, 3 }, weight.shape)
      assert.are.same(model.layer1['0'].conv1.params[1].value:totable(), weight:totable())
      assert.are.equal(3, counter)
   end)

   it('leaves an older file untouched when writing fails', function()
      local path = tmp('atomic.h5')
      checkpoint.save(path, { step = 1 })
      assert.has_error(function()
         checkpoint.save(path, { step = 2, extra = { f = print } })
      end, 'checkpoint.save: /extra/f is a function (expected a Tensor, number, boolean, '
         .. 'string or table)')
      assert.are.equal(1, checkpoint.load(path).step)
      local fresh = tmp('never.h5')
      pcall(checkpoint.save, fresh, { extra = { f = print } })
      assert.is_false(exists(fresh))
   end)

   it('rejects cycles and unknown parts', function()
      local cycle = {}
      cycle.self = cycle
      assert.has_error(function() checkpoint.save(tmp('cycle.h5'), { extra = cycle }) end,
         'checkpoint.save: /extra/self refers to a table that contains it')
      assert.has_error(function() checkpoint.save(tmp('x.h5'), { weights = {} }) end,
         "checkpoint.save: unknown part 'weights' (expected model, optimizer, step, rng, data, "
            .. 'extra)')
   end)
end)

describe('checkpoint.load', function()
   it('continues an SGD run bit for bit', function()
      -- 5 steps, then 4: the checkpoint falls in the middle of the second
      -- epoch, with momentum, running statistics, the shuffled order and
      -- the augmentation generator all mid-way.
      local a, b = continue_run(sgd, 5, 4, tmp('sgd.h5'))
      assert.are.same(a, b)
   end)

   it('continues a multirate run inside a block', function()
      -- k = 3: after 4 steps the run is one step into its second block.
      local a, b = continue_run(multirate, 4, 5, tmp('multirate.h5'))
      assert.are.same(a, b)
   end)

   it('differs without the optimizer, data and generator state', function()
      -- The control for the two specs above: the same comparison fails
      -- when only the model is restored.
      local path = tmp('control.h5')
      local first = new_run(10, sgd)
      train(first, 5)
      save_run(first, path)
      train(first, 4)
      local second = new_run(20, sgd)
      checkpoint.load(path, { model = second.model })
      train(second, 4)
      assert.are_not.same(snapshot(first).params, snapshot(second).params)
   end)

   it('restores maps of models, optimizers and generators', function()
      local path = tmp('brains.h5')
      local brains = { fast = tiny_mlp(1), slow = tiny_mlp(2) }
      local opts = {}
      for name, m in pairs(brains) do
         m:flatten()
         opts[name] = optim.sgd(m, { lr = 0.1, momentum = 0.9 })
      end
      local gens = { fast = random.new(1), slow = random.new(2) }
      gens.fast:uniform()
      checkpoint.save(path, { model = brains, optimizer = opts, rng = gens })
      local copies = { fast = tiny_mlp(3), slow = tiny_mlp(4) }
      local copy_opts, copy_gens = {}, { fast = random.new(7), slow = random.new(8) }
      for name, m in pairs(copies) do
         m:flatten()
         copy_opts[name] = optim.sgd(m, { lr = 0.1, momentum = 0.9 })
      end
      checkpoint.load(path, { model = copies, optimizer = copy_opts, rng = copy_gens })
      for name in pairs(brains) do
         assert.are.same(brains[name].flat.params:totable(), copies[name].flat.params:totable())
         assert.are.same(gens[name]:get_state(), copy_gens[name]:get_state())
      end
   end)

   it('rejects a model that does not match', function()
      local path = tmp('mismatch.h5')
      checkpoint.save(path, { model = tiny_mlp(1) })
      local wider = models.mlp({ inputs = 2, hidden = 3, classes = 2, device = device })
      assert.has_error(function() checkpoint.load(path, { model = wider }) end,
         'load_state: checkpoint does not match the model (3 mismatched: fc1.bias '
            .. '(checkpoint [2], model [3]), fc1.weight (checkpoint [2,2], model [3,2]), '
            .. 'fc2.weight (checkpoint [2,2], model [2,3])); pass strict = false to load the '
            .. 'matching tensors only')
   end)

   it('rejects files that are not mrt checkpoints', function()
      local path = tmp('other.h5')
      local h = mio.h5_create(path)
      h:write('/loss', { 1, 2, 3 })
      h:commit()
      assert.has_error(function() checkpoint.load(path) end,
         "checkpoint.load: '" .. path .. "' is not an mrt checkpoint (attribute format is "
            .. "missing, expected 'mrt-checkpoint')")
   end)

   it('rejects other format versions', function()
      local path = tmp('future.h5')
      local h = mio.h5_create(path)
      h:write('/step', 1)
      h:attr('/', 'format', 'mrt-checkpoint')
      h:attr('/', 'format_version', 2, 'i64')
      h:commit()
      assert.has_error(function() checkpoint.load(path) end,
         "checkpoint.load: '" .. path .. "' has format version 2; this mrt reads version 1")
   end)

   it('rejects a truncated file', function()
      local path = tmp('cut.h5')
      checkpoint.save(path, { model = tiny_resnet(6), step = 3 })
      local bytes = read_bytes(path)
      write_bytes(path, bytes:sub(1, math.floor(#bytes / 2)))
      local ok, err = pcall(checkpoint.load, path, { model = tiny_resnet(7) })
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find('mrt_h5_open', 1, true), tostring(err))
   end)

   it('names a missing section', function()
      local path = tmp('partial.h5')
      local model = tiny_mlp(1)
      model:flatten()
      checkpoint.save(path, { model = model })
      assert.has_error(function()
         checkpoint.load(path, { model = model, optimizer = optim.sgd(model, { lr = 0.1 }) })
      end, "checkpoint.load: '" .. path .. "' has no optimizer section")
   end)

   it('rejects unknown options', function()
      assert.has_error(function() checkpoint.load(tmp('x.h5'), { models = {} }) end,
         "checkpoint.load: unknown option 'models' (expected model, optimizer, rng, data, "
            .. 'strict)')
      assert.has_error(function() checkpoint.load(tmp('x.h5'), { strict = 'no' }) end,
         'checkpoint.load: strict must be a boolean, got no')
   end)
end)

describe('checkpoint.load on a failure', function()
   local function flat_mlp(hidden, seed)
      local model = models.mlp({ inputs = 2, hidden = hidden, classes = 2,
         rng = random.new(seed), device = device })
      model:flatten()
      return model
   end

   -- Saves an MLP trained one SGD step with momentum, so that its
   -- optimizer state is not all zeros.
   local function sgd_checkpoint(path)
      local model = flat_mlp(2, 1)
      local opt = optim.sgd(model, { lr = 0.1, momentum = 0.9 })
      local x = T.from_table({ 1, 2, 3, 4 }, { 2, 2 }):to(device)
      local labels = T.labels(2, 'cpu')
      labels.ptr[0], labels.ptr[1] = 0, 1
      local dev_labels = T.copy_labels(T.labels(2, device), labels)
      opt:step(function()
         local criterion = nn.cross_entropy()
         local loss = criterion:forward(model:forward(x), dev_labels)
         model:backward(x, criterion:backward(1), false)
         return loss
      end)
      checkpoint.save(path, { model = model, optimizer = opt, rng = random.new(5), step = 1 })
   end

   local function params_of(model)
      return model.flat.params:totable()
   end

   it('keeps the model when optimizer kinds differ', function()
      local path = tmp('sgd_for_adam.h5')
      sgd_checkpoint(path)
      local model = flat_mlp(2, 2)
      local adam = optim.adam(model, { lr = 0.1 })
      local params, adam_state = params_of(model), adam:state()
      local g = random.new(9)
      assert.has_error(function()
         checkpoint.load(path, { model = model, optimizer = adam, rng = g })
      end, "checkpoint.load: '" .. path .. "': optimizer state is for sgd, expected adam")
      assert.are.same(params, params_of(model))
      assert.are.equal(adam_state.kind, adam:state().kind)
      assert.are.same({ seed = 9, counter = 0 }, g:get_state())
   end)

   it('keeps the model when optimizer shapes differ', function()
      local path = tmp('sgd_wider.h5')
      sgd_checkpoint(path)
      local model = flat_mlp(3, 2)
      local opt = optim.sgd(model, { lr = 0.1, momentum = 0.9 })
      local params = params_of(model)
      -- fc2.bias has the same shape in both models, so a non-strict load
      -- would copy it before reaching the optimizer.
      assert.has_error(function()
         checkpoint.load(path, { model = model, optimizer = opt, strict = false })
      end, "checkpoint.load: '" .. path .. "': optimizer state 'parts.params.buffer' is a "
         .. 'tensor of 12 elements, expected a tensor of 17 elements')
      assert.are.same(params, params_of(model))
   end)

   it('undoes the model after a later failure', function()
      local path = tmp('undo.h5')
      sgd_checkpoint(path)
      local model = flat_mlp(2, 2)
      local params = params_of(model)
      local calls = 0
      -- An optimizer whose state passes the checks but whose loading fails,
      -- as a defect in an optimizer's load_state would.
      local failing = {
         state = function() return {} end,
         load_state = function()
            calls = calls + 1
            if calls == 1 then
               error('load_state failed', 0)
            end
         end,
      }
      assert.has_error(function()
         checkpoint.load(path, { model = model, optimizer = failing })
      end, 'load_state failed')
      assert.are.equal(2, calls) -- the failed load, then the undo with the old state
      assert.are.same(params, params_of(model))
   end)

   it('rejects an invalid generator state', function()
      local path = tmp('bad_rng.h5')
      local h = mio.h5_create(path)
      h:attr('/', 'format', checkpoint.FORMAT)
      h:attr('/', 'format_version', checkpoint.FORMAT_VERSION, 'i64')
      h:write('/rng/seed', 1)
      h:commit()
      local g = random.new(3)
      assert.has_error(function() checkpoint.load(path, { rng = g }) end,
         "checkpoint.load: '" .. path .. "': generator: counter is nil (expected an integer in "
            .. '[0, 2^64))')
      assert.are.same({ seed = 3, counter = 0 }, g:get_state())
   end)

   it('rejects an invalid data position', function()
      local path = tmp('bad_position.h5')
      local h = mio.h5_create(path)
      h:attr('/', 'format', checkpoint.FORMAT)
      h:attr('/', 'format_version', checkpoint.FORMAT_VERSION, 'i64')
      h:write('/data/epoch', 1)
      h:write('/data/index', 99)
      h:write('/model/fc1.weight', T.zeros({ 2, 2 }))
      h:commit()
      local model = tiny_mlp(1)
      local before = model.fc1.params[1].value:totable()
      local loader = data.loader(tiny_dataset(), { batch_size = 4, shuffle = false })
      assert.has_error(function()
         checkpoint.load(path, { data = loader, model = model, strict = false })
      end, "checkpoint.load: '" .. path .. "': data position: index 99 is not in 1..11")
      assert.are.same(before, model.fc1.params[1].value:totable())
      assert.are.same({ epoch = 0, index = 1 }, loader:position())
   end)

   it('fails cleanly on a corrupt attribute', function()
      -- The checkpoint's root attribute 'mrt_version' gets the corruption
      -- that crashed HDF5 1.10 in a results file. An attribute message is a
      -- version, a reserved byte, the 16-bit sizes of name, datatype and
      -- dataspace, then the name, and the high byte of the datatype size is
      -- set to 0xff. The load runs in a child process because the defect
      -- crashed it, and MALLOC_PERTURB_ makes reads of uninitialised memory
      -- crash every time.
      local path = tmp('corrupt.h5')
      checkpoint.save(path, { model = tiny_mlp(1), step = 1 })
      local bytes = read_bytes(path)
      local at = bytes:find('mrt_version\0', 1, true)
      assert(at ~= nil, 'attribute name not found in the file')
      assert.are.same({ 12, 0 }, { bytes:byte(at - 6, at - 5) })
      write_bytes(path, bytes:sub(1, at - 4) .. '\255' .. bytes:sub(at - 2))
      local script = tmp('child.lua')
      write_bytes(script, string.format([[
package.path = %q .. '/lua/?.lua;' .. %q .. '/lua/?/init.lua;' .. package.path
local checkpoint = require 'mrt.checkpoint'
print(pcall(checkpoint.load, %q, {}))
]], lib.root, lib.root, path))
      local out = tmp('child.out')
      local status = os.execute(string.format("MALLOC_PERTURB_=165 luajit '%s' >'%s' 2>&1",
         script, out))
      local text = read_bytes(out)
      assert.are.equal(0, status, text)
      assert.truthy(text:match("^false\t.-mrt_h5_attr_count: cannot read the attributes of "
         .. "'/' %(HDF5: .+%)\n$"), text)
   end)
end)
