/*
 * conv2d.c: 2-D convolution (cross-correlation, as PyTorch's Conv2d) with
 * stride, zero padding and dilation: argument checks, the output size, and
 * the CPU implementation for NCHW data. Grouped convolution is NYI.
 * Channels-last calls (p->channels_last = 1) go to oneDNN (dnnl_conv.c);
 * where oneDNN is missing or has no kernel, they transpose to NCHW, take
 * the path below and transpose back.
 *
 * The NCHW path lowers each image to a column matrix col[C*KH*KW, OH*OW]
 * (im2col) and multiplies the weights, viewed as [O, C*KH*KW], with it
 * through mrt_cpu_sgemm. The input gradient multiplies back and adds the
 * columns onto the image (col2im). A 1x1 convolution with stride 1 and no
 * padding uses the image itself as the column matrix. Column buffers come
 * from the context's scratch slots, so steady-state calls allocate nothing.
 *
 * Threads: OpenMP runs one image per thread and each sgemm runs on one
 * thread. A standalone C loop of im2col + cblas_sgemm measured the
 * alternatives on a shared 2-core AMD EPYC with OpenBLAS 0.3.21 (pthreads),
 * as the median of 21 forward passes over 128 images [16,28,28] with a 3x3
 * kernel and padding 1. With 16 output channels this way took 7-15 ms
 * against 18-35 ms for the images in sequence with a 2-thread sgemm each.
 * With 64 channels it took 16-30 ms against 27-48 ms. Batching 8 images
 * into one threaded sgemm was slower than both.
 */
#include <string.h>

#include <omp.h>
#ifndef MRT_HAVE_DNNL
#include <cblas.h>
#endif

#include "cpu.h"

int64_t mrt_conv2d_out_size(int64_t in, int32_t kernel, int32_t stride, int32_t pad,
                            int32_t dilation)
{
    if (in < 0 || kernel < 1 || stride < 1 || pad < 0 || dilation < 1)
        return -1;
    int64_t span = (int64_t)dilation * (kernel - 1) + 1;
    int64_t room = in + 2 * (int64_t)pad - span;
    if (room < 0)
        return -1;
    return room / stride + 1;
}

/* ---- argument checks ---------------------------------------------------- */

static int check_params(mrt_ctx *ctx, const char *fn, const mrt_conv2d_params *p)
{
    if (p == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing convolution parameters 'p'", fn);
    if (p->stride_h < 1 || p->stride_w < 1)
        return mrt_fail(MRT_EINVAL, "%s: stride %dx%d is invalid (expected 1 or more)", fn,
                        p->stride_h, p->stride_w);
    if (p->pad_h < 0 || p->pad_w < 0)
        return mrt_fail(MRT_EINVAL, "%s: padding %dx%d is invalid (expected 0 or more)", fn,
                        p->pad_h, p->pad_w);
    if (p->dilation_h < 1 || p->dilation_w < 1)
        return mrt_fail(MRT_EINVAL, "%s: dilation %dx%d is invalid (expected 1 or more)", fn,
                        p->dilation_h, p->dilation_w);
    if (p->groups != 1)
        return mrt_fail(MRT_ENYI, "NYI: %s: groups = %d (only 1 is implemented)", fn, p->groups);
    if (p->channels_last != 0 && p->channels_last != 1)
        return mrt_fail(MRT_EINVAL, "%s: channels_last is %d (expected 0 or 1)", fn,
                        p->channels_last);
    if (p->channels_last && !mrt_channels_last_supported(ctx))
        return mrt_fail(MRT_ENYI, "NYI: %s: channels-last operands on the %s backend", fn,
                        ctx->backend->name);
    return MRT_OK;
}

/* Sizes of x in NCHW order: x[N,C,H,W], or x[N,H,W,C] with channels last. */
static void input_dims(const mrt_conv2d_params *p, const mrt_tensor *x, int64_t *nchw)
{
    const int last = p->channels_last != 0;

    nchw[0] = x->shape[0];
    nchw[1] = x->shape[last ? 3 : 1];
    nchw[2] = x->shape[last ? 1 : 2];
    nchw[3] = x->shape[last ? 2 : 3];
}

/*
 * Checks p, x[N,C,H,W] (or [N,H,W,C]) and w[O,C,KH,KW] and stores the
 * output shape, [N,O,OH,OW] (or [N,OH,OW,O]), in y_shape.
 */
static int check_operands(mrt_ctx *ctx, const char *fn, const mrt_conv2d_params *p,
                          const mrt_tensor *x, const mrt_tensor *w, int64_t *y_shape)
{
    char xs[160], ws[160];
    int64_t in[4];

    MRT_TRY(check_params(ctx, fn, p));
    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, 4));
    MRT_TRY(mrt_check_tensor(ctx, fn, "w", w, 4));
    mrt_tensor_shape_str(x, xs, sizeof xs);
    mrt_tensor_shape_str(w, ws, sizeof ws);
    input_dims(p, x, in);
    if (w->shape[1] != in[1])
        return mrt_fail(MRT_EINVAL, "%s: 'w' %s expects %lld input channels but 'x' %s has %lld",
                        fn, ws, (long long)w->shape[1], xs, (long long)in[1]);
    if (w->shape[2] < 1 || w->shape[3] < 1 || w->shape[2] > INT32_MAX || w->shape[3] > INT32_MAX)
        return mrt_fail(MRT_EINVAL, "%s: 'w' %s has an invalid kernel size (expected 1 or more)",
                        fn, ws);
    int64_t oh = mrt_conv2d_out_size(in[2], (int32_t)w->shape[2], p->stride_h, p->pad_h,
                                     p->dilation_h);
    int64_t ow = mrt_conv2d_out_size(in[3], (int32_t)w->shape[3], p->stride_w, p->pad_w,
                                     p->dilation_w);
    if (oh < 1 || ow < 1)
        return mrt_fail(MRT_EINVAL, "%s: 'x' %s is too small for kernel %lldx%lld with padding "
                        "%dx%d and dilation %dx%d", fn, xs, (long long)w->shape[2],
                        (long long)w->shape[3], p->pad_h, p->pad_w, p->dilation_h, p->dilation_w);
    y_shape[0] = in[0];
    if (p->channels_last) {
        y_shape[1] = oh;
        y_shape[2] = ow;
        y_shape[3] = w->shape[0];
    } else {
        y_shape[1] = w->shape[0];
        y_shape[2] = oh;
        y_shape[3] = ow;
    }
    return MRT_OK;
}

/* Checks an optional tensor's device and exact shape. */
static int check_optional(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                          int ndim, const int64_t *shape)
{
    if (t == NULL)
        return MRT_OK;
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    return mrt_check_shape(fn, name, t, ndim, shape);
}

int mrt_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                       const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    static const char fn[] = "mrt_conv2d_forward";
    int64_t y_shape[4];

    MRT_TRY(check_operands(ctx, fn, p, x, w, y_shape));
    MRT_TRY(check_optional(ctx, fn, "b", b, 1, &y_shape[p->channels_last ? 3 : 1]));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, 4, y_shape));
    return MRT_DISPATCH(ctx, conv2d_forward, p, x, w, b, y);
}

int mrt_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                        const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                        mrt_tensor *dw, mrt_tensor *db, float beta)
{
    static const char fn[] = "mrt_conv2d_backward";
    int64_t y_shape[4];

    MRT_TRY(check_operands(ctx, fn, p, x, w, y_shape));
    MRT_TRY(mrt_check_tensor(ctx, fn, "dy", dy, -1));
    MRT_TRY(mrt_check_shape(fn, "dy", dy, 4, y_shape));
    MRT_TRY(check_optional(ctx, fn, "dx", dx, 4, x->shape));
    MRT_TRY(check_optional(ctx, fn, "dw", dw, 4, w->shape));
    MRT_TRY(check_optional(ctx, fn, "db", db, 1, &y_shape[p->channels_last ? 3 : 1]));
    return MRT_DISPATCH(ctx, conv2d_backward, p, dy, x, w, dx, dw, db, beta);
}

/* ---- CPU implementation ------------------------------------------------- */

typedef struct conv_shape {
    int64_t n, c, h, w;     /* input x[N,C,H,W] */
    int64_t o, kh, kw;      /* weights w[O,C,KH,KW] */
    int64_t oh, ow;         /* output y[N,O,OH,OW] */
    int64_t ckk, ohw;       /* rows and columns of the column matrix */
} conv_shape;

static conv_shape shape_of(const mrt_conv2d_params *p, const mrt_tensor *x, const mrt_tensor *w)
{
    conv_shape s;

    s.n = x->shape[0];
    s.c = x->shape[1];
    s.h = x->shape[2];
    s.w = x->shape[3];
    s.o = w->shape[0];
    s.kh = w->shape[2];
    s.kw = w->shape[3];
    s.oh = mrt_conv2d_out_size(s.h, (int32_t)s.kh, p->stride_h, p->pad_h, p->dilation_h);
    s.ow = mrt_conv2d_out_size(s.w, (int32_t)s.kw, p->stride_w, p->pad_w, p->dilation_w);
    s.ckk = s.c * s.kh * s.kw;
    s.ohw = s.oh * s.ow;
    return s;
}

/* Returns 1 when the image [C,H*W] already is the column matrix. */
static int is_pointwise(const conv_shape *s, const mrt_conv2d_params *p)
{
    return s->kh == 1 && s->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
           p->pad_w == 0;
}

/* A BLAS leading dimension: at least 1 even for empty matrices, as BLAS requires. */
static int64_t leading_dim(int64_t n)
{
    return n > 0 ? n : 1;
}

/*
 * Sets [*lo, *hi) to the output positions o whose input o*stride + offset
 * lies inside [0, in). The other output positions read padding.
 */
static void valid_range(int64_t out, int64_t in, int64_t stride, int64_t offset, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = offset < 0 ? (-offset + stride - 1) / stride : 0;
    int64_t b = in - offset > 0 ? (in - offset + stride - 1) / stride : 0;

    *lo = a < out ? a : out;
    *hi = b < out ? b : out;
    if (*hi < *lo)
        *hi = *lo;
}

/* Fills one column-matrix row: kernel tap (i, j) of one input plane. */
static void im2col_row(const conv_shape *s, const mrt_conv2d_params *p, const float *plane,
                       int64_t i, int64_t j, float *row)
{
    int64_t off_h = i * p->dilation_h - p->pad_h, off_w = j * p->dilation_w - p->pad_w;
    int64_t oh0, oh1, ow0, ow1;

    valid_range(s->oh, s->h, p->stride_h, off_h, &oh0, &oh1);
    valid_range(s->ow, s->w, p->stride_w, off_w, &ow0, &ow1);
    memset(row, 0, (size_t)(oh0 * s->ow) * sizeof(float));
    for (int64_t oh = oh0; oh < oh1; oh++) {
        const float *in = plane + (oh * p->stride_h + off_h) * s->w;
        float *out = row + oh * s->ow;
        for (int64_t ow = 0; ow < ow0; ow++)
            out[ow] = 0.0f;
        for (int64_t ow = ow0; ow < ow1; ow++)
            out[ow] = in[ow * p->stride_w + off_w];
        for (int64_t ow = ow1; ow < s->ow; ow++)
            out[ow] = 0.0f;
    }
    memset(row + oh1 * s->ow, 0, (size_t)((s->oh - oh1) * s->ow) * sizeof(float));
}

/* Lowers one image x[C,H,W] to col[C*KH*KW, OH*OW], with 0 at padded positions. */
static void im2col(const conv_shape *s, const mrt_conv2d_params *p, const float *x, float *col)
{
    for (int64_t c = 0; c < s->c; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++)
                im2col_row(s, p, x + c * s->h * s->w, i, j,
                           col + ((c * s->kh + i) * s->kw + j) * s->ohw);
}

/* Adds one column-matrix row back onto its input plane (inverse of im2col_row). */
static void col2im_row(const conv_shape *s, const mrt_conv2d_params *p, const float *row,
                       int64_t i, int64_t j, float *plane)
{
    int64_t off_h = i * p->dilation_h - p->pad_h, off_w = j * p->dilation_w - p->pad_w;
    int64_t oh0, oh1, ow0, ow1;

    valid_range(s->oh, s->h, p->stride_h, off_h, &oh0, &oh1);
    valid_range(s->ow, s->w, p->stride_w, off_w, &ow0, &ow1);
    for (int64_t oh = oh0; oh < oh1; oh++) {
        float *out = plane + (oh * p->stride_h + off_h) * s->w;
        const float *in = row + oh * s->ow;
        for (int64_t ow = ow0; ow < ow1; ow++)
            out[ow * p->stride_w + off_w] += in[ow];
    }
}

/* Sets dx[C,H,W] to the sum of the columns dcol[C*KH*KW, OH*OW] over their positions. */
static void col2im(const conv_shape *s, const mrt_conv2d_params *p, const float *dcol, float *dx)
{
    memset(dx, 0, (size_t)(s->c * s->h * s->w) * sizeof(float));
    for (int64_t c = 0; c < s->c; c++)
        for (int64_t i = 0; i < s->kh; i++)
            for (int64_t j = 0; j < s->kw; j++)
                col2im_row(s, p, dcol + ((c * s->kh + i) * s->kw + j) * s->ohw, i, j,
                           dx + c * s->h * s->w);
}

/* Returns the OpenMP thread count for a loop over n images. */
static int image_threads(int64_t n)
{
    int threads = omp_get_max_threads();

    if (n < threads)
        threads = n > 1 ? (int)n : 1;
    return threads;
}

/*
 * Makes OpenBLAS single-threaded while several OpenMP threads call it,
 * because the pthreads build of OpenBLAS would otherwise start its own
 * threads inside each of them. Returns the thread count to restore.
 * oneDNN's sgemm needs nothing of the kind: inside a parallel region it
 * runs on the calling thread.
 * NOTE: the OpenBLAS thread count is process-wide, so two contexts running
 * ops concurrently on different threads see each other's setting.
 */
static int blas_serial_begin(int omp_threads)
{
#ifdef MRT_HAVE_DNNL
    (void)omp_threads;
    return 1;
#else
    int previous = openblas_get_num_threads();

    if (omp_threads > 1 && previous > 1)
        openblas_set_num_threads(1);
    return previous;
#endif
}

static void blas_serial_end(int previous)
{
#ifdef MRT_HAVE_DNNL
    (void)previous;
#else
    if (openblas_get_num_threads() != previous)
        openblas_set_num_threads(previous);
#endif
}

/* y_n[O,OH*OW] := w[O,CKK] col[CKK,OH*OW] (+ b[O] on every column). */
static int forward_image(const conv_shape *s, const float *w, const float *b, const float *col,
                         float *y)
{
    float beta = 0.0f;

    if (b != NULL) {
        for (int64_t o = 0; o < s->o; o++)
            for (int64_t q = 0; q < s->ohw; q++)
                y[o * s->ohw + q] = b[o];
        beta = 1.0f;
    }
    return mrt_cpu_sgemm(0, 0, s->o, s->ohw, s->ckk, 1.0f, w, leading_dim(s->ckk), col,
                         leading_dim(s->ohw), beta, y, leading_dim(s->ohw));
}

/*
 * Turns the first failed status of a parallel loop into the calling
 * thread's error: the matrix product set its message on a worker thread.
 */
static int loop_status(const char *fn, int status)
{
    if (status == MRT_OK)
        return MRT_OK;
    return mrt_fail(status, "%s: a matrix product failed (status %d), most likely out of memory",
                    fn, status);
}

static int nchw_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                        const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    const conv_shape s = shape_of(p, x, w);
    const int pointwise = is_pointwise(&s, p);
    const int threads = image_threads(s.n);
    float *col = NULL;

    if (y->numel == 0)
        return MRT_OK;
    if (!pointwise) {
        col = mrt_cpu_scratch(ctx, 0, threads * s.ckk * s.ohw + 1);
        if (col == NULL)
            return MRT_ENOMEM;
    }
    const int blas_threads = blas_serial_begin(threads);
    int failed = MRT_OK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < s.n; n++) {
        const float *xn = x->data + n * s.c * s.h * s.w;
        const float *cols = xn;
        if (!pointwise) {
            float *own = col + omp_get_thread_num() * s.ckk * s.ohw;
            im2col(&s, p, xn, own);
            cols = own;
        }
        int status = forward_image(&s, w->data, b != NULL ? b->data : NULL, cols,
                                   y->data + n * s.o * s.ohw);
        if (status != MRT_OK) {
#pragma omp atomic write
            failed = status;
        }
    }
    blas_serial_end(blas_threads);
    return loop_status("mrt_conv2d_forward", failed);
}

/* db[o] := beta*db[o] + sum of dy[:,o,:,:], accumulated in double. */
static void bias_grad(const conv_shape *s, const float *dy, float beta, float *db)
{
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < s->o; o++) {
        double sum = 0.0;
        for (int64_t n = 0; n < s->n; n++) {
            const float *plane = dy + (n * s->o + o) * s->ohw;
            for (int64_t q = 0; q < s->ohw; q++)
                sum += plane[q];
        }
        db[o] = beta == 0.0f ? (float)sum : (float)(beta * (double)db[o] + sum);
    }
}

/* Buffers of one backward call: per-thread columns and per-thread dw partial sums. */
typedef struct backward_work {
    float *col;         /* [threads][CKK*OH*OW] im2col of x, for dw */
    float *dcol;        /* [threads][CKK*OH*OW] column gradient, for dx */
    float *dw_part;     /* [threads][O*CKK] */
} backward_work;

/* Adds image n's weight gradient to dw_part and writes its input gradient to dx. */
static int backward_image(const conv_shape *s, const mrt_conv2d_params *p, int64_t n,
                          const float *dy, const float *x, const float *w, float *dx,
                          const backward_work *work, int thread)
{
    const int pointwise = is_pointwise(s, p);
    const float *dyn = dy + n * s->o * s->ohw;
    const float *xn = x + n * s->c * s->h * s->w;
    const int64_t col_size = s->ckk * s->ohw;

    if (work->dw_part != NULL) {
        const float *cols = xn;
        if (!pointwise) {
            im2col(s, p, xn, work->col + thread * col_size);
            cols = work->col + thread * col_size;
        }
        /* dw_part[O,CKK] += dy_n[O,OHW] cols[CKK,OHW]^T */
        MRT_TRY(mrt_cpu_sgemm(0, 1, s->o, s->ckk, s->ohw, 1.0f, dyn, leading_dim(s->ohw), cols,
                              leading_dim(s->ohw), 1.0f, work->dw_part + thread * s->o * s->ckk,
                              leading_dim(s->ckk)));
    }
    if (dx != NULL) {
        float *dxn = dx + n * s->c * s->h * s->w;
        float *dcol = pointwise ? dxn : work->dcol + thread * col_size;
        /* dcol[CKK,OHW] := w[O,CKK]^T dy_n[O,OHW] */
        MRT_TRY(mrt_cpu_sgemm(1, 0, s->ckk, s->ohw, s->o, 1.0f, w, leading_dim(s->ckk), dyn,
                              leading_dim(s->ohw), 0.0f, dcol, leading_dim(s->ohw)));
        if (!pointwise)
            col2im(s, p, dcol, dxn);
    }
    return MRT_OK;
}

/* dw := beta*dw + the sum of the per-thread partials, in thread order. */
static void reduce_dw(const conv_shape *s, const float *dw_part, int threads, float beta,
                      float *dw)
{
    const int64_t count = s->o * s->ckk;

#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        float sum = 0.0f;
        for (int t = 0; t < threads; t++)
            sum += dw_part[t * count + i];
        dw[i] = beta == 0.0f ? sum : beta * dw[i] + sum;
    }
}

/* Gets the scratch buffers that backward needs, or returns MRT_ENOMEM. */
static int backward_scratch(mrt_ctx *ctx, const conv_shape *s, int pointwise, int threads,
                            int want_dx, int want_dw, backward_work *work)
{
    const int64_t col_count = threads * s->ckk * s->ohw + 1;

    memset(work, 0, sizeof *work);
    if (want_dw && !pointwise && (work->col = mrt_cpu_scratch(ctx, 0, col_count)) == NULL)
        return MRT_ENOMEM;
    if (want_dx && !pointwise && (work->dcol = mrt_cpu_scratch(ctx, 1, col_count)) == NULL)
        return MRT_ENOMEM;
    if (want_dw) {
        const int64_t part_count = threads * s->o * s->ckk + 1;
        if ((work->dw_part = mrt_cpu_scratch(ctx, 2, part_count)) == NULL)
            return MRT_ENOMEM;
        memset(work->dw_part, 0, (size_t)part_count * sizeof(float));
    }
    return MRT_OK;
}

static int nchw_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                         const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                         mrt_tensor *dw, mrt_tensor *db, float beta)
{
    const conv_shape s = shape_of(p, x, w);
    const int threads = image_threads(s.n);
    backward_work work;

    if (db != NULL)
        bias_grad(&s, dy->data, beta, db->data);
    if (dx == NULL && dw == NULL)
        return MRT_OK;
    MRT_TRY(backward_scratch(ctx, &s, is_pointwise(&s, p), threads, dx != NULL, dw != NULL,
                             &work));
    float *dx_data = dx != NULL ? dx->data : NULL;
    const int blas_threads = blas_serial_begin(threads);
    int failed = MRT_OK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < s.n; n++) {
        int status = backward_image(&s, p, n, dy->data, x->data, w->data, dx_data, &work,
                                    omp_get_thread_num());
        if (status != MRT_OK) {
#pragma omp atomic write
            failed = status;
        }
    }
    blas_serial_end(blas_threads);
    MRT_TRY(loop_status("mrt_conv2d_backward", failed));
    if (dw != NULL)
        reduce_dw(&s, work.dw_part, threads, beta, dw->data);
    return MRT_OK;
}

/* ---- channels-last dispatch ------------------------------------------------- */

/* A descriptor for n floats at data with the NCHW sizes of a channels-last tensor t. */
static mrt_tensor nchw_view(const mrt_tensor *t, float *data)
{
    mrt_tensor v = *t;

    v.data = data;
    v.shape[1] = t->shape[3];
    v.shape[2] = t->shape[1];
    v.shape[3] = t->shape[2];
    return v;
}

/* The fallback for channels-last operands: NCHW copies in scratch, the NCHW path, and back. */
static int transposed_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                              const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    float *buffer = mrt_cpu_scratch(ctx, MRT_CPU_LAYOUT_SLOT, x->numel + y->numel + 1);
    mrt_conv2d_params q = *p;

    if (buffer == NULL)
        return MRT_ENOMEM;
    q.channels_last = 0;
    mrt_tensor xt = nchw_view(x, buffer), yt = nchw_view(y, buffer + x->numel);
    MRT_TRY(mrt_cpu_to_channels_first(ctx, x, &xt));
    MRT_TRY(nchw_forward(ctx, &q, &xt, w, b, &yt));
    return mrt_cpu_to_channels_last(ctx, &yt, y);
}

static int transposed_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                               const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                               mrt_tensor *dw, float beta)
{
    const int64_t count = 2 * x->numel + dy->numel + 1;
    float *buffer = mrt_cpu_scratch(ctx, MRT_CPU_LAYOUT_SLOT, count);
    mrt_conv2d_params q = *p;

    if (buffer == NULL)
        return MRT_ENOMEM;
    q.channels_last = 0;
    mrt_tensor xt = nchw_view(x, buffer), dyt = nchw_view(dy, buffer + x->numel);
    mrt_tensor dxt = nchw_view(x, buffer + x->numel + dy->numel);
    MRT_TRY(mrt_cpu_to_channels_first(ctx, x, &xt));
    MRT_TRY(mrt_cpu_to_channels_first(ctx, dy, &dyt));
    MRT_TRY(nchw_backward(ctx, &q, &dyt, &xt, w, dx != NULL ? &dxt : NULL, dw, NULL, beta));
    return dx != NULL ? mrt_cpu_to_channels_last(ctx, &dxt, dx) : MRT_OK;
}

int mrt_cpu_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                           const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    if (y->numel == 0)
        return MRT_OK;
    if (!p->channels_last)
        return nchw_forward(ctx, p, x, w, b, y);
    int status = mrt_cpu_dnnl_conv2d_forward(ctx, p, x, w, b, y);
    if (status != MRT_ENYI)
        return status;
    mrt_error_clear();
    return transposed_forward(ctx, p, x, w, b, y);
}

int mrt_cpu_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                            const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                            mrt_tensor *dw, mrt_tensor *db, float beta)
{
    if (!p->channels_last)
        return nchw_backward(ctx, p, dy, x, w, dx, dw, db, beta);
    /* dy is [N*OH*OW, O] row-major, so the bias gradient sums its columns. */
    if (db != NULL)
        MRT_TRY(mrt_cpu_column_sums(ctx, dy->data, dy->numel / dy->shape[3], dy->shape[3], beta,
                                    db->data));
    if (dx == NULL && dw == NULL)
        return MRT_OK;
    /* An empty batch only scales dw by beta, which the NCHW path does. */
    if (dy->numel == 0)
        return transposed_backward(ctx, p, dy, x, w, dx, dw, beta);
    int status = mrt_cpu_dnnl_conv2d_backward(ctx, p, dy, x, w, dx, dw, beta);
    if (status != MRT_ENYI)
        return status;
    mrt_error_clear();
    return transposed_backward(ctx, p, dy, x, w, dx, dw, beta);
}
