/*
 * pool.cuh: per-element arithmetic of 2-D max and average pooling, with the
 * rules of the CPU backend (engine/pool.c). Padding never wins a max. Equal
 * values go to the first position in row-major window order. A NaN wins,
 * and the last one does, as in PyTorch's CPU kernel. Averages sum in double.
 *
 * The backward functions gather: input position i adds up the gradients of
 * the windows that cover it, in ascending output order. The CPU loop over
 * the outputs scatters into it in that same order, so both round alike.
 * Max pooling's backward routes a window's gradient to the first element
 * equal to y, as the CPU does.
 */
#ifndef MRT_KERNELS_POOL_CUH
#define MRT_KERNELS_POOL_CUH

#include <math.h>
#include <stdint.h>

#include "../engine/cuda/cuda_kernels.h"
#include "portable.cuh"

/*
 * Output rows whose window covers input row h: [*lo, *hi], empty when
 * *lo > *hi. Window o covers rows o*stride - pad .. o*stride - pad + kernel - 1.
 */
MRT_HD void mrt_pool_covering(int64_t h, int32_t kernel, int32_t stride, int32_t pad,
                              int64_t out, int64_t *lo, int64_t *hi)
{
    const int64_t first = h + pad - kernel + 1;

    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = (h + pad) / stride;
    if (*hi > out - 1)
        *hi = out - 1;
}

/*
 * Clipped bounds of window (oh, ow) in [*h0, *h1) x [*w0, *w1) and its
 * divisor: the window clipped to the padded input when count_include_pad is
 * set (PyTorch's rule), else the number of real positions.
 */
MRT_HD int64_t mrt_pool_window(const mrt_cuda_pool_shape &s, int64_t oh, int64_t ow,
                               int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1)
{
    int64_t hs = oh * s.stride_h - s.pad_h, ws = ow * s.stride_w - s.pad_w;
    int64_t he = hs + s.kernel_h, we = ws + s.kernel_w;

    if (he > s.h + s.pad_h)
        he = s.h + s.pad_h;
    if (we > s.w + s.pad_w)
        we = s.w + s.pad_w;
    const int64_t padded = (he - hs) * (we - ws);
    *h0 = hs > 0 ? hs : 0;
    *w0 = ws > 0 ? ws : 0;
    *h1 = he < s.h ? he : s.h;
    *w1 = we < s.w ? we : s.w;
    return s.count_include_pad ? padded : (*h1 - *h0) * (*w1 - *w0);
}

/*
 * Index in the plane of the maximum of window (oh, ow), with its value in
 * *value: starting from -inf at the window's first position, a larger value
 * or any NaN takes over.
 */
MRT_HD int64_t mrt_pool_argmax(const float *plane, const mrt_cuda_pool_shape &s, int64_t oh,
                               int64_t ow, float *value)
{
    int64_t h0, h1, w0, w1;
    float best = -INFINITY;

    mrt_pool_window(s, oh, ow, &h0, &h1, &w0, &w1);
    int64_t best_i = h0 * s.w + w0;
    for (int64_t h = h0; h < h1; h++) {
        for (int64_t w = w0; w < w1; w++) {
            const float v = plane[h * s.w + w];
            if (v > best || isnan(v)) {
                best = v;
                best_i = h * s.w + w;
            }
        }
    }
    *value = best;
    return best_i;
}

/*
 * Index of the element of window (oh, ow) that receives its gradient: the
 * first equal to y, or the window's maximum when none is (a NaN y, or a y
 * changed since the forward).
 */
MRT_HD int64_t mrt_pool_find(const float *plane, const mrt_cuda_pool_shape &s, int64_t oh,
                             int64_t ow, float y)
{
    int64_t h0, h1, w0, w1;
    float unused;

    mrt_pool_window(s, oh, ow, &h0, &h1, &w0, &w1);
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++)
            if (plane[h * s.w + w] == y)
                return h * s.w + w;
    return mrt_pool_argmax(plane, s, oh, ow, &unused);
}

/* Element i of y[N,C,OH,OW] for max pooling. */
MRT_HD float mrt_maxpool_forward_at(const mrt_cuda_pool_shape &s, const float *x, int64_t i)
{
    const int64_t ow = i % s.ow, oh = (i / s.ow) % s.oh, plane = i / (s.ow * s.oh);
    float best;

    mrt_pool_argmax(x + plane * s.h * s.w, s, oh, ow, &best);
    return best;
}

/* Element i of dx[N,C,H,W] for max pooling. */
MRT_HD float mrt_maxpool_backward_at(const mrt_cuda_pool_shape &s, const float *dy,
                                     const float *x, const float *y, int64_t i)
{
    const int64_t w = i % s.w, h = (i / s.w) % s.h, plane = i / (s.w * s.h);
    const float *xp = x + plane * s.h * s.w;
    const float *yp = y + plane * s.oh * s.ow;
    const float *dyp = dy + plane * s.oh * s.ow;
    int64_t oh0, oh1, ow0, ow1;
    float sum = 0.0f;

    mrt_pool_covering(h, s.kernel_h, s.stride_h, s.pad_h, s.oh, &oh0, &oh1);
    mrt_pool_covering(w, s.kernel_w, s.stride_w, s.pad_w, s.ow, &ow0, &ow1);
    for (int64_t oh = oh0; oh <= oh1; oh++)
        for (int64_t ow = ow0; ow <= ow1; ow++)
            if (mrt_pool_find(xp, s, oh, ow, yp[oh * s.ow + ow]) == h * s.w + w)
                sum += dyp[oh * s.ow + ow];
    return sum;
}

/* Element i of y[N,C,OH,OW] for average pooling. */
MRT_HD float mrt_avgpool_forward_at(const mrt_cuda_pool_shape &s, const float *x, int64_t i)
{
    const int64_t ow = i % s.ow, oh = (i / s.ow) % s.oh, plane = i / (s.ow * s.oh);
    const float *xp = x + plane * s.h * s.w;
    int64_t h0, h1, w0, w1;
    const int64_t divisor = mrt_pool_window(s, oh, ow, &h0, &h1, &w0, &w1);
    double sum = 0.0;

    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++)
            sum += (double)xp[h * s.w + w];
    return (float)(sum / (double)divisor);
}

/* Element i of dx[N,C,H,W] for average pooling. */
MRT_HD float mrt_avgpool_backward_at(const mrt_cuda_pool_shape &s, const float *dy, int64_t i)
{
    const int64_t w = i % s.w, h = (i / s.w) % s.h, plane = i / (s.w * s.h);
    const float *dyp = dy + plane * s.oh * s.ow;
    int64_t oh0, oh1, ow0, ow1, h0, h1, w0, w1;
    float sum = 0.0f;

    mrt_pool_covering(h, s.kernel_h, s.stride_h, s.pad_h, s.oh, &oh0, &oh1);
    mrt_pool_covering(w, s.kernel_w, s.stride_w, s.pad_w, s.ow, &ow0, &ow1);
    for (int64_t oh = oh0; oh <= oh1; oh++) {
        for (int64_t ow = ow0; ow <= ow1; ow++) {
            const int64_t divisor = mrt_pool_window(s, oh, ow, &h0, &h1, &w0, &w1);
            sum += (float)((double)dyp[oh * s.ow + ow] / (double)divisor);
        }
    }
    return sum;
}

#endif
