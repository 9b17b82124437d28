/*
 * pool.c: 2-D max and average pooling and global average pooling, as
 * PyTorch's MaxPool2d, AvgPool2d and AdaptiveAvgPool2d(1): argument checks
 * and the CPU implementation. Windows are not dilated; ceil_mode = 1 is NYI.
 *
 * Max pooling treats padding as -inf and gives a tie to the first index in
 * row-major window order. A NaN in the window wins, as in PyTorch's CPU
 * kernel. Its backward stores no indices, because it finds each window's
 * maximum again from x and y. The CPU path runs one [H,W] plane per OpenMP
 * thread and sums averages in double.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* Loops over fewer elements than this run on one thread. */
#define POOL_PARALLEL_MIN 32768

/* ---- argument checks ---------------------------------------------------- */

static int check_params(const char *fn, const mrt_pool2d_params *p)
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
    return MRT_OK;
}

/* Checks p and the input-shaped tensor t[N,C,H,W] and stores the output shape [N,C,OH,OW]. */
static int check_input(mrt_ctx *ctx, const char *fn, const char *name,
                       const mrt_pool2d_params *p, const mrt_tensor *t, int64_t *y_shape)
{
    char ts[160];

    MRT_TRY(check_params(fn, p));
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, 4));
    int64_t oh = mrt_conv2d_out_size(t->shape[2], p->kernel_h, p->stride_h, p->pad_h, 1);
    int64_t ow = mrt_conv2d_out_size(t->shape[3], p->kernel_w, p->stride_w, p->pad_w, 1);
    if (oh < 1 || ow < 1)
        return mrt_fail(MRT_EINVAL, "%s: '%s' %s is too small for kernel %dx%d with padding "
                        "%dx%d", fn, name, mrt_tensor_shape_str(t, ts, sizeof ts), p->kernel_h,
                        p->kernel_w, p->pad_h, p->pad_w);
    y_shape[0] = t->shape[0];
    y_shape[1] = t->shape[1];
    y_shape[2] = oh;
    y_shape[3] = ow;
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

/* Checks t[N,C,H,W] with H*W > 0 and stores [N,C] in nc. */
static int check_global_input(mrt_ctx *ctx, const char *fn, const char *name,
                              const mrt_tensor *t, int64_t *nc)
{
    char ts[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, 4));
    if (t->shape[2] * t->shape[3] == 0)
        return mrt_fail(MRT_EINVAL, "%s: '%s' %s has no spatial positions to average", fn, name,
                        mrt_tensor_shape_str(t, ts, sizeof ts));
    nc[0] = t->shape[0];
    nc[1] = t->shape[1];
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

int mrt_cpu_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y)
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

int mrt_cpu_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx)
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

int mrt_cpu_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y)
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

int mrt_cpu_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               mrt_tensor *dx)
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

int mrt_cpu_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
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

int mrt_cpu_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx)
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
