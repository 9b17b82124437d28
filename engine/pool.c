/*
 * pool.c: 2-D max and average pooling and global average pooling, as
 * PyTorch's MaxPool2d, AvgPool2d and AdaptiveAvgPool2d(1): argument checks
 * and the CPU implementation. Windows are not dilated; ceil_mode = 1 is NYI.
 *
 * Max pooling treats padding as -inf and gives a tie to the first index in
 * row-major window order. A NaN in the window wins, as in PyTorch's CPU
 * kernel. Its backward stores no indices, because it finds each window's
 * maximum again from x and y. The CPU path runs one [H,W] plane per OpenMP
 * thread and sums averages in double. Channels-last operands (the
 * channels_last parameter, or a 3-D [N,S,C] input to global pooling) run
 * one image per thread, with the inner loops over the contiguous channels.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* Channels-last loops work on this many channels at a time (per-channel state on the stack). */
#define CHANNEL_CHUNK 64

/* Loops over fewer elements than this run on one thread. */
#define POOL_PARALLEL_MIN 32768

/* ---- argument checks ---------------------------------------------------- */

static int check_params(mrt_ctx *ctx, const char *fn, const mrt_pool2d_params *p)
{
    if (p == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing pooling parameters 'p'", fn);
    if (p->kernel_h < 1 || p->kernel_w < 1)
        return mrt_fail(MRT_EINVAL, "%s: kernel %dx%d is invalid (expected 1 or more)", fn,
                        p->kernel_h, p->kernel_w);
    if (p->stride_h < 1 || p->stride_w < 1)
        return mrt_fail(MRT_EINVAL, "%s: stride %dx%d is invalid (expected 1 or more)", fn,
                        p->stride_h, p->stride_w);
    if (p->pad_h < 0 || p->pad_w < 0)
        return mrt_fail(MRT_EINVAL, "%s: padding %dx%d is invalid (expected 0 or more)", fn,
                        p->pad_h, p->pad_w);
    /* PyTorch's rule, which makes every window contain at least one input element. */
    if (p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2)
        return mrt_fail(MRT_EINVAL, "%s: padding %dx%d is more than half of kernel %dx%d", fn,
                        p->pad_h, p->pad_w, p->kernel_h, p->kernel_w);
    if (p->ceil_mode != 0)
        return mrt_fail(MRT_ENYI, "NYI: %s: ceil_mode = %d (only 0 is implemented)", fn,
                        p->ceil_mode);
    if (p->channels_last != 0 && p->channels_last != 1)
        return mrt_fail(MRT_EINVAL, "%s: channels_last is %d (expected 0 or 1)", fn,
                        p->channels_last);
    if (p->channels_last && !mrt_channels_last_supported(ctx))
        return mrt_fail(MRT_ENYI, "NYI: %s: channels-last operands on the %s backend", fn,
                        ctx->backend->name);
    return MRT_OK;
}

/*
 * Checks p and the input-shaped tensor t[N,C,H,W] (or [N,H,W,C] with
 * channels last) and stores the output shape [N,C,OH,OW] (or [N,OH,OW,C]).
 */
static int check_input(mrt_ctx *ctx, const char *fn, const char *name,
                       const mrt_pool2d_params *p, const mrt_tensor *t, int64_t *y_shape)
{
    char ts[160];

    MRT_TRY(check_params(ctx, fn, p));
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, 4));
    const int h_dim = p->channels_last ? 1 : 2;
    int64_t oh = mrt_conv2d_out_size(t->shape[h_dim], p->kernel_h, p->stride_h, p->pad_h, 1);
    int64_t ow = mrt_conv2d_out_size(t->shape[h_dim + 1], p->kernel_w, p->stride_w, p->pad_w, 1);
    if (oh < 1 || ow < 1)
        return mrt_fail(MRT_EINVAL, "%s: '%s' %s is too small for kernel %dx%d with padding "
                        "%dx%d", fn, name, mrt_tensor_shape_str(t, ts, sizeof ts), p->kernel_h,
                        p->kernel_w, p->pad_h, p->pad_w);
    for (int i = 0; i < 4; i++)
        y_shape[i] = t->shape[i];
    y_shape[h_dim] = oh;
    y_shape[h_dim + 1] = ow;
    return MRT_OK;
}

/* Checks a tensor's device and exact shape. */
static int check_exact(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                       int ndim, const int64_t *shape)
{
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    return mrt_check_shape(fn, name, t, ndim, shape);
}

int mrt_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                          mrt_tensor *y)
{
    static const char fn[] = "mrt_maxpool2d_forward";
    int64_t y_shape[4];

    MRT_TRY(check_input(ctx, fn, "x", p, x, y_shape));
    MRT_TRY(check_exact(ctx, fn, "y", y, 4, y_shape));
    return MRT_DISPATCH(ctx, maxpool2d_forward, p, x, y);
}

int mrt_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                           const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx)
{
    static const char fn[] = "mrt_maxpool2d_backward";
    int64_t y_shape[4];

    MRT_TRY(check_input(ctx, fn, "x", p, x, y_shape));
    MRT_TRY(check_exact(ctx, fn, "y", y, 4, y_shape));
    MRT_TRY(check_exact(ctx, fn, "dy", dy, 4, y_shape));
    MRT_TRY(check_exact(ctx, fn, "dx", dx, 4, x->shape));
    return MRT_DISPATCH(ctx, maxpool2d_backward, p, dy, x, y, dx);
}

int mrt_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                          mrt_tensor *y)
{
    static const char fn[] = "mrt_avgpool2d_forward";
    int64_t y_shape[4];

    MRT_TRY(check_input(ctx, fn, "x", p, x, y_shape));
    MRT_TRY(check_exact(ctx, fn, "y", y, 4, y_shape));
    return MRT_DISPATCH(ctx, avgpool2d_forward, p, x, y);
}

int mrt_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                           mrt_tensor *dx)
{
    static const char fn[] = "mrt_avgpool2d_backward";
    int64_t y_shape[4];

    /* dx has the input's shape, so it fixes the geometry that dy must match. */
    MRT_TRY(check_input(ctx, fn, "dx", p, dx, y_shape));
    MRT_TRY(check_exact(ctx, fn, "dy", dy, 4, y_shape));
    return MRT_DISPATCH(ctx, avgpool2d_backward, p, dy, dx);
}

/*
 * Checks t[N,C,H,W], or a channels-last t[N,S,C], with positions to
 * average, and stores [N,C] in nc.
 */
static int check_global_input(mrt_ctx *ctx, const char *fn, const char *name,
                              const mrt_tensor *t, int64_t *nc)
{
    char ts[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    mrt_tensor_shape_str(t, ts, sizeof ts);
    if (t->ndim != 4 && t->ndim != 3)
        return mrt_fail(MRT_EINVAL, "%s: expected 4-D '%s' [N,C,H,W] or 3-D [N,S,C], got %d-D %s",
                        fn, name, (int)t->ndim, ts);
    if (t->ndim == 3 && !mrt_channels_last_supported(ctx))
        return mrt_fail(MRT_ENYI, "NYI: %s: channels-last '%s' %s on the %s backend", fn, name,
                        ts, ctx->backend->name);
    const int64_t positions = t->ndim == 4 ? t->shape[2] * t->shape[3] : t->shape[1];
    if (positions == 0)
        return mrt_fail(MRT_EINVAL, "%s: '%s' %s has no spatial positions to average", fn, name,
                        ts);
    nc[0] = t->shape[0];
    nc[1] = t->shape[t->ndim == 4 ? 1 : 2];
    return MRT_OK;
}

int mrt_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    static const char fn[] = "mrt_global_avgpool_forward";
    int64_t nc[2];

    MRT_TRY(check_global_input(ctx, fn, "x", x, nc));
    MRT_TRY(check_exact(ctx, fn, "y", y, 2, nc));
    return MRT_DISPATCH(ctx, global_avgpool_forward, x, y);
}

int mrt_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx)
{
    static const char fn[] = "mrt_global_avgpool_backward";
    int64_t nc[2];

    MRT_TRY(check_global_input(ctx, fn, "dx", dx, nc));
    MRT_TRY(check_exact(ctx, fn, "dy", dy, 2, nc));
    return MRT_DISPATCH(ctx, global_avgpool_backward, dy, dx);
}

/* ---- CPU implementation ------------------------------------------------- */

/* Input planes [H,W] and output planes [OH,OW] of a pooling call. */
typedef struct pool_shape {
    int64_t planes, h, w, oh, ow;
} pool_shape;

static pool_shape shape_of(const mrt_tensor *in, const mrt_tensor *out)
{
    pool_shape s = {in->shape[0] * in->shape[1], in->shape[2], in->shape[3], out->shape[2],
                    out->shape[3]};
    return s;
}

/* The window of one output position clipped to the input: rows [h0,h1), columns [w0,w1). */
typedef struct window {
    int64_t h0, h1, w0, w1;
    int64_t padded_size;    /* window size counting padding, for count_include_pad */
} window;

static window window_at(const pool_shape *s, const mrt_pool2d_params *p, int64_t oh, int64_t ow)
{
    window win;
    int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
    int64_t h1 = h0 + p->kernel_h, w1 = w0 + p->kernel_w;

    if (h1 > s->h + p->pad_h)
        h1 = s->h + p->pad_h;
    if (w1 > s->w + p->pad_w)
        w1 = s->w + p->pad_w;
    win.padded_size = (h1 - h0) * (w1 - w0);
    win.h0 = h0 > 0 ? h0 : 0;
    win.w0 = w0 > 0 ? w0 : 0;
    win.h1 = h1 < s->h ? h1 : s->h;
    win.w1 = w1 < s->w ? w1 : s->w;
    return win;
}

/* Returns the index of the window's maximum in the plane (PyTorch's rule) and stores it in *max. */
static int64_t window_argmax(const float *plane, int64_t width, const window *win, float *max)
{
    int64_t best = win->h0 * width + win->w0;
    float value = -INFINITY;

    for (int64_t ih = win->h0; ih < win->h1; ih++)
        for (int64_t iw = win->w0; iw < win->w1; iw++) {
            const float v = plane[ih * width + iw];
            if (v > value || isnan(v)) {
                value = v;
                best = ih * width + iw;
            }
        }
    *max = value;
    return best;
}

/*
 * Returns the index of the window's maximum y, which is the first element
 * equal to y when y is not NaN. A NaN maximum, or a y that no element
 * equals, falls back to the full search of window_argmax.
 */
static int64_t window_find(const float *plane, int64_t width, const window *win, float y)
{
    float max;

    for (int64_t ih = win->h0; ih < win->h1; ih++)
        for (int64_t iw = win->w0; iw < win->w1; iw++)
            if (plane[ih * width + iw] == y)
                return ih * width + iw;
    return window_argmax(plane, width, win, &max);
}

static int nchw_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                  const mrt_tensor *x, mrt_tensor *y)
{
    const pool_shape s = shape_of(x, y);

    (void)ctx;
#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < s.planes; plane++) {
        const float *in = x->data + plane * s.h * s.w;
        float *out = y->data + plane * s.oh * s.ow;
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                window_argmax(in, s.w, &win, &out[oh * s.ow + ow]);
            }
    }
    return MRT_OK;
}

static int nchw_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                   const mrt_tensor *dy, const mrt_tensor *x, const mrt_tensor *y,
                                   mrt_tensor *dx)
{
    const pool_shape s = shape_of(x, y);

    (void)ctx;
#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < s.planes; plane++) {
        const float *in = x->data + plane * s.h * s.w;
        const float *out = y->data + plane * s.oh * s.ow;
        const float *grad_out = dy->data + plane * s.oh * s.ow;
        float *grad_in = dx->data + plane * s.h * s.w;
        memset(grad_in, 0, (size_t)(s.h * s.w) * sizeof(float));
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                const int64_t q = oh * s.ow + ow;
                grad_in[window_find(in, s.w, &win, out[q])] += grad_out[q];
            }
    }
    return MRT_OK;
}

/* Returns the divisor of one window: its size with padding, or its input elements only. */
static double window_divisor(const mrt_pool2d_params *p, const window *win)
{
    if (p->count_include_pad)
        return (double)win->padded_size;
    return (double)((win->h1 - win->h0) * (win->w1 - win->w0));
}

static int nchw_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                  const mrt_tensor *x, mrt_tensor *y)
{
    const pool_shape s = shape_of(x, y);

    (void)ctx;
#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < s.planes; plane++) {
        const float *in = x->data + plane * s.h * s.w;
        float *out = y->data + plane * s.oh * s.ow;
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                double sum = 0.0;
                for (int64_t ih = win.h0; ih < win.h1; ih++)
                    for (int64_t iw = win.w0; iw < win.w1; iw++)
                        sum += in[ih * s.w + iw];
                out[oh * s.ow + ow] = (float)(sum / window_divisor(p, &win));
            }
    }
    return MRT_OK;
}

static int nchw_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                   const mrt_tensor *dy, mrt_tensor *dx)
{
    const pool_shape s = shape_of(dx, dy);

    (void)ctx;
#pragma omp parallel for if (dx->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < s.planes; plane++) {
        const float *grad_out = dy->data + plane * s.oh * s.ow;
        float *grad_in = dx->data + plane * s.h * s.w;
        memset(grad_in, 0, (size_t)(s.h * s.w) * sizeof(float));
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                const float g = (float)(grad_out[oh * s.ow + ow] / window_divisor(p, &win));
                for (int64_t ih = win.h0; ih < win.h1; ih++)
                    for (int64_t iw = win.w0; iw < win.w1; iw++)
                        grad_in[ih * s.w + iw] += g;
            }
    }
    return MRT_OK;
}

static int nchw_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    const int64_t planes = x->shape[0] * x->shape[1], size = x->shape[2] * x->shape[3];

    (void)ctx;
#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < planes; plane++) {
        const float *in = x->data + plane * size;
        double sum = 0.0;
        for (int64_t q = 0; q < size; q++)
            sum += in[q];
        y->data[plane] = (float)(sum / (double)size);
    }
    return MRT_OK;
}

static int nchw_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx)
{
    const int64_t planes = dx->shape[0] * dx->shape[1], size = dx->shape[2] * dx->shape[3];

    (void)ctx;
#pragma omp parallel for if (dx->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t plane = 0; plane < planes; plane++) {
        const float g = (float)(dy->data[plane] / (double)size);
        float *grad_in = dx->data + plane * size;
        for (int64_t q = 0; q < size; q++)
            grad_in[q] = g;
    }
    return MRT_OK;
}

/* ---- channels-last CPU implementation ------------------------------------- */

/* The plane geometry of channels-last x[N,H,W,C] and y[N,OH,OW,C]. */
static pool_shape shape_last(const mrt_tensor *in, const mrt_tensor *out)
{
    pool_shape s = {in->shape[0], in->shape[1], in->shape[2], out->shape[1], out->shape[2]};
    return s;
}

/* best := the window maximum so far, with PyTorch's rule: greater, or NaN. */
MRT_CPU_CLONES static void max_update(float *restrict best, const float *restrict v, int64_t c)
{
#pragma omp simd
    for (int64_t j = 0; j < c; j++)
        best[j] = v[j] > best[j] || v[j] != v[j] ? v[j] : best[j];
}

/* acc += v in double. */
MRT_CPU_CLONES static void sum_update(double *restrict acc, const float *restrict v, int64_t c)
{
#pragma omp simd
    for (int64_t j = 0; j < c; j++)
        acc[j] += v[j];
}

static int last_maxpool_forward(const mrt_pool2d_params *p, const mrt_tensor *x, mrt_tensor *y)
{
    const pool_shape s = shape_last(x, y);
    const int64_t c = x->shape[3];

#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < s.planes; n++) {
        const float *in = x->data + n * s.h * s.w * c;
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                float *out = y->data + ((n * s.oh + oh) * s.ow + ow) * c;
                for (int64_t j = 0; j < c; j++)
                    out[j] = -INFINITY;
                for (int64_t ih = win.h0; ih < win.h1; ih++)
                    for (int64_t iw = win.w0; iw < win.w1; iw++)
                        max_update(out, in + (ih * s.w + iw) * c, c);
            }
    }
    return MRT_OK;
}

/*
 * best[j] := e where window element e (values v, row-major window order)
 * is the one backward credits for channel j: the first equal to the
 * maximum y[j], or the last NaN when y[j] is NaN, as the forward rule picks
 * it. Written without branches so that it vectorizes over the channels.
 */
MRT_CPU_CLONES static void argmax_update(int32_t *restrict best, const float *restrict v,
                                         const float *restrict y, int32_t e, int64_t count)
{
#pragma omp simd
    for (int64_t j = 0; j < count; j++) {
        const float value = v[j], target = y[j];
        const int hit = target != target ? value != value : best[j] < 0 && value == target;
        best[j] = hit ? e : best[j];
    }
}

/*
 * For channels [c0, c0+count) of one window, stores in best[] the window
 * element that backward credits (see argmax_update); -1 means none (no
 * element equals y).
 */
static void window_argmax_last(const float *in, int64_t width, int64_t c, const window *win,
                               const float *y, int64_t c0, int64_t count, int32_t *best)
{
    int32_t e = 0;

    for (int64_t j = 0; j < count; j++)
        best[j] = -1;
    for (int64_t ih = win->h0; ih < win->h1; ih++)
        for (int64_t iw = win->w0; iw < win->w1; iw++, e++)
            argmax_update(best, in + (ih * width + iw) * c + c0, y + c0, e, count);
}

static int last_maxpool_backward(const mrt_pool2d_params *p, const mrt_tensor *dy,
                                 const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx)
{
    const pool_shape s = shape_last(x, y);
    const int64_t c = x->shape[3];

#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < s.planes; n++) {
        const float *in = x->data + n * s.h * s.w * c;
        float *grad_in = dx->data + n * s.h * s.w * c;
        memset(grad_in, 0, (size_t)(s.h * s.w * c) * sizeof(float));
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                const int64_t q = ((n * s.oh + oh) * s.ow + ow) * c;
                const int64_t win_w = win.w1 - win.w0;
                for (int64_t c0 = 0; c0 < c; c0 += CHANNEL_CHUNK) {
                    const int64_t count = c - c0 < CHANNEL_CHUNK ? c - c0 : CHANNEL_CHUNK;
                    int32_t best[CHANNEL_CHUNK];
                    window_argmax_last(in, s.w, c, &win, y->data + q, c0, count, best);
                    for (int64_t j = 0; j < count; j++) {
                        if (best[j] < 0)
                            continue;
                        const int64_t ih = win.h0 + best[j] / win_w, iw = win.w0 + best[j] % win_w;
                        grad_in[(ih * s.w + iw) * c + c0 + j] += dy->data[q + c0 + j];
                    }
                }
            }
    }
    return MRT_OK;
}

static int last_avgpool_forward(const mrt_pool2d_params *p, const mrt_tensor *x, mrt_tensor *y)
{
    const pool_shape s = shape_last(x, y);
    const int64_t c = x->shape[3];

#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < s.planes; n++) {
        const float *in = x->data + n * s.h * s.w * c;
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                const double divisor = window_divisor(p, &win);
                float *out = y->data + ((n * s.oh + oh) * s.ow + ow) * c;
                for (int64_t c0 = 0; c0 < c; c0 += CHANNEL_CHUNK) {
                    const int64_t count = c - c0 < CHANNEL_CHUNK ? c - c0 : CHANNEL_CHUNK;
                    double acc[CHANNEL_CHUNK] = {0};
                    for (int64_t ih = win.h0; ih < win.h1; ih++)
                        for (int64_t iw = win.w0; iw < win.w1; iw++)
                            sum_update(acc, in + (ih * s.w + iw) * c + c0, count);
                    for (int64_t j = 0; j < count; j++)
                        out[c0 + j] = (float)(acc[j] / divisor);
                }
            }
    }
    return MRT_OK;
}

static int last_avgpool_backward(const mrt_pool2d_params *p, const mrt_tensor *dy,
                                 mrt_tensor *dx)
{
    const pool_shape s = shape_last(dx, dy);
    const int64_t c = dx->shape[3];

#pragma omp parallel for if (dx->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < s.planes; n++) {
        float *grad_in = dx->data + n * s.h * s.w * c;
        memset(grad_in, 0, (size_t)(s.h * s.w * c) * sizeof(float));
        for (int64_t oh = 0; oh < s.oh; oh++)
            for (int64_t ow = 0; ow < s.ow; ow++) {
                const window win = window_at(&s, p, oh, ow);
                const double divisor = window_divisor(p, &win);
                const float *grad_out = dy->data + ((n * s.oh + oh) * s.ow + ow) * c;
                for (int64_t ih = win.h0; ih < win.h1; ih++)
                    for (int64_t iw = win.w0; iw < win.w1; iw++) {
                        float *g = grad_in + (ih * s.w + iw) * c;
                        for (int64_t j = 0; j < c; j++)
                            g[j] += (float)(grad_out[j] / divisor);
                    }
            }
    }
    return MRT_OK;
}

/* y[n,c] := mean over s of x[n,s,c]. */
static int last_global_forward(const mrt_tensor *x, mrt_tensor *y)
{
    const int64_t images = x->shape[0], positions = x->shape[1], c = x->shape[2];

#pragma omp parallel for if (x->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < images; n++) {
        const float *in = x->data + n * positions * c;
        for (int64_t c0 = 0; c0 < c; c0 += CHANNEL_CHUNK) {
            const int64_t count = c - c0 < CHANNEL_CHUNK ? c - c0 : CHANNEL_CHUNK;
            double acc[CHANNEL_CHUNK] = {0};
            for (int64_t q = 0; q < positions; q++)
                sum_update(acc, in + q * c + c0, count);
            for (int64_t j = 0; j < count; j++)
                y->data[n * c + c0 + j] = (float)(acc[j] / (double)positions);
        }
    }
    return MRT_OK;
}

static int last_global_backward(const mrt_tensor *dy, mrt_tensor *dx)
{
    const int64_t images = dx->shape[0], positions = dx->shape[1], c = dx->shape[2];

#pragma omp parallel for if (dx->numel > POOL_PARALLEL_MIN) schedule(static)
    for (int64_t n = 0; n < images; n++) {
        float g[CHANNEL_CHUNK];
        for (int64_t c0 = 0; c0 < c; c0 += CHANNEL_CHUNK) {
            const int64_t count = c - c0 < CHANNEL_CHUNK ? c - c0 : CHANNEL_CHUNK;
            for (int64_t j = 0; j < count; j++)
                g[j] = (float)(dy->data[n * c + c0 + j] / (double)positions);
            for (int64_t q = 0; q < positions; q++)
                memcpy(dx->data + (n * positions + q) * c + c0, g, (size_t)count * sizeof(float));
        }
    }
    return MRT_OK;
}

int mrt_cpu_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y)
{
    if (p->channels_last)
        return last_maxpool_forward(p, x, y);
    return nchw_maxpool2d_forward(ctx, p, x, y);
}

int mrt_cpu_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx)
{
    if (p->channels_last)
        return last_maxpool_backward(p, dy, x, y, dx);
    return nchw_maxpool2d_backward(ctx, p, dy, x, y, dx);
}

int mrt_cpu_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y)
{
    if (p->channels_last)
        return last_avgpool_forward(p, x, y);
    return nchw_avgpool2d_forward(ctx, p, x, y);
}

int mrt_cpu_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               mrt_tensor *dx)
{
    if (p->channels_last)
        return last_avgpool_backward(p, dy, dx);
    return nchw_avgpool2d_backward(ctx, p, dy, dx);
}

int mrt_cpu_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    if (x->ndim == 3)
        return last_global_forward(x, y);
    return nchw_global_avgpool_forward(ctx, x, y);
}

int mrt_cpu_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx)
{
    if (dx->ndim == 3)
        return last_global_backward(dy, dx);
    return nchw_global_avgpool_backward(ctx, dy, dx);
}
