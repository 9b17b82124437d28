# mrt: build, set-up, run and test.
#
#   make            build build/libmrt.so (and build/libmrt_cuda.so where nvcc exists)
#   make deps       install the Debian and npm packages that are missing
#   make run        deps + build + the transfer recipe on the embedded data
#   make test       deps + build + the busted suite, ending in "N passed, N failed"
#   make bench      CPU speed against PyTorch (tests/bench)
#   make test-gpu   the suite on the CUDA backend (needs a GPU)

CC      ?= cc
NVCC    ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDA_HOME ?= /usr/local/cuda
BUILD   := build
CACHE   ?= cache

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
CFLAGS  ?= -O2 -g
# -fno-math-errno: math functions need not set errno, which lets loops that
# call sqrtf vectorise. Nothing in the engine reads errno after a math call.
# -fno-trapping-math: floating-point operations are assumed not to trap, so
# a loop may compute a value it then discards (masked updates). Neither flag
# changes a computed value.
CFLAGS  += -std=c11 -fPIC -fopenmp -fno-math-errno -fno-trapping-math $(WARN) \
           -I/usr/include/hdf5/serial
LDLIBS  := -fopenmp -lhdf5_serial -lz -lm -ldl
HDF5_LIB := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/hdf5/serial))
ifneq ($(HDF5_LIB),)
LDLIBS  := -L$(HDF5_LIB) $(LDLIBS)
endif
# oneDNN (libdnnl-dev) provides the convolutions and the matrix product,
# threaded by the same OpenMP pool as the engine's loops. Without it the
# matrix product is OpenBLAS's. OpenBLAS is not linked next to oneDNN, since
# Debian's pthreads build would start a second thread pool at load time.
DNNL    := $(wildcard /usr/include/dnnl.h)
ifneq ($(DNNL),)
CFLAGS  += -DMRT_HAVE_DNNL
LDLIBS  += -ldnnl
else
LDLIBS  += -lopenblas
endif

ENGINE_SRC := $(wildcard engine/*.c)
ENGINE_OBJ := $(patsubst engine/%.c,$(BUILD)/engine/%.o,$(ENGINE_SRC))
HEADERS    := $(wildcard engine/*.h engine/include/*.h)

CUDA_C_SRC := $(wildcard engine/cuda/*.c)
CUDA_CU_SRC := $(wildcard kernels/*.cu)
CUDA_ARCH  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90
# -fmad=false: no fused multiply-add, so elementwise and optimizer kernels round
# like the CPU backend's C code and agree with it bit for bit.
NVCCFLAGS  ?= -O3 -std=c++17 -fmad=false -Xcompiler -fPIC,-Wall,-Wextra $(CUDA_ARCH)

TARGETS := $(BUILD)/libmrt.so
ifneq ($(NVCC),)
ifneq ($(CUDA_C_SRC)$(CUDA_CU_SRC),)
TARGETS += $(BUILD)/libmrt_cuda.so
endif
endif

.PHONY: all deps deps-test run test conformance bench test-gpu clean fixtures
all: $(TARGETS) bin/mrt

# The compilers and flags in use. The stamp is rewritten only when they
# change, so objects built before `make deps` installed oneDNN are rebuilt
# with it, and nothing else is.
FLAGS_STAMP := $(BUILD)/flags.txt
FLAGS_NOW   := $(CC) $(CFLAGS) $(LDLIBS) $(NVCC) $(NVCCFLAGS)

.PHONY: FORCE
FORCE:

$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

$(BUILD)/engine/%.o: engine/%.c $(HEADERS) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# -z nodelete: LuaJIT unloads FFI libraries when its state closes, which
# would unmap OpenBLAS and OpenMP while their worker threads still run.
$(BUILD)/libmrt.so: $(ENGINE_OBJ)
	$(CC) -shared -Wl,-z,nodelete -o $@ $^ $(LDLIBS)

CUDA_OBJ := $(patsubst engine/cuda/%.c,$(BUILD)/cuda/%.o,$(CUDA_C_SRC)) \
            $(patsubst kernels/%.cu,$(BUILD)/kernels/%.o,$(CUDA_CU_SRC))

$(BUILD)/cuda/%.o: engine/cuda/%.c $(HEADERS) $(wildcard engine/cuda/*.h) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(HEADERS) $(wildcard kernels/*.cuh engine/cuda/*.h) \
                      $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -I$(CUDA_HOME)/include -c $< -o $@

$(BUILD)/libmrt_cuda.so: $(CUDA_OBJ) $(BUILD)/libmrt.so
	$(CC) -shared -Wl,-z,nodelete -o $@ $(CUDA_OBJ) -L$(BUILD) -lmrt -L$(CUDA_HOME)/lib64 \
	    -Wl,-rpath,$(CUDA_HOME)/lib64 -Wl,-rpath,'$$ORIGIN' -lcudnn -lcublas -lcudart -lstdc++

# The kernels' per-element arithmetic, built for the host with the C++ compiler
# and compared bit for bit with the CPU backend; needs the CUDA headers, no GPU.
.PHONY: cuda-host-check
cuda-host-check: $(BUILD)/cuda_host_check
	$(BUILD)/cuda_host_check

$(BUILD)/cuda_host_check: tests/gpu/host_check.cu $(wildcard kernels/*.cuh engine/cuda/*.h) \
                          $(HEADERS) | $(BUILD)/libmrt.so
	$(CXX) -O2 -std=c++17 -ffp-contract=off -Wall -Wextra -I$(CUDA_HOME)/include -x c++ $< \
	    -x none -o $@ -L$(BUILD) -lmrt -Wl,-rpath,'$$ORIGIN'

bin/mrt: lua/mrt/cli.lua
	@chmod +x bin/mrt
	@touch bin/mrt

deps:
	@sh tools/deps.sh

deps-test:
	@sh tools/deps.sh --test

run: deps all
	bin/mrt recipes/transfer.lua --out results/transfer.h5

test: deps-test all
	@sh tests/run.sh

conformance: all
	@sh tests/run.sh --conformance

bench: all
	/usr/bin/python3 tests/bench/bench.py

test-gpu: all
	@MRT_DEVICE=cuda sh tests/run.sh --gpu

fixtures:
	/usr/bin/python3 tests/fixtures/make_fixtures.py tests/fixtures

clean:
	rm -rf $(BUILD)
