/*
 * cublas_ops.c: the fully connected layer on cuBLAS.
 *
 * cuBLAS is column-major and mrt row-major, so every row-major matrix is
 * read as its transpose: y[N,O] = x[N,I] w[O,I]^T becomes the column-major
 * y^T[O,N] = w^T x^T, with w passed transposed (op T) and x as it is. The
 * bias is written into y first and sgemm adds onto it (beta = 1), as the
 * CPU backend does. With the context's allow_tf32 off the handle runs
 * CUBLAS_DEFAULT_MATH, which keeps float32 products in float32.
 */
#include <limits.h>

#include "cuda_common.h"

/* Sets the math mode that the context requests on the handle, when it changed. */
static int set_math_mode(mrt_ctx *ctx, mrt_cuda_impl *impl)
{
    const int tf32 = ctx->allow_tf32 != 0;

    if (impl->cublas_tf32 == tf32)
        return MRT_OK;
    MRT_CUBLAS_CHECK(cublasSetMathMode(impl->cublas,
                                       tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    impl->cublas_tf32 = tf32;
    return MRT_OK;
}

/* Fails with NYI when a size does not fit cuBLAS's int arguments. */
static int check_sizes(const char *fn, int64_t n, int64_t in, int64_t out)
{
    if (n > INT_MAX || in > INT_MAX || out > INT_MAX)
        return mrt_fail(MRT_ENYI, "NYI: %s on cuda with a size beyond 2^31-1 (N=%lld, I=%lld, "
                        "O=%lld)", fn, (long long)n, (long long)in, (long long)out);
    return MRT_OK;
}

static int cublas_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                                 const mrt_tensor *b, mrt_tensor *y)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float one = 1.0f;
    float beta = 0.0f;

    MRT_TRY(check_sizes("mrt_linear_forward", n, in, out));
    if (n == 0 || out == 0)
        return MRT_OK;
    if (b != NULL) {
        MRT_TRY(mrt_cuda_fill_rows(impl->stream, b->data, y->data, n, out));
        beta = 1.0f;
    }
    if (in == 0)    /* no products: y is the bias, or zero */
        return b != NULL ? MRT_OK : mrt_cuda_fill(impl->stream, y->data, n * out, 0.0f);
    MRT_TRY(set_math_mode(ctx, impl));
    /* y^T[O,N] := w^T x^T (+ y^T) */
    MRT_CUBLAS_CHECK(cublasSgemm(impl->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)n,
                                 (int)in, &one, w->data, (int)in, x->data, (int)in, &beta,
                                 y->data, (int)out));
    return MRT_OK;
}

/* dx[N,I] := dy[N,O] w[O,I], i.e. column-major dx^T[I,N] = w^T[I,O] dy^T[O,N]. */
static int input_grad(mrt_cuda_impl *impl, const mrt_tensor *dy, const mrt_tensor *w,
                      mrt_tensor *dx, int64_t n, int64_t in, int64_t out)
{
    const float one = 1.0f, zero = 0.0f;

    if (n == 0 || in == 0)
        return MRT_OK;
    if (out == 0)
        return mrt_cuda_fill(impl->stream, dx->data, n * in, 0.0f);
    MRT_CUBLAS_CHECK(cublasSgemm(impl->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)in, (int)n,
                                 (int)out, &one, w->data, (int)in, dy->data, (int)out, &zero,
                                 dx->data, (int)in));
    return MRT_OK;
}

/* dw[O,I] := beta*dw + dy^T x, i.e. column-major dw^T[I,O] = x^T[I,N] dy[N,O] + beta*dw^T. */
static int weight_grad(mrt_cuda_impl *impl, const mrt_tensor *dy, const mrt_tensor *x,
                       mrt_tensor *dw, float beta, int64_t n, int64_t in, int64_t out)
{
    const float one = 1.0f;

    if (in == 0 || out == 0)
        return MRT_OK;
    if (n == 0)     /* no rows: only the beta scaling remains, as BLAS would do it */
        return beta == 0.0f ? mrt_cuda_fill(impl->stream, dw->data, out * in, 0.0f)
                            : mrt_cuda_axpby(impl->stream, beta, dw->data, 0.0f, dw->data,
                                             out * in);
    MRT_CUBLAS_CHECK(cublasSgemm(impl->cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)in, (int)out,
                                 (int)n, &one, x->data, (int)in, dy->data, (int)out, &beta,
                                 dw->data, (int)in));
    return MRT_OK;
}

static int cublas_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                                  const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw,
                                  mrt_tensor *db, float beta)
{
    mrt_cuda_impl *impl = ctx->impl;
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];

    MRT_TRY(check_sizes("mrt_linear_backward", n, in, out));
    MRT_TRY(set_math_mode(ctx, impl));
    if (dx != NULL)
        MRT_TRY(input_grad(impl, dy, w, dx, n, in, out));
    if (dw != NULL)
        MRT_TRY(weight_grad(impl, dy, x, dw, beta, n, in, out));
    if (db != NULL)
        MRT_TRY(mrt_cuda_channel_sum(impl->stream, dy->data, n, out, 1, beta, db->data));
    return MRT_OK;
}

void mrt_cuda_register_cublas_ops(mrt_backend *table)
{
    table->linear_forward = cublas_linear_forward;
    table->linear_backward = cublas_linear_backward;
}
