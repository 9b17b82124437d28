/*
 * cuda_ops.c: the backend table's entries that run the kernels under
 * kernels/: elementwise ops and reductions on tensors, ReLU, max and
 * average pooling, global average pooling and softmax cross-entropy.
 *
 * The public wrappers have checked devices and shapes when these run. Each
 * entry reads the geometry from the tensors, calls a launcher on the
 * context's stream and, where the API returns a number to the host
 * (sums, the loss), waits for it.
 */
#include <string.h>

#include "cuda_common.h"

static cudaStream_t stream_of(mrt_ctx *ctx)
{
    return ((mrt_cuda_impl *)ctx->impl)->stream;
}

/* ---- tensors ------------------------------------------------------------ */

static int cuda_fill(mrt_ctx *ctx, mrt_tensor *t, float value)
{
    return mrt_cuda_fill(stream_of(ctx), t->data, t->numel, value);
}

static int cuda_axpby(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y)
{
    return mrt_cuda_axpby(stream_of(ctx), alpha, x->data, beta, y->data, x->numel);
}

static int cuda_add(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y)
{
    return mrt_cuda_add(stream_of(ctx), a->data, b->data, y->data, a->numel);
}

static int cuda_mul(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y)
{
    return mrt_cuda_mul(stream_of(ctx), x->data, mask->data, y->data, x->numel);
}

/* Sum (squares = 0) or sum of squares of x, returned to the host. */
static int reduce_sum(mrt_ctx *ctx, const mrt_tensor *x, int squares, double *out)
{
    mrt_cuda_impl *impl = ctx->impl;
    double *partials = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_REDUCE,
                                        (MRT_CUDA_REDUCE_BLOCKS + 1) * sizeof(double));
    double *result = partials + MRT_CUDA_REDUCE_BLOCKS;

    if (partials == NULL)
        return MRT_ENOMEM;
    MRT_TRY(mrt_cuda_sum(impl->stream, x->data, x->numel, squares, partials, result));
    MRT_TRY(mrt_cuda_read_back(ctx, result, sizeof *result));
    memcpy(out, impl->host, sizeof *out);
    return MRT_OK;
}

static int cuda_sum(mrt_ctx *ctx, const mrt_tensor *x, double *sum)
{
    return reduce_sum(ctx, x, 0, sum);
}

static int cuda_sumsq(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq)
{
    return reduce_sum(ctx, x, 1, sumsq);
}

static int cuda_nonfinite(mrt_ctx *ctx, const mrt_tensor *x, int *bad)
{
    mrt_cuda_impl *impl = ctx->impl;
    int32_t *flag = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_REDUCE, sizeof *flag);
    int32_t host_flag;

    if (flag == NULL)
        return MRT_ENOMEM;
    MRT_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof *flag, impl->stream));
    MRT_TRY(mrt_cuda_nonfinite(impl->stream, x->data, x->numel, flag));
    MRT_TRY(mrt_cuda_read_back(ctx, flag, sizeof *flag));
    memcpy(&host_flag, impl->host, sizeof host_flag);
    *bad = host_flag != 0;
    return MRT_OK;
}

void mrt_cuda_register_tensor_ops(mrt_backend *table)
{
    table->fill = cuda_fill;
    table->axpby = cuda_axpby;
    table->add = cuda_add;
    table->mul = cuda_mul;
    table->sum = cuda_sum;
    table->sumsq = cuda_sumsq;
    table->nonfinite = cuda_nonfinite;
}

/* ---- activations and pooling -------------------------------------------- */

static int cuda_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    return mrt_cuda_relu_forward(stream_of(ctx), x->data, y->data, x->numel);
}

static int cuda_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y,
                              mrt_tensor *dx)
{
    return mrt_cuda_relu_backward(stream_of(ctx), dy->data, y->data, dx->data, dy->numel);
}

/* Pooling geometry from input x[N,C,H,W], output y[N,C,OH,OW] and the parameters. */
static mrt_cuda_pool_shape pool_shape(const mrt_pool2d_params *p, const mrt_tensor *x,
                                      const mrt_tensor *y)
{
    mrt_cuda_pool_shape s;

    memset(&s, 0, sizeof s);
    s.n = x->shape[0];
    s.c = x->shape[1];
    s.h = x->shape[2];
    s.w = x->shape[3];
    s.oh = y->shape[2];
    s.ow = y->shape[3];
    s.kernel_h = p->kernel_h;
    s.kernel_w = p->kernel_w;
    s.stride_h = p->stride_h;
    s.stride_w = p->stride_w;
    s.pad_h = p->pad_h;
    s.pad_w = p->pad_w;
    s.count_include_pad = p->count_include_pad != 0;
    return s;
}

static int cuda_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                                  mrt_tensor *y)
{
    mrt_cuda_pool_shape s = pool_shape(p, x, y);
    return mrt_cuda_maxpool2d_forward(stream_of(ctx), &s, x->data, y->data);
}

static int cuda_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                   const mrt_tensor *dy, const mrt_tensor *x, const mrt_tensor *y,
                                   mrt_tensor *dx)
{
    mrt_cuda_pool_shape s = pool_shape(p, x, dy);
    return mrt_cuda_maxpool2d_backward(stream_of(ctx), &s, dy->data, x->data, y->data, dx->data);
}

static int cuda_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                                  mrt_tensor *y)
{
    mrt_cuda_pool_shape s = pool_shape(p, x, y);
    return mrt_cuda_avgpool2d_forward(stream_of(ctx), &s, x->data, y->data);
}

static int cuda_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p,
                                   const mrt_tensor *dy, mrt_tensor *dx)
{
    mrt_cuda_pool_shape s = pool_shape(p, dx, dy);
    return mrt_cuda_avgpool2d_backward(stream_of(ctx), &s, dy->data, dx->data);
}

static int cuda_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    return mrt_cuda_global_avgpool_forward(stream_of(ctx), x->data, x->shape[0] * x->shape[1],
                                           x->shape[2] * x->shape[3], y->data);
}

static int cuda_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx)
{
    return mrt_cuda_global_avgpool_backward(stream_of(ctx), dy->data,
                                            dx->shape[0] * dx->shape[1],
                                            dx->shape[2] * dx->shape[3], dx->data);
}

/* ---- softmax cross-entropy ---------------------------------------------- */

/* Scratch of the loss: the result struct, then row_loss[N] doubles, then row_state[N]. */
#define XENT_RESULT_BYTES 64

_Static_assert(sizeof(mrt_cuda_xent_result) <= XENT_RESULT_BYTES, "xent result outgrew its slot");

/* Fails on a bad label that a kernel found, with the CPU backend's message. */
static int label_error(const char *fn, const mrt_cuda_xent_result *r, int64_t classes)
{
    return mrt_fail(MRT_EINVAL, "%s: label %d in row %lld is out of range (expected 0 to %lld)",
                    fn, (int)r->bad_label, (long long)r->bad_row, (long long)(classes - 1));
}

static int cuda_xent_forward(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                             mrt_tensor *probs, double *loss, int64_t *correct)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t rows = logits->shape[0], classes = logits->shape[1];
    const size_t bytes = XENT_RESULT_BYTES + (size_t)rows * (sizeof(double) + sizeof(int32_t));
    char *scratch = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_XENT, bytes);
    mrt_cuda_xent_result result;

    if (scratch == NULL)
        return MRT_ENOMEM;
    mrt_cuda_xent_result *device_result = (mrt_cuda_xent_result *)scratch;
    double *row_loss = (double *)(scratch + XENT_RESULT_BYTES);
    int32_t *row_state = (int32_t *)(row_loss + rows);
    MRT_TRY(mrt_cuda_xent_forward(impl->stream, logits->data, labels, rows, classes, probs->data,
                                  row_loss, row_state, device_result));
    MRT_TRY(mrt_cuda_read_back(ctx, device_result, sizeof result));
    memcpy(&result, impl->host, sizeof result);
    if (result.bad_row >= 0)
        return label_error("mrt_xent_forward", &result, classes);
    if (loss != NULL)
        *loss = result.loss;
    if (correct != NULL)
        *correct = result.correct;
    return MRT_OK;
}

/*
 * The labels are checked again, as the CPU backend does: that costs one
 * small read-back, so the host waits for the queue here.
 */
static int cuda_xent_backward(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels,
                              float scale, mrt_tensor *dlogits)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t rows = probs->shape[0], classes = probs->shape[1];
    mrt_cuda_xent_result *device_result =
        mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_XENT, XENT_RESULT_BYTES);
    mrt_cuda_xent_result result;

    if (device_result == NULL)
        return MRT_ENOMEM;
    MRT_TRY(mrt_cuda_check_labels(impl->stream, labels, rows, classes, device_result));
    MRT_TRY(mrt_cuda_read_back(ctx, device_result, sizeof result));
    memcpy(&result, impl->host, sizeof result);
    if (result.bad_row >= 0)
        return label_error("mrt_xent_backward", &result, classes);
    return mrt_cuda_xent_backward(impl->stream, probs->data, labels, rows, classes, scale,
                                  dlogits->data);
}

void mrt_cuda_register_layer_ops(mrt_backend *table)
{
    table->relu_forward = cuda_relu_forward;
    table->relu_backward = cuda_relu_backward;
    table->maxpool2d_forward = cuda_maxpool2d_forward;
    table->maxpool2d_backward = cuda_maxpool2d_backward;
    table->avgpool2d_forward = cuda_avgpool2d_forward;
    table->avgpool2d_backward = cuda_avgpool2d_backward;
    table->global_avgpool_forward = cuda_global_avgpool_forward;
    table->global_avgpool_backward = cuda_global_avgpool_backward;
    table->xent_forward = cuda_xent_forward;
    table->xent_backward = cuda_xent_backward;
}
