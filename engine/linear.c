/*
 * linear.c: the fully connected layer y[N,O] = x[N,I] w[O,I]^T + b[O]:
 * argument checks and the CPU implementation.
 *
 * The CPU path is three cblas_sgemm calls (OpenBLAS, threaded by OpenBLAS
 * itself) and a bias reduction accumulated in double.
 */
#include <string.h>

#include <cblas.h>

#include "cpu.h"

/* Loops over fewer elements than this run on one thread. */
#define LINEAR_PARALLEL_MIN 32768

/* Checks x[N,I] and w[O,I] and that their feature counts agree. */
static int check_operands(mrt_ctx *ctx, const char *fn, const mrt_tensor *x, const mrt_tensor *w)
{
    char xs[160], ws[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, 2));
    MRT_TRY(mrt_check_tensor(ctx, fn, "w", w, 2));
    if (w->shape[1] != x->shape[1])
        return mrt_fail(MRT_EINVAL, "%s: 'w' %s expects %lld input features but 'x' %s has %lld",
                        fn, mrt_tensor_shape_str(w, ws, sizeof ws), (long long)w->shape[1],
                        mrt_tensor_shape_str(x, xs, sizeof xs), (long long)x->shape[1]);
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

int mrt_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                       const mrt_tensor *b, mrt_tensor *y)
{
    static const char fn[] = "mrt_linear_forward";

    MRT_TRY(check_operands(ctx, fn, x, w));
    const int64_t bias_shape[1] = {w->shape[0]};
    const int64_t y_shape[2] = {x->shape[0], w->shape[0]};
    MRT_TRY(check_optional(ctx, fn, "b", b, 1, bias_shape));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, 2, y_shape));
    return MRT_DISPATCH(ctx, linear_forward, x, w, b, y);
}

int mrt_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                        const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                        float beta)
{
    static const char fn[] = "mrt_linear_backward";

    MRT_TRY(check_operands(ctx, fn, x, w));
    const int64_t dy_shape[2] = {x->shape[0], w->shape[0]};
    const int64_t bias_shape[1] = {w->shape[0]};
    MRT_TRY(mrt_check_tensor(ctx, fn, "dy", dy, -1));
    MRT_TRY(mrt_check_shape(fn, "dy", dy, 2, dy_shape));
    MRT_TRY(check_optional(ctx, fn, "dx", dx, 2, x->shape));
    MRT_TRY(check_optional(ctx, fn, "dw", dw, 2, w->shape));
    MRT_TRY(check_optional(ctx, fn, "db", db, 1, bias_shape));
    return MRT_DISPATCH(ctx, linear_backward, dy, x, w, dx, dw, db, beta);
}

/* ---- CPU implementation ------------------------------------------------- */

/* A BLAS leading dimension: at least 1 even for empty matrices, as BLAS requires. */
static int leading_dim(int64_t n)
{
    return n > 0 ? (int)n : 1;
}

int mrt_cpu_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                           const mrt_tensor *b, mrt_tensor *y)
{
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];
    float beta = 0.0f;

    (void)ctx;
    if (n == 0 || out == 0)
        return MRT_OK;
    if (b != NULL) {
        /* y starts as the bias in every row and sgemm adds x w^T onto it. */
        for (int64_t i = 0; i < n; i++)
            memcpy(y->data + i * out, b->data, (size_t)out * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f,
                x->data, leading_dim(in), w->data, leading_dim(in), beta, y->data,
                leading_dim(out));
    return MRT_OK;
}

/* db[o] := beta*db[o] + sum over rows of dy[:,o]. */
static void bias_grad(const float *dy, int64_t n, int64_t out, float beta, float *db)
{
#pragma omp parallel for if (n * out > LINEAR_PARALLEL_MIN) schedule(static)
    for (int64_t o = 0; o < out; o++) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += dy[i * out + o];
        db[o] = beta == 0.0f ? (float)sum : (float)(beta * (double)db[o] + sum);
    }
}

int mrt_cpu_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                            const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                            float beta)
{
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];

    (void)ctx;
    /* dx[N,I] := dy[N,O] w[O,I] */
    if (dx != NULL && n > 0 && in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f,
                    dy->data, leading_dim(out), w->data, leading_dim(in), 0.0f, dx->data,
                    leading_dim(in));
    /*
     * dw[O,I] := beta*dw + dy^T x. BLAS ignores the old dw when beta = 0 and
     * still applies beta when N = 0, so both cases need no special path.
     */
    if (dw != NULL && out > 0 && in > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f,
                    dy->data, leading_dim(out), x->data, leading_dim(in), beta, dw->data,
                    leading_dim(in));
    if (db != NULL)
        bias_grad(dy->data, n, out, beta, db->data);
    return MRT_OK;
}
