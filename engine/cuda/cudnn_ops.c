/*
 * cudnn_ops.c: 2-D convolution and batch normalisation on cuDNN 9 (its
 * legacy descriptor API, which cuDNN 9 still ships alongside the graph API).
 *
 * Convolution: each context caches, per shape, the tensor, filter and
 * convolution descriptors and the algorithm of each direction. The first
 * call of a direction for a shape runs cudnnFind*, which times the
 * candidates on buffers of its own. When that finds nothing usable, the
 * heuristics of cudnnGet*_v7 list the candidates instead. The fastest one
 * that passes the context's switches is kept: with `deterministic` only
 * algorithms cuDNN reports as deterministic, with `allow_tf32` off only
 * CUDNN_FMA_MATH, so float32 products stay float32. The cache key includes
 * both switches. One workspace per context grows to the largest need.
 * The bias is added with cudnnAddTensor and its gradient is the
 * deterministic per-channel sum of kernels/elementwise.cu.
 *
 * Batch normalisation: CUDNN_BATCHNORM_SPATIAL over N,H,W per channel; a
 * 2-D input [N,C] is treated as [N,C,1,1]. cuDNN's forward training updates
 * the running statistics with the unbiased batch variance and saves the
 * batch mean and 1/sqrt(var + eps), which is mrt's contract.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.h"

/* N,C,H,W, O,KH,KW, strides, paddings, dilations, deterministic, allow_tf32 */
#define CONV_KEY_LEN 15

/* A chosen algorithm of one direction. */
typedef struct conv_algo {
    int found;
    int algo;                 /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
    cudnnMathType_t math;     /* math type to run it with */
    size_t bytes;             /* workspace it needs */
} conv_algo;

struct mrt_cuda_conv_entry {
    int key[CONV_KEY_LEN];
    cudnnTensorDescriptor_t x, y, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    conv_algo forward, backward_data, backward_filter;
};

/* One row of cuDNN's perf results; the three directions' structs share this layout. */
typedef struct conv_candidate {
    int algo;
    cudnnStatus_t status;
    size_t bytes;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
} conv_candidate;

enum conv_direction { FORWARD, BACKWARD_DATA, BACKWARD_FILTER };

static const char *const direction_names[] = {"forward", "backward-data", "backward-filter"};
static const char *const heuristic_calls[] = {"cudnnGetConvolutionForwardAlgorithm_v7",
                                              "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                                              "cudnnGetConvolutionBackwardFilterAlgorithm_v7"};

static const float one = 1.0f, zero = 0.0f;

/* ---- descriptor cache --------------------------------------------------- */

/* Fails with NYI when a size does not fit cuDNN's int arguments. */
static int check_int(const char *fn, const mrt_tensor *t, const char *name)
{
    char buf[160];

    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > INT_MAX)
            return mrt_fail(MRT_ENYI, "NYI: %s on cuda with '%s' %s: a size beyond 2^31-1", fn,
                            name, mrt_tensor_shape_str(t, buf, sizeof buf));
    return MRT_OK;
}

static void conv_key(const mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                     const mrt_tensor *w, int key[CONV_KEY_LEN])
{
    const int64_t dims[7] = {x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                             w->shape[0], w->shape[2], w->shape[3]};

    for (int i = 0; i < 7; i++)
        key[i] = (int)dims[i];
    key[7] = p->stride_h;
    key[8] = p->stride_w;
    key[9] = p->pad_h;
    key[10] = p->pad_w;
    key[11] = p->dilation_h;
    key[12] = p->dilation_w;
    key[13] = ctx->deterministic != 0;
    key[14] = ctx->allow_tf32 != 0;
}

static void entry_destroy(mrt_cuda_conv_entry *e)
{
    cudnnStatus_t s[5] = {CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS,
                          CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS};

    if (e->x != NULL)
        s[0] = cudnnDestroyTensorDescriptor(e->x);
    if (e->y != NULL)
        s[1] = cudnnDestroyTensorDescriptor(e->y);
    if (e->bias != NULL)
        s[2] = cudnnDestroyTensorDescriptor(e->bias);
    if (e->w != NULL)
        s[3] = cudnnDestroyFilterDescriptor(e->w);
    if (e->conv != NULL)
        s[4] = cudnnDestroyConvolutionDescriptor(e->conv);
    for (int i = 0; i < 5; i++)
        if (s[i] != CUDNN_STATUS_SUCCESS)
            mrt_log(MRT_LOG_WARN, "destroying a cuDNN descriptor failed: %s (status %d)",
                    cudnnGetErrorString(s[i]), (int)s[i]);
    memset(e, 0, sizeof *e);
}

/* Creates the descriptors of a new entry; y_shape is the output the wrapper checked. */
static int entry_create(const mrt_ctx *ctx, const mrt_conv2d_params *p, const int *key,
                        const int64_t *y_shape, mrt_cuda_conv_entry *e)
{
    const int n = key[0], c = key[1], h = key[2], w = key[3], o = key[4];
    int yn, yc, yh, yw;

    MRT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->x));
    MRT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c,
                                               h, w));
    MRT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&e->w));
    MRT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(e->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, o, c,
                                               key[5], key[6]));
    MRT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&e->conv));
    MRT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(e->conv, p->pad_h, p->pad_w, p->stride_h,
                                                    p->stride_w, p->dilation_h, p->dilation_w,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MRT_CUDNN_CHECK(cudnnSetConvolutionMathType(
        e->conv, ctx->allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    MRT_CUDNN_CHECK(
        cudnnGetConvolution2dForwardOutputDim(e->conv, e->x, e->w, &yn, &yc, &yh, &yw));
    if (yn != y_shape[0] || yc != y_shape[1] || yh != y_shape[2] || yw != y_shape[3])
        return mrt_fail(MRT_EINVAL, "mrt_conv2d: cuDNN computes output [%d,%d,%d,%d] where "
                        "mrt expects [%lld,%lld,%lld,%lld]", yn, yc, yh, yw,
                        (long long)y_shape[0], (long long)y_shape[1], (long long)y_shape[2],
                        (long long)y_shape[3]);
    MRT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->y));
    MRT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, yn, yc,
                                               yh, yw));
    MRT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->bias));
    MRT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                               o, 1, 1));
    return MRT_OK;
}

/* The cache entry for this shape and these switches, created on first use. */
static int conv_entry(mrt_ctx *ctx, const char *fn, const mrt_conv2d_params *p,
                      const mrt_tensor *x, const mrt_tensor *w, const mrt_tensor *y,
                      mrt_cuda_conv_entry **out)
{
    mrt_cuda_impl *impl = ctx->impl;
    int key[CONV_KEY_LEN];

    MRT_TRY(check_int(fn, x, "x"));
    MRT_TRY(check_int(fn, w, "w"));
    if (p->groups != 1)
        return mrt_fail(MRT_ENYI, "NYI: %s: groups = %d (only 1 is implemented)", fn, p->groups);
    conv_key(ctx, p, x, w, key);
    for (int i = 0; i < impl->conv_count; i++) {
        if (memcmp(impl->convs[i].key, key, sizeof key) == 0) {
            *out = &impl->convs[i];
            return MRT_OK;
        }
    }
    if (impl->conv_count == impl->conv_capacity) {
        int capacity = impl->conv_capacity > 0 ? 2 * impl->conv_capacity : 16;
        mrt_cuda_conv_entry *grown = realloc(impl->convs, (size_t)capacity * sizeof *grown);
        if (grown == NULL)
            return mrt_fail(MRT_ENOMEM, "%s: out of memory for the convolution cache", fn);
        impl->convs = grown;
        impl->conv_capacity = capacity;
    }
    mrt_cuda_conv_entry *e = &impl->convs[impl->conv_count];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, sizeof key);
    int status = entry_create(ctx, p, key, y->shape, e);
    if (status != MRT_OK) {
        entry_destroy(e);
        return status;
    }
    impl->conv_count++;
    *out = e;
    return MRT_OK;
}

void mrt_cuda_conv_cache_free(mrt_cuda_impl *impl)
{
    for (int i = 0; i < impl->conv_count; i++)
        entry_destroy(&impl->convs[i]);
    free(impl->convs);
    impl->convs = NULL;
    impl->conv_count = 0;
    impl->conv_capacity = 0;
}

/* ---- algorithm choice --------------------------------------------------- */

/* Grows the context's workspace to at least nbytes. */
static int ensure_workspace(mrt_cuda_impl *impl, size_t nbytes)
{
    if (nbytes <= impl->workspace_bytes && (nbytes == 0 || impl->workspace != NULL))
        return MRT_OK;
    mrt_cuda_free(impl->workspace);    /* stream order protects queued users */
    impl->workspace_bytes = 0;
    impl->workspace = mrt_cuda_alloc((int64_t)nbytes);
    if (impl->workspace == NULL)
        return MRT_ENOMEM;
    impl->workspace_bytes = nbytes;
    return MRT_OK;
}

/* 1 when a candidate's math type is allowed; strict = 0 also lets CUDNN_DEFAULT_MATH pass. */
static int math_allowed(const mrt_ctx *ctx, cudnnMathType_t math, int strict)
{
    if (ctx->allow_tf32)
        return 1;
    return math == CUDNN_FMA_MATH || (!strict && math == CUDNN_DEFAULT_MATH);
}

/*
 * Takes the first candidate (cuDNN orders them fastest first) that
 * succeeded, passes the switches and whose workspace can be allocated. A
 * candidate cuDNN labels CUDNN_DEFAULT_MATH is taken only when no
 * CUDNN_FMA_MATH one qualifies; without allow_tf32 it still runs under
 * CUDNN_FMA_MATH (see run_math).
 */
static int pick(mrt_ctx *ctx, const conv_candidate *c, int count, conv_algo *out)
{
    mrt_cuda_impl *impl = ctx->impl;

    for (int strict = 1; strict >= 0; strict--) {
        for (int i = 0; i < count; i++) {
            if (c[i].status != CUDNN_STATUS_SUCCESS)
                continue;
            if (ctx->deterministic && c[i].determinism != CUDNN_DETERMINISTIC)
                continue;
            if (!math_allowed(ctx, c[i].math, strict))
                continue;
            if (ensure_workspace(impl, c[i].bytes) != MRT_OK)
                continue;   /* too large now: try a leaner one */
            out->found = 1;
            out->algo = c[i].algo;
            out->math = c[i].math;
            out->bytes = c[i].bytes;
            return MRT_OK;
        }
    }
    return MRT_EDEVICE;
}

/* Copies cuDNN's perf results of any direction into candidates. */
#define COPY_CANDIDATES(perf, count, c)                                                            \
    for (int i_ = 0; i_ < (count); i_++) {                                                         \
        (c)[i_].algo = (int)(perf)[i_].algo;                                                       \
        (c)[i_].status = (perf)[i_].status;                                                        \
        (c)[i_].bytes = (perf)[i_].memory;                                                         \
        (c)[i_].determinism = (perf)[i_].determinism;                                              \
        (c)[i_].math = (perf)[i_].mathType;                                                        \
    }

/* Lists the measured (find = 1) or estimated (find = 0) candidates of a direction. */
static cudnnStatus_t list_candidates(mrt_cuda_impl *impl, const mrt_cuda_conv_entry *e,
                                     enum conv_direction dir, int find, conv_candidate *c,
                                     int *count)
{
    cudnnHandle_t h = impl->cudnn;
    cudnnStatus_t s;

    *count = 0;
    if (dir == FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        const int max = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
        s = find ? cudnnFindConvolutionForwardAlgorithm(h, e->x, e->w, e->conv, e->y, max, count,
                                                        perf)
                 : cudnnGetConvolutionForwardAlgorithm_v7(h, e->x, e->w, e->conv, e->y, max,
                                                          count, perf);
        if (s == CUDNN_STATUS_SUCCESS)
            COPY_CANDIDATES(perf, *count, c);
    } else if (dir == BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        const int max = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
        s = find ? cudnnFindConvolutionBackwardDataAlgorithm(h, e->w, e->y, e->conv, e->x, max,
                                                             count, perf)
                 : cudnnGetConvolutionBackwardDataAlgorithm_v7(h, e->w, e->y, e->conv, e->x, max,
                                                               count, perf);
        if (s == CUDNN_STATUS_SUCCESS)
            COPY_CANDIDATES(perf, *count, c);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        const int max = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
        s = find ? cudnnFindConvolutionBackwardFilterAlgorithm(h, e->x, e->y, e->conv, e->w, max,
                                                               count, perf)
                 : cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, e->x, e->y, e->conv, e->w,
                                                                 max, count, perf);
        if (s == CUDNN_STATUS_SUCCESS)
            COPY_CANDIDATES(perf, *count, c);
    }
    return s;
}

/* Chooses the algorithm of one direction for an entry, once. */
static int choose(mrt_ctx *ctx, const char *fn, mrt_cuda_conv_entry *e, enum conv_direction dir,
                  conv_algo *out)
{
    mrt_cuda_impl *impl = ctx->impl;
    conv_candidate c[16];
    int count = 0;

    if (out->found)
        return MRT_OK;
    /* cudnnFind fails or finds nothing usable when memory is short: then ask the heuristics. */
    cudnnStatus_t s = list_candidates(impl, e, dir, 1, c, &count);
    /*
     * A cudaMalloc that failed inside cudnnFind may leave its error pending;
     * clear it so that the next launch check does not report it.
     */
    cudaGetLastError();
    if (s == CUDNN_STATUS_SUCCESS && pick(ctx, c, count, out) == MRT_OK)
        return MRT_OK;
    s = list_candidates(impl, e, dir, 0, c, &count);
    if (s != CUDNN_STATUS_SUCCESS)
        return mrt_cuda_fail_cudnn(s, heuristic_calls[dir], __FILE__, __LINE__);
    if (pick(ctx, c, count, out) == MRT_OK)
        return MRT_OK;
    return mrt_fail(MRT_EDEVICE, "%s: cuDNN offers no %s algorithm for input [%d,%d,%d,%d] and "
                    "weights [%d,%d,%d,%d] with deterministic = %d and allow_tf32 = %d whose "
                    "workspace fits in memory", fn, direction_names[dir], e->key[0], e->key[1],
                    e->key[2], e->key[3], e->key[4], e->key[1], e->key[5], e->key[6],
                    e->key[13], e->key[14]);
}

/* Sets the math type an algorithm runs with: never above FMA without allow_tf32. */
static int run_math(const mrt_ctx *ctx, mrt_cuda_conv_entry *e, const conv_algo *a)
{
    cudnnMathType_t math = ctx->allow_tf32 ? a->math : CUDNN_FMA_MATH;

    MRT_CUDNN_CHECK(cudnnSetConvolutionMathType(e->conv, math));
    return MRT_OK;
}

/* ---- convolution -------------------------------------------------------- */

static int cudnn_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                                const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    static const char fn[] = "mrt_conv2d_forward";
    mrt_cuda_impl *impl = ctx->impl;
    mrt_cuda_conv_entry *e;

    if (y->numel == 0)
        return MRT_OK;
    if (x->numel == 0)
        return mrt_fail(MRT_ENYI, "NYI: %s on cuda with an empty input 'x'", fn);
    MRT_TRY(conv_entry(ctx, fn, p, x, w, y, &e));
    MRT_TRY(choose(ctx, fn, e, FORWARD, &e->forward));
    MRT_TRY(ensure_workspace(impl, e->forward.bytes));
    MRT_TRY(run_math(ctx, e, &e->forward));
    MRT_CUDNN_CHECK(cudnnConvolutionForward(impl->cudnn, &one, e->x, x->data, e->w, w->data,
                                            e->conv, (cudnnConvolutionFwdAlgo_t)e->forward.algo,
                                            impl->workspace, e->forward.bytes, &zero, e->y,
                                            y->data));
    if (b != NULL)
        MRT_CUDNN_CHECK(cudnnAddTensor(impl->cudnn, &one, e->bias, b->data, &one, e->y, y->data));
    return MRT_OK;
}

static int backward_data(mrt_ctx *ctx, mrt_cuda_conv_entry *e, const mrt_tensor *dy,
                         const mrt_tensor *w, mrt_tensor *dx)
{
    mrt_cuda_impl *impl = ctx->impl;

    MRT_TRY(choose(ctx, "mrt_conv2d_backward", e, BACKWARD_DATA, &e->backward_data));
    MRT_TRY(ensure_workspace(impl, e->backward_data.bytes));
    MRT_TRY(run_math(ctx, e, &e->backward_data));
    MRT_CUDNN_CHECK(cudnnConvolutionBackwardData(
        impl->cudnn, &one, e->w, w->data, e->y, dy->data, e->conv,
        (cudnnConvolutionBwdDataAlgo_t)e->backward_data.algo, impl->workspace,
        e->backward_data.bytes, &zero, e->x, dx->data));
    return MRT_OK;
}

/* dw := beta*dw + the weight gradient; cuDNN reads no old dw when beta = 0. */
static int backward_filter(mrt_ctx *ctx, mrt_cuda_conv_entry *e, const mrt_tensor *dy,
                           const mrt_tensor *x, mrt_tensor *dw, float beta)
{
    mrt_cuda_impl *impl = ctx->impl;

    MRT_TRY(choose(ctx, "mrt_conv2d_backward", e, BACKWARD_FILTER, &e->backward_filter));
    MRT_TRY(ensure_workspace(impl, e->backward_filter.bytes));
    MRT_TRY(run_math(ctx, e, &e->backward_filter));
    MRT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        impl->cudnn, &one, e->x, x->data, e->y, dy->data, e->conv,
        (cudnnConvolutionBwdFilterAlgo_t)e->backward_filter.algo, impl->workspace,
        e->backward_filter.bytes, &beta, e->w, dw->data));
    return MRT_OK;
}

/* Backward with no products to sum: dx = 0, dw = beta*dw, db = beta*db (+ sums of dy). */
static int empty_backward(mrt_cuda_impl *impl, const mrt_tensor *dy, mrt_tensor *dx,
                          mrt_tensor *dw, mrt_tensor *db, float beta)
{
    if (dx != NULL)
        MRT_TRY(mrt_cuda_fill(impl->stream, dx->data, dx->numel, 0.0f));
    if (dw != NULL && beta == 0.0f)
        MRT_TRY(mrt_cuda_fill(impl->stream, dw->data, dw->numel, 0.0f));
    else if (dw != NULL)
        MRT_TRY(mrt_cuda_axpby(impl->stream, beta, dw->data, 0.0f, dw->data, dw->numel));
    if (db != NULL)
        MRT_TRY(mrt_cuda_channel_sum(impl->stream, dy->data, dy->shape[0], dy->shape[1],
                                     dy->shape[2] * dy->shape[3], beta, db->data));
    return MRT_OK;
}

static int cudnn_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                                 const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                                 mrt_tensor *dw, mrt_tensor *db, float beta)
{
    mrt_cuda_impl *impl = ctx->impl;
    mrt_cuda_conv_entry *e;

    if (dx == NULL && dw == NULL && db == NULL)
        return MRT_OK;
    if (dy->numel == 0 || x->numel == 0)
        return empty_backward(impl, dy, dx, dw, db, beta);
    MRT_TRY(conv_entry(ctx, "mrt_conv2d_backward", p, x, w, dy, &e));
    if (dx != NULL)
        MRT_TRY(backward_data(ctx, e, dy, w, dx));
    if (dw != NULL)
        MRT_TRY(backward_filter(ctx, e, dy, x, dw, beta));
    if (db != NULL)
        MRT_TRY(mrt_cuda_channel_sum(impl->stream, dy->data, dy->shape[0], dy->shape[1],
                                     dy->shape[2] * dy->shape[3], beta, db->data));
    return MRT_OK;
}

/* ---- batch normalisation ------------------------------------------------ */

/*
 * NOTE: mrt_batchnorm_backward takes no eps. cuDNN documents the saved mean
 * and inverse standard deviation as what its backward uses, so this value
 * should not matter; it is PyTorch's default.
 */
#define BN_BACKWARD_EPSILON 1e-5

/* Sets the context's batchnorm descriptors for x[N,C,H,W] or x[N,C]. */
static int bn_descriptors(mrt_cuda_impl *impl, const char *fn, const mrt_tensor *x)
{
    const int64_t n = x->shape[0], c = x->shape[1];
    const int64_t h = x->ndim == 4 ? x->shape[2] : 1, w = x->ndim == 4 ? x->shape[3] : 1;

    MRT_TRY(check_int(fn, x, "x"));
    MRT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(impl->bn_x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               (int)n, (int)c, (int)h, (int)w));
    MRT_CUDNN_CHECK(
        cudnnDeriveBNTensorDescriptor(impl->bn_param, impl->bn_x, CUDNN_BATCHNORM_SPATIAL));
    return MRT_OK;
}

static int cudnn_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                                   const mrt_tensor *beta_, mrt_tensor *running_mean,
                                   mrt_tensor *running_var, mrt_tensor *save_mean,
                                   mrt_tensor *save_invstd, mrt_tensor *y, int training,
                                   int update_running, double momentum, double eps)
{
    static const char fn[] = "mrt_batchnorm_forward";
    mrt_cuda_impl *impl = ctx->impl;

    if (x->numel == 0)
        return MRT_OK;
    if (eps < CUDNN_BN_MIN_EPSILON)
        return mrt_fail(MRT_EINVAL, "%s: eps %g is below cuDNN's minimum %g", fn, eps,
                        (double)CUDNN_BN_MIN_EPSILON);
    MRT_TRY(bn_descriptors(impl, fn, x));
    if (!training) {
        MRT_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
            impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, impl->bn_x, x->data, impl->bn_x,
            y->data, impl->bn_param, gamma->data, beta_->data, running_mean->data,
            running_var->data, eps));
        return MRT_OK;
    }
    /* The public wrapper requires save_mean and save_invstd in training. */
    MRT_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, impl->bn_x, x->data, impl->bn_x,
        y->data, impl->bn_param, gamma->data, beta_->data, update_running ? momentum : 0.0,
        update_running ? running_mean->data : NULL, update_running ? running_var->data : NULL,
        eps, save_mean->data, save_invstd->data));
    return MRT_OK;
}

/*
 * cuDNN computes dx, dgamma and dbeta together; outputs the caller skipped
 * go to scratch. dgamma and dbeta accumulate with beta; dx is overwritten.
 */
static int cudnn_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                                    const mrt_tensor *gamma, const mrt_tensor *save_mean,
                                    const mrt_tensor *save_invstd, mrt_tensor *dx,
                                    mrt_tensor *dgamma, mrt_tensor *dbeta, float beta)
{
    static const char fn[] = "mrt_batchnorm_backward";
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t channels = x->shape[1];
    float *param_spare = NULL;

    if (dx == NULL && dgamma == NULL && dbeta == NULL)
        return MRT_OK;
    if (x->numel == 0)
        return MRT_OK;
    MRT_TRY(bn_descriptors(impl, fn, x));
    float *dx_out = dx != NULL ? dx->data
                               : mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_BN_DX,
                                                  (size_t)x->numel * sizeof(float));
    if (dx_out == NULL)
        return MRT_ENOMEM;
    if (dgamma == NULL || dbeta == NULL) {
        param_spare = mrt_cuda_scratch(ctx, MRT_CUDA_SCRATCH_BN_PARAM,
                                       2 * (size_t)channels * sizeof(float));
        if (param_spare == NULL)
            return MRT_ENOMEM;
    }
    float *dgamma_out = dgamma != NULL ? dgamma->data : param_spare;
    float *dbeta_out = dbeta != NULL ? dbeta->data : param_spare + channels;
    MRT_CUDNN_CHECK(cudnnBatchNormalizationBackward(
        impl->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &beta, impl->bn_x, x->data,
        impl->bn_x, dy->data, impl->bn_x, dx_out, impl->bn_param, gamma->data, dgamma_out,
        dbeta_out, BN_BACKWARD_EPSILON, save_mean->data, save_invstd->data));
    return MRT_OK;
}

void mrt_cuda_register_cudnn_ops(mrt_backend *table)
{
    table->conv2d_forward = cudnn_conv2d_forward;
    table->conv2d_backward = cudnn_conv2d_backward;
    table->batchnorm_forward = cudnn_batchnorm_forward;
    table->batchnorm_backward = cudnn_batchnorm_backward;
}
