/*
 * transform.cu: the image transforms of mrt_transform.h on the GPU:
 * bilinear resize, per-channel normalisation, and crop with zero padding
 * and horizontal flip. The per-element arithmetic lives in transform.cuh.
 */
#include "common.cuh"
#include "transform.cuh"

/* ---- kernels ------------------------------------------------------------ */

__global__ void resize_bilinear_kernel(const float *x, int64_t planes, int64_t h, int64_t w,
                                       int64_t oh, int64_t ow, float *y)
{
    const int64_t total = planes * oh * ow;

    for (int64_t k = mrt_thread_index(); k < total; k += mrt_grid_stride())
        y[k] = mrt_resize_at(x, h, w, oh, ow, k);
}

/* Subtracts, then divides, in float: the two roundings of torchvision's sub_ and div_. */
__global__ void normalize_kernel(const float *x, const float *mean, const float *std,
                                 int64_t numel, int64_t channels, int64_t inner, float *y)
{
    for (int64_t k = mrt_thread_index(); k < numel; k += mrt_grid_stride()) {
        const int64_t c = (k / inner) % channels;
        const float centred = x[k] - mean[c];
        y[k] = centred / std[c];
    }
}

__global__ void crop_flip_kernel(const float *x, int64_t channels, int64_t h, int64_t w,
                                 const int32_t *top, const int32_t *left, const uint8_t *flip,
                                 int64_t planes, int64_t oh, int64_t ow, float *y)
{
    const int64_t total = planes * oh * ow;

    for (int64_t k = mrt_thread_index(); k < total; k += mrt_grid_stride())
        y[k] = mrt_crop_at(x, channels, h, w, top, left, flip, oh, ow, k);
}

/* ---- launchers ---------------------------------------------------------- */

int mrt_cuda_resize_bilinear(cudaStream_t stream, const float *x, int64_t planes, int64_t h,
                             int64_t w, int64_t oh, int64_t ow, float *y)
{
    MRT_LAUNCHER_ASSERT(planes >= 0, "mrt_cuda_resize_bilinear", "negative plane count", planes);
    MRT_LAUNCHER_ASSERT(oh >= 0, "mrt_cuda_resize_bilinear", "negative output height", oh);
    MRT_LAUNCHER_ASSERT(ow >= 0, "mrt_cuda_resize_bilinear", "negative output width", ow);
    const int64_t total = planes * oh * ow;
    if (total == 0)
        return MRT_OK;
    MRT_LAUNCHER_ASSERT(h >= 1 && w >= 1, "mrt_cuda_resize_bilinear", "empty input plane",
                        h < 1 ? h : w);
    resize_bilinear_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        x, planes, h, w, oh, ow, y);
    return MRT_LAUNCH_CHECK("resize_bilinear_kernel");
}

int mrt_cuda_normalize(cudaStream_t stream, const float *x, const float *mean, const float *std,
                       int64_t numel, int64_t channels, int64_t inner, float *y)
{
    MRT_LAUNCHER_ASSERT(numel >= 0, "mrt_cuda_normalize", "negative size", numel);
    if (numel == 0)
        return MRT_OK;
    MRT_LAUNCHER_ASSERT(channels >= 1 && inner >= 1, "mrt_cuda_normalize",
                        "channel or inner size below 1", channels < 1 ? channels : inner);
    normalize_kernel<<<mrt_grid_for(numel, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        x, mean, std, numel, channels, inner, y);
    return MRT_LAUNCH_CHECK("normalize_kernel");
}

int mrt_cuda_crop_flip(cudaStream_t stream, const float *x, int64_t n, int64_t channels,
                       int64_t h, int64_t w, const int32_t *top, const int32_t *left,
                       const uint8_t *flip, int64_t oh, int64_t ow, float *y)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_crop_flip", "negative image count", n);
    MRT_LAUNCHER_ASSERT(channels >= 0, "mrt_cuda_crop_flip", "negative channel count", channels);
    MRT_LAUNCHER_ASSERT(oh >= 0, "mrt_cuda_crop_flip", "negative output height", oh);
    MRT_LAUNCHER_ASSERT(ow >= 0, "mrt_cuda_crop_flip", "negative output width", ow);
    const int64_t planes = n * channels, total = planes * oh * ow;
    if (total == 0)
        return MRT_OK;
    crop_flip_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        x, channels, h, w, top, left, flip, planes, oh, ow, y);
    return MRT_LAUNCH_CHECK("crop_flip_kernel");
}
