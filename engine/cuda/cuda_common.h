/*
 * cuda_common.h: what the CUDA backend's C files share: the state of a CUDA
 * context, the check macros that turn CUDA, cuDNN and cuBLAS failures into
 * mrt errors, the caching allocator and the per-context scratch buffers.
 *
 * Streams and ordering: each context queues its work on its own stream,
 * created blocking (cudaStreamDefault), so it is ordered with the legacy
 * default stream that the context-free entries (memcpy) use. All work of a
 * single context therefore runs in issue order.
 */
#ifndef MRT_CUDA_COMMON_H
#define MRT_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "../mrt_internal.h"
#include "cuda_kernels.h"

/* Scratch buffers of a context; an op never uses one slot for two things at once. */
enum mrt_cuda_scratch_slot {
    MRT_CUDA_SCRATCH_REDUCE = 0,   /* sum partials and the result */
    MRT_CUDA_SCRATCH_XENT = 1,     /* per-row loss and state, and the result */
    MRT_CUDA_SCRATCH_BN_DX = 2,    /* batchnorm dx when the caller skipped it */
    MRT_CUDA_SCRATCH_BN_PARAM = 3, /* batchnorm dgamma/dbeta when the caller skipped them */
    MRT_CUDA_SCRATCH_TRANSFORM = 4,/* a transform's per-channel or per-image host arrays */
    MRT_CUDA_SCRATCH_SLOTS = 5
};

/* Bytes of the pinned host buffer that carries reduction results back. */
#define MRT_CUDA_HOST_BYTES 256

typedef struct mrt_cuda_conv_entry mrt_cuda_conv_entry;   /* cudnn_ops.c */

/* What a CUDA context owns (ctx->impl). */
typedef struct mrt_cuda_impl {
    int gpu;                        /* CUDA device ordinal, current when the context was made */
    cudaStream_t stream;
    cudnnHandle_t cudnn;            /* bound to stream */
    cublasHandle_t cublas;          /* bound to stream */
    int cublas_tf32;                /* math mode now set on the cuBLAS handle: 1 = TF32 */
    void *cublas_workspace;
    void *workspace;                /* cuDNN workspace: grows to the largest need, then reused */
    size_t workspace_bytes;
    void *scratch[MRT_CUDA_SCRATCH_SLOTS];
    size_t scratch_bytes[MRT_CUDA_SCRATCH_SLOTS];
    void *host;                     /* pinned, MRT_CUDA_HOST_BYTES */
    cudnnTensorDescriptor_t bn_x;   /* batchnorm descriptors, set per call */
    cudnnTensorDescriptor_t bn_param;
    mrt_cuda_conv_entry *convs;     /* convolution descriptor and algorithm cache */
    int conv_count;
    int conv_capacity;
} mrt_cuda_impl;

/* ---- errors (cuda_backend.c) ------------------------------------------- */

/*
 * Each sets the mrt error "<function> failed on cuda:<device>: <status
 * text> (status <n>) [file:line]" and returns MRT_EDEVICE (MRT_ENOMEM for
 * out-of-memory statuses). `call` is the call's source text; the message
 * keeps only the function name.
 */
int mrt_cuda_fail_runtime(cudaError_t status, const char *call, const char *file, int line);
int mrt_cuda_fail_cudnn(cudnnStatus_t status, const char *call, const char *file, int line);
int mrt_cuda_fail_cublas(cublasStatus_t status, const char *call, const char *file, int line);

#define MRT_CUDA_CHECK(call)                                                                       \
    do {                                                                                           \
        cudaError_t mrt_status_ = (call);                                                          \
        if (mrt_status_ != cudaSuccess)                                                            \
            return mrt_cuda_fail_runtime(mrt_status_, #call, __FILE__, __LINE__);                  \
    } while (0)

#define MRT_CUDNN_CHECK(call)                                                                      \
    do {                                                                                           \
        cudnnStatus_t mrt_status_ = (call);                                                        \
        if (mrt_status_ != CUDNN_STATUS_SUCCESS)                                                   \
            return mrt_cuda_fail_cudnn(mrt_status_, #call, __FILE__, __LINE__);                    \
    } while (0)

#define MRT_CUBLAS_CHECK(call)                                                                     \
    do {                                                                                           \
        cublasStatus_t mrt_status_ = (call);                                                       \
        if (mrt_status_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return mrt_cuda_fail_cublas(mrt_status_, #call, __FILE__, __LINE__);                   \
    } while (0)

/* ---- caching allocator (cuda_alloc.c) ---------------------------------- */

/* Device memory from the size-class cache; NULL with the message set on failure. */
void *mrt_cuda_alloc(int64_t nbytes);
/* Returns a block to its size class; never calls cudaFree. */
void mrt_cuda_free(void *ptr);
/* Context bookkeeping: with two or more live contexts, free waits for the device. */
void mrt_cuda_alloc_context_opened(void);
void mrt_cuda_alloc_context_closed(void);

/*
 * Exported for tests and tools: counts[0] = cudaMalloc calls so far,
 * counts[1] = bytes held from CUDA, counts[2] = bytes handed out now,
 * counts[3] = bytes cached in the free lists.
 */
void mrt_cuda_memory_stats(int64_t counts[4]);
/* Gives every cached block back to CUDA (cudaFree); returns MRT_OK or the failure. */
int mrt_cuda_empty_cache(void);

/* ---- contexts (cuda_backend.c) ----------------------------------------- */

/* Device memory of a scratch slot with at least nbytes; NULL with the message set. */
void *mrt_cuda_scratch(mrt_ctx *ctx, int slot, size_t nbytes);
/* Copies nbytes of device memory to the pinned host buffer and waits for the stream. */
int mrt_cuda_read_back(mrt_ctx *ctx, const void *device_ptr, size_t nbytes);

/* ---- the table's entries, one registration per file -------------------- */

void mrt_cuda_register_tensor_ops(mrt_backend *table);    /* cuda_ops.c */
void mrt_cuda_register_layer_ops(mrt_backend *table);     /* cuda_ops.c */
void mrt_cuda_register_optim_ops(mrt_backend *table);     /* cuda_optim.c */
void mrt_cuda_register_cudnn_ops(mrt_backend *table);     /* cudnn_ops.c */
void mrt_cuda_register_cublas_ops(mrt_backend *table);    /* cublas_ops.c */
void mrt_cuda_register_transform_ops(mrt_backend *table); /* cuda_transform.c */
/* Releases a context's convolution cache (cudnn_ops.c). */
void mrt_cuda_conv_cache_free(mrt_cuda_impl *impl);

#endif
