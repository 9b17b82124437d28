/*
 * transform.c: image transforms on batches (bilinear resize, normalisation,
 * crop with zero padding, horizontal flip): argument checks, the host-side
 * random draws, and the CPU implementation.
 *
 * The CPU loops run one image plane (or one output row) per OpenMP
 * iteration. The resize matches PyTorch 1.13 bit for bit, which needs its
 * exact arithmetic: see linear_taps and lerp below.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "include/mrt_transform.h"

/* Loops over fewer output elements than this run on one thread. */
#define TRANSFORM_PARALLEL_MIN 32768

/* FMA-specialised copies of the resize row loop where GCC can select them at load time. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TRANSFORM_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define TRANSFORM_FMA_CLONES
#endif

/* 1 when the element ranges of a and b share memory. */
static int overlaps(const mrt_tensor *a, const mrt_tensor *b)
{
    uintptr_t a0 = (uintptr_t)a->data, a1 = (uintptr_t)(a->data + a->numel);
    uintptr_t b0 = (uintptr_t)b->data, b1 = (uintptr_t)(b->data + b->numel);

    return a->numel > 0 && b->numel > 0 && a0 < b1 && b0 < a1;
}

/* Checks x[N,C,H,W] and y[N,C,*,*] on the context's device, not overlapping. */
static int check_images(mrt_ctx *ctx, const char *fn, const mrt_tensor *x, const mrt_tensor *y)
{
    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, 4));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, 4));
    const int64_t expected[4] = {x->shape[0], x->shape[1], -1, -1};
    MRT_TRY(mrt_check_shape(fn, "y", y, 4, expected));
    if (overlaps(x, y))
        return mrt_fail(MRT_EINVAL, "%s: 'y' overlaps 'x' (expected separate storage)", fn);
    return MRT_OK;
}

int mrt_resize_bilinear(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    static const char fn[] = "mrt_resize_bilinear";
    char xs[160], ys[160];

    MRT_TRY(check_images(ctx, fn, x, y));
    if ((x->shape[2] == 0 || x->shape[3] == 0) && y->shape[2] * y->shape[3] > 0)
        return mrt_fail(MRT_EINVAL, "%s: cannot resize the empty image 'x' %s to 'y' %s", fn,
                        mrt_tensor_shape_str(x, xs, sizeof xs),
                        mrt_tensor_shape_str(y, ys, sizeof ys));
    return MRT_DISPATCH(ctx, resize_bilinear, x, y);
}

int mrt_normalize(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                  mrt_tensor *y)
{
    static const char fn[] = "mrt_normalize";
    char xs[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, -1));
    if (x->ndim < 2)
        return mrt_fail(MRT_EINVAL, "%s: expected 'x' with channels in dimension 2, got %d-D %s",
                        fn, (int)x->ndim, mrt_tensor_shape_str(x, xs, sizeof xs));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, x->ndim, x->shape));
    if (mean == NULL || std == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing %s array", fn, mean == NULL ? "mean" : "std");
    for (int64_t c = 0; c < x->shape[1]; c++) {
        if (std[c] == 0.0f)
            return mrt_fail(MRT_EINVAL, "%s: std[%lld] is 0 (expected nonzero values)", fn,
                            (long long)c);
    }
    if (y->data != x->data && overlaps(x, y))
        return mrt_fail(MRT_EINVAL, "%s: 'y' partly overlaps 'x' (expected 'x' itself or "
                        "separate storage)", fn);
    return MRT_DISPATCH(ctx, normalize, x, mean, std, y);
}

int mrt_crop_flip(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top, const int32_t *left,
                  const uint8_t *flip, mrt_tensor *y)
{
    MRT_TRY(check_images(ctx, "mrt_crop_flip", x, y));
    return MRT_DISPATCH(ctx, crop_flip, x, top, left, flip, y);
}

/* An integer uniform in [0, count), from one draw; count is at most 2^24. */
static int32_t draw_below(mrt_rng *rng, int64_t count)
{
    int64_t k = (int64_t)(mrt_rng_uniform(rng) * (double)count);

    return (int32_t)(k < count ? k : count - 1);
}

int mrt_random_crop(mrt_ctx *ctx, const mrt_tensor *x, int32_t pad, mrt_rng *rng,
                    mrt_tensor *y)
{
    static const char fn[] = "mrt_random_crop";
    char xs[160], ys[160];

    MRT_TRY(check_images(ctx, fn, x, y));
    if (rng == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing generator 'rng'", fn);
    if (pad < 0)
        return mrt_fail(MRT_EINVAL, "%s: padding %d is negative (expected >= 0)", fn, (int)pad);
    const int64_t rows = x->shape[2] + 2 * (int64_t)pad - y->shape[2] + 1;
    const int64_t cols = x->shape[3] + 2 * (int64_t)pad - y->shape[3] + 1;
    if (rows < 1 || cols < 1)
        return mrt_fail(MRT_EINVAL, "%s: window %lldx%lld of 'y' %s is larger than 'x' %s "
                        "padded by %d", fn, (long long)y->shape[2], (long long)y->shape[3],
                        mrt_tensor_shape_str(y, ys, sizeof ys),
                        mrt_tensor_shape_str(x, xs, sizeof xs), (int)pad);
    if (rows > (1 << 24) || cols > (1 << 24))
        return mrt_fail(MRT_ENYI, "NYI: %s with more than 2^24 window positions per axis", fn);

    const int64_t n = x->shape[0];
    int32_t *offsets = malloc((size_t)(n > 0 ? 2 * n : 1) * sizeof *offsets);
    if (offsets == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: cannot allocate offsets for %lld images", fn,
                        (long long)n);
    for (int64_t i = 0; i < n; i++) {
        offsets[i] = draw_below(rng, rows) - pad;
        offsets[n + i] = draw_below(rng, cols) - pad;
    }
    int status = MRT_DISPATCH(ctx, crop_flip, x, offsets, offsets + n, NULL, y);
    free(offsets);
    return status;
}

int mrt_random_hflip(mrt_ctx *ctx, const mrt_tensor *x, double p, mrt_rng *rng, mrt_tensor *y)
{
    static const char fn[] = "mrt_random_hflip";

    MRT_TRY(check_images(ctx, fn, x, y));
    MRT_TRY(mrt_check_shape(fn, "y", y, 4, x->shape));
    if (rng == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing generator 'rng'", fn);
    if (!(p >= 0.0 && p <= 1.0))
        return mrt_fail(MRT_EINVAL, "%s: probability %g is invalid (expected 0 to 1)", fn, p);

    const int64_t n = x->shape[0];
    uint8_t *flip = malloc((size_t)(n > 0 ? n : 1));
    if (flip == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: cannot allocate flags for %lld images", fn,
                        (long long)n);
    for (int64_t i = 0; i < n; i++)
        flip[i] = mrt_rng_uniform(rng) < p;
    int status = MRT_DISPATCH(ctx, crop_flip, x, NULL, NULL, flip, y);
    free(flip);
    return status;
}

/* ---- CPU implementation ------------------------------------------------- */

/* The two source indices and weights of one output coordinate. */
typedef struct lerp_tap {
    int64_t i0, i1;
    float w0, w1;
} lerp_tap;

/*
 * Source taps along one axis, computed as PyTorch 1.13's CPU kernel does
 * (area_pixel_compute_source_index): the scale in/out is a float, the
 * source coordinate scale*(d+0.5)-0.5 is taken in double and clamped at 0,
 * w1 is the double fraction rounded to float and w0 = 1 - w1 in float. An
 * axis that keeps its size copies (w0 = 1, w1 = 0).
 */
static void linear_taps(int64_t in, int64_t out, lerp_tap *taps)
{
    const float scale = (float)in / (float)out;

    for (int64_t d = 0; d < out; d++) {
        lerp_tap *t = &taps[d];
        if (in == out) {
            t->i0 = t->i1 = d;
            t->w0 = 1.0f;
            t->w1 = 0.0f;
            continue;
        }
        double src = (double)scale * ((double)d + 0.5) - 0.5;
        if (src < 0.0)
            src = 0.0;
        t->i0 = (int64_t)src;
        t->i1 = t->i0 < in - 1 ? t->i0 + 1 : t->i0;
        double frac = src - (double)t->i0;
        if (frac < 0.0)
            frac = 0.0;
        if (frac > 1.0)
            frac = 1.0;
        t->w1 = (float)frac;
        t->w0 = 1.0f - t->w1;
    }
}

/*
 * a*wa + b*wb rounded as PyTorch's AVX2 kernel rounds it: b*wb first, then
 * one fused multiply-add. fmaf is exact on every CPU, in hardware where the
 * FMA clone runs and in libm elsewhere.
 */
static inline float lerp(float a, float wa, float b, float wb)
{
    return fmaf(a, wa, b * wb);
}

/* One output row: rows r0 and r1 of a plane blended with weights v0, v1. */
TRANSFORM_FMA_CLONES
static void resize_row(const float *r0, const float *r1, float v0, float v1,
                       const lerp_tap *cols, int64_t ow, float *out)
{
    for (int64_t j = 0; j < ow; j++) {
        const lerp_tap *c = &cols[j];
        float top = lerp(r0[c->i0], c->w0, r0[c->i1], c->w1);
        float bottom = lerp(r1[c->i0], c->w0, r1[c->i1], c->w1);
        out[j] = lerp(top, v0, bottom, v1);
    }
}

int mrt_cpu_resize_bilinear(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    const int64_t planes = x->shape[0] * x->shape[1];
    const int64_t h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];

    (void)ctx;
    if (y->numel == 0)
        return MRT_OK;
    lerp_tap *taps = malloc((size_t)(oh + ow) * sizeof *taps);
    if (taps == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_resize_bilinear: cannot allocate %lld taps",
                        (long long)(oh + ow));
    lerp_tap *rows = taps, *cols = taps + oh;
    linear_taps(h, oh, rows);
    linear_taps(w, ow, cols);

#pragma omp parallel for collapse(2) if (y->numel > TRANSFORM_PARALLEL_MIN) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t i = 0; i < oh; i++) {
            const float *plane = x->data + p * h * w;
            const lerp_tap *r = &rows[i];
            resize_row(plane + r->i0 * w, plane + r->i1 * w, r->w0, r->w1, cols, ow,
                       y->data + (p * oh + i) * ow);
        }
    }
    free(taps);
    return MRT_OK;
}

int mrt_cpu_normalize(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                      mrt_tensor *y)
{
    const int64_t n = x->shape[0], channels = x->shape[1];
    const int64_t inner = channels > 0 && n > 0 ? x->numel / (n * channels) : 0;

    (void)ctx;
    /* Subtract, then divide, both in float: the two roundings torchvision's sub_ and div_ make. */
#pragma omp parallel for collapse(2) if (x->numel > TRANSFORM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        for (int64_t c = 0; c < channels; c++) {
            const float *src = x->data + (i * channels + c) * inner;
            float *dst = y->data + (i * channels + c) * inner;
            const float m = mean[c], s = std[c];
            for (int64_t k = 0; k < inner; k++) {
                float centred = src[k] - m;
                dst[k] = centred / s;
            }
        }
    }
    return MRT_OK;
}

/* One output row of the window: source row src (NULL when outside the image). */
static void crop_row(const float *src, int64_t w, int64_t left, int flip, int64_t ow, float *out)
{
    if (src == NULL) {
        memset(out, 0, (size_t)ow * sizeof *out);
        return;
    }
    for (int64_t j = 0; j < ow; j++) {
        int64_t col = left + (flip ? ow - 1 - j : j);
        out[j] = col >= 0 && col < w ? src[col] : 0.0f;
    }
}

int mrt_cpu_crop_flip(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top, const int32_t *left,
                      const uint8_t *flip, mrt_tensor *y)
{
    const int64_t n = x->shape[0], channels = x->shape[1];
    const int64_t h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];

    (void)ctx;
#pragma omp parallel for collapse(2) if (y->numel > TRANSFORM_PARALLEL_MIN) schedule(static)
    for (int64_t p = 0; p < n * channels; p++) {
        for (int64_t i = 0; i < oh; i++) {
            const int64_t image = p / channels;
            const int64_t row = (top != NULL ? top[image] : 0) + i;
            const float *src = row >= 0 && row < h ? x->data + (p * h + row) * w : NULL;
            crop_row(src, w, left != NULL ? left[image] : 0, flip != NULL && flip[image], ow,
                     y->data + (p * oh + i) * ow);
        }
    }
    return MRT_OK;
}
