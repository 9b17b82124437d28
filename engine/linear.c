/*
 * linear.c: the fully connected layer y[N,O] = x[N,I] w[O,I]^T + b[O]:
 * argument checks and the CPU implementation.
 *
 * The CPU path is three matrix products (mrt_cpu_matmul: oneDNN's matmul
 * primitive, OpenMP-threaded, which also adds the bias in forward) and a
 * bias gradient accumulated in double.
 */
#include <string.h>

#include "cpu.h"

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

int mrt_cpu_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                           const mrt_tensor *b, mrt_tensor *y)
{
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];

    /* y[N,O] := x[N,I] w[O,I]^T + b[O] */
    return mrt_cpu_matmul(ctx, "mrt_linear_forward", 0, 1, n, out, in, x->data, w->data,
                          b != NULL ? b->data : NULL, 0.0f, y->data);
}

int mrt_cpu_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                            const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                            float beta)
{
    static const char fn[] = "mrt_linear_backward";
    const int64_t n = x->shape[0], in = x->shape[1], out = w->shape[0];

    /* dx[N,I] := dy[N,O] w[O,I] */
    if (dx != NULL)
        MRT_TRY(mrt_cpu_matmul(ctx, fn, 0, 0, n, in, out, dy->data, w->data, NULL, 0.0f,
                               dx->data));
    /* dw[O,I] := beta*dw + dy^T x; an empty batch leaves beta*dw. */
    if (dw != NULL)
        MRT_TRY(mrt_cpu_matmul(ctx, fn, 1, 0, out, in, n, dy->data, x->data, NULL, beta,
                               dw->data));
    if (db != NULL)
        MRT_TRY(mrt_cpu_column_sums(ctx, dy->data, n, out, beta, db->data));
    return MRT_OK;
}
