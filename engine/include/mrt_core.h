/*
 * mrt_core.h: status codes, error messages, logging, devices, engine contexts
 * and the counter-based random number generator.
 *
 * Every public header under engine/include is plain C that LuaJIT's ffi.cdef
 * reads after the preprocessor lines are stripped, so declarations use no
 * macros. Functions that can fail return an int status (MRT_OK on success)
 * and leave a thread-local message that mrt_error_message() returns.
 */
#ifndef MRT_CORE_H
#define MRT_CORE_H

#include <stddef.h>
#include <stdint.h>

enum mrt_status {
    MRT_OK = 0,
    MRT_EINVAL = 1,     /* invalid argument: shape, option or value */
    MRT_EIO = 2,        /* file missing, truncated or corrupt */
    MRT_ENOMEM = 3,     /* allocation failed */
    MRT_ENYI = 4,       /* not yet implemented: the message starts with "NYI:" */
    MRT_EDEVICE = 5     /* device runtime failed or is absent */
};

enum mrt_device {
    MRT_CPU = 0,
    MRT_CUDA = 1
};

enum mrt_log_level {
    MRT_LOG_DEBUG = 0,
    MRT_LOG_INFO = 1,
    MRT_LOG_WARN = 2,
    MRT_LOG_ERROR = 3
};

/* Message of the last failed call on this thread; "" when none. */
const char *mrt_error_message(void);
void mrt_error_clear(void);

/* The engine never prints: it hands log lines to this callback (NULL: drop). */
typedef void (*mrt_log_fn)(int level, const char *message, void *userdata);
void mrt_log_set(mrt_log_fn fn, void *userdata);

const char *mrt_version(void);

/* Threads used by the CPU backend's own loops and by BLAS; 0 means all cores. */
int mrt_threads_set(int n);
int mrt_threads_get(void);

/*
 * An engine context owns the scratch memory, library handles and settings
 * that ops on one device need. Ops take it as their first argument, so two
 * contexts never share mutable state.
 */
typedef struct mrt_ctx mrt_ctx;

mrt_ctx *mrt_ctx_new(int device);            /* NULL on failure, see message */
void mrt_ctx_free(mrt_ctx *ctx);
int mrt_ctx_device(const mrt_ctx *ctx);
/* Deterministic algorithms only (GPU); TF32 tensor cores allowed (GPU). */
int mrt_ctx_set_deterministic(mrt_ctx *ctx, int on);
int mrt_ctx_set_allow_tf32(mrt_ctx *ctx, int on);
/* Waits for queued work on the context's device (no-op on the CPU). */
int mrt_ctx_sync(mrt_ctx *ctx);

/* 1 when the CUDA backend library is loaded and finds a GPU, else 0. */
int mrt_cuda_available(void);
/* Loads the CUDA backend; fails with a message naming what is missing. */
int mrt_cuda_init(void);

/* Device memory, 64-byte aligned on the CPU. */
void *mrt_alloc(int device, int64_t nbytes);   /* NULL on failure */
void mrt_free(int device, void *ptr);
/* Copies nbytes between any two devices. */
int mrt_memcpy(int dst_device, void *dst, int src_device, const void *src, int64_t nbytes);

/*
 * Philox-4x32-10 counter-based generator. The whole state is the key (the
 * seed) and a 64-bit counter of consumed 128-bit blocks, so saving these two
 * fields saves the stream.
 */
typedef struct mrt_rng {
    uint64_t seed;
    uint64_t counter;
} mrt_rng;

void mrt_rng_init(mrt_rng *rng, uint64_t seed);
uint32_t mrt_rng_u32(mrt_rng *rng);
/* Uniform in [0, 1) with 24 random bits. */
double mrt_rng_uniform(mrt_rng *rng);
/* Fills out[0..n) on the CPU. */
void mrt_rng_fill_uniform(mrt_rng *rng, float *out, int64_t n, float lo, float hi);
void mrt_rng_fill_normal(mrt_rng *rng, float *out, int64_t n, float mean, float std);
void mrt_rng_fill_bernoulli(mrt_rng *rng, float *out, int64_t n, float p);
/* A uniformly random permutation of 0..n-1 (Fisher-Yates). */
void mrt_rng_permutation(mrt_rng *rng, int64_t *out, int64_t n);

#endif
