/*
 * cuda_transform.c: the backend table's image transform entries
 * (mrt_transform.h) on the GPU. Their per-channel and per-image arrays
 * arrive in host memory, and each entry copies them into a scratch buffer on
 * the context's stream before the kernel. cudaMemcpyAsync has read a
 * pageable source by the time it returns, so callers may free them at once.
 */
#include "cuda_common.h"

static int cuda_resize_bilinear(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    mrt_cuda_impl *impl = ctx->impl;

    return mrt_cuda_resize_bilinear(impl->stream, x->data, x->shape[0] * x->shape[1],
                                    x->shape[2], x->shape[3], y->shape[2], y->shape[3], y->data);
}

static int cuda_normalize(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                          mrt_tensor *y)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t n = x->shape[0], channels = x->shape[1];

    if (x->numel == 0)
        return MRT_OK;
    const size_t bytes = (size_t)channels * sizeof(float);
    float *device = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_TRANSFORM, 2 * bytes);
    if (device == NULL)
        return MRT_ENOMEM;
    MRT_CUDA_CHECK(cudaMemcpyAsync(device, mean, bytes, cudaMemcpyHostToDevice, impl->stream));
    MRT_CUDA_CHECK(
        cudaMemcpyAsync(device + channels, std, bytes, cudaMemcpyHostToDevice, impl->stream));
    return mrt_cuda_normalize(impl->stream, x->data, device, device + channels, x->numel,
                              channels, x->numel / (n * channels), y->data);
}

/* Copies nbytes from host src to device dst on the stream; a NULL src stays NULL. */
static int stage(mrt_cuda_impl *impl, void *dst, const void *src, size_t nbytes, void **staged)
{
    *staged = NULL;
    if (src == NULL || nbytes == 0)
        return MRT_OK;
    MRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, impl->stream));
    *staged = dst;
    return MRT_OK;
}

static int cuda_crop_flip(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top,
                          const int32_t *left, const uint8_t *flip, mrt_tensor *y)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t n = x->shape[0];
    void *device_top, *device_left, *device_flip;

    if (y->numel == 0)
        return MRT_OK;
    /* Layout: top[n] int32, left[n] int32, flip[n] bytes. */
    char *device = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_TRANSFORM, (size_t)n * 9);
    if (device == NULL)
        return MRT_ENOMEM;
    MRT_TRY(stage(impl, device, top, (size_t)n * sizeof(int32_t), &device_top));
    MRT_TRY(stage(impl, device + 4 * n, left, (size_t)n * sizeof(int32_t), &device_left));
    MRT_TRY(stage(impl, device + 8 * n, flip, (size_t)n, &device_flip));
    return mrt_cuda_crop_flip(impl->stream, x->data, n, x->shape[1], x->shape[2], x->shape[3],
                              device_top, device_left, device_flip, y->shape[2], y->shape[3],
                              y->data);
}

void mrt_cuda_register_transform_ops(mrt_backend *table)
{
    table->resize_bilinear = cuda_resize_bilinear;
    table->normalize = cuda_normalize;
    table->crop_flip = cuda_crop_flip;
}
