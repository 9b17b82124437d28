/*
 * activation.c: the ReLU activation: argument checks and the CPU
 * implementation. NaN passes through forward and backward, as in PyTorch.
 */
#include "cpu.h"

/* Loops over fewer elements than this run on one thread. */
#define RELU_PARALLEL_MIN 32768

int mrt_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    static const char fn[] = "mrt_relu_forward";

    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, -1));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, x->ndim, x->shape));
    return MRT_DISPATCH(ctx, relu_forward, x, y);
}

int mrt_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y, mrt_tensor *dx)
{
    static const char fn[] = "mrt_relu_backward";

    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_tensor(ctx, fn, "dy", dy, -1));
    MRT_TRY(mrt_check_shape(fn, "dy", dy, y->ndim, y->shape));
    MRT_TRY(mrt_check_tensor(ctx, fn, "dx", dx, -1));
    MRT_TRY(mrt_check_shape(fn, "dx", dx, y->ndim, y->shape));
    return MRT_DISPATCH(ctx, relu_backward, dy, y, dx);
}

/* ---- CPU implementation ------------------------------------------------- */

/* y := max(x, 0). y may alias x. */
int mrt_cpu_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    const float *in = x->data;
    float *out = y->data;
    const int64_t n = x->numel;

    (void)ctx;
#pragma omp parallel for if (n > RELU_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = in[i] < 0.0f ? 0.0f : in[i];
    return MRT_OK;
}

/* dx := dy where y > 0 or y is NaN, else 0. dx may alias dy. */
int mrt_cpu_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y,
                          mrt_tensor *dx)
{
    const float *grad_out = dy->data, *out = y->data;
    float *grad_in = dx->data;
    const int64_t n = y->numel;

    (void)ctx;
#pragma omp parallel for if (n > RELU_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        grad_in[i] = out[i] <= 0.0f ? 0.0f : grad_out[i];
    return MRT_OK;
}
