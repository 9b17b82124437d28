/*
 * transform.cuh: per-element arithmetic of the bilinear resize and of the
 * crop with zero padding and flip (mrt_transform.h).
 *
 * The resize repeats the CPU backend's arithmetic (engine/transform.c), which
 * follows PyTorch 1.13's CPU kernel: source coordinates in double from a
 * float scale, weights rounded to float, and each blend a*wa + b*wb rounded
 * as fmaf(a, wa, b*wb). fmaf is a true fused multiply-add on the GPU too
 * (-fmad=false only stops the compiler from fusing on its own), so results
 * match the CPU bit for bit.
 */
#ifndef MRT_KERNELS_TRANSFORM_CUH
#define MRT_KERNELS_TRANSFORM_CUH

#include <math.h>
#include <stdint.h>

#include "portable.cuh"

/* The two source indices and weights of one output coordinate. */
struct mrt_lerp_tap {
    int64_t i0, i1;
    float w0, w1;
};

/* Tap d of an axis resized from `in` to `out` elements. */
MRT_HD mrt_lerp_tap mrt_linear_tap(int64_t in, int64_t out, int64_t d)
{
    mrt_lerp_tap t;

    if (in == out) {
        t.i0 = t.i1 = d;
        t.w0 = 1.0f;
        t.w1 = 0.0f;
        return t;
    }
    const float scale = (float)in / (float)out;
    double src = (double)scale * ((double)d + 0.5) - 0.5;
    if (src < 0.0)
        src = 0.0;
    t.i0 = (int64_t)src;
    t.i1 = t.i0 < in - 1 ? t.i0 + 1 : t.i0;
    double frac = src - (double)t.i0;
    if (frac < 0.0)
        frac = 0.0;
    if (frac > 1.0)
        frac = 1.0;
    t.w1 = (float)frac;
    t.w0 = 1.0f - t.w1;
    return t;
}

MRT_HD float mrt_lerp(float a, float wa, float b, float wb)
{
    return fmaf(a, wa, b * wb);
}

/* Element k of y[planes,oh,ow], resized from x[planes,h,w]. */
MRT_HD float mrt_resize_at(const float *x, int64_t h, int64_t w, int64_t oh, int64_t ow,
                           int64_t k)
{
    const int64_t j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);
    const mrt_lerp_tap r = mrt_linear_tap(h, oh, i), c = mrt_linear_tap(w, ow, j);
    const float *r0 = x + (p * h + r.i0) * w, *r1 = x + (p * h + r.i1) * w;
    const float top = mrt_lerp(r0[c.i0], c.w0, r0[c.i1], c.w1);
    const float bottom = mrt_lerp(r1[c.i0], c.w0, r1[c.i1], c.w1);
    return mrt_lerp(top, r.w0, bottom, r.w1);
}

/*
 * Element k of the crop y[N*channels,oh,ow] of x[N*channels,h,w]; top, left
 * and flip hold one entry per image, or are NULL for zeros.
 */
MRT_HD float mrt_crop_at(const float *x, int64_t channels, int64_t h, int64_t w,
                         const int32_t *top, const int32_t *left, const uint8_t *flip,
                         int64_t oh, int64_t ow, int64_t k)
{
    const int64_t j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);
    const int64_t image = p / channels;
    const int64_t row = (top != NULL ? top[image] : 0) + i;
    const int flipped = flip != NULL && flip[image] != 0;
    const int64_t col = (left != NULL ? left[image] : 0) + (flipped ? ow - 1 - j : j);
    const int inside = row >= 0 && row < h && col >= 0 && col < w;
    return inside ? x[(p * h + row) * w + col] : 0.0f;
}

#endif
