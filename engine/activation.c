/*
 * activation.c: the ReLU activation: argument checks and the CPU
 * implementation. NaN passes through forward and backward, as in PyTorch.
 */
#include <omp.h>

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

/* y := max(x, 0) over n values; y may be x. NaN passes, as x < 0 is false for it. */
MRT_CPU_CLONES static void relu_values(float *y, const float *x, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

/*
 * dx := dy where y > 0 or y is NaN, else 0, over n values; dx may be dy.
 * Both inputs are loaded unconditionally, so the choice is a vector blend
 * and not a branch that the random sign pattern of y would mispredict.
 */
MRT_CPU_CLONES static void relu_grad_values(float *dx, const float *dy, const float *y,
                                            int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float g = dy[i];
        dx[i] = y[i] <= 0.0f ? 0.0f : g;
    }
}

int mrt_cpu_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    const int64_t n = x->numel;

    (void)ctx;
#pragma omp parallel if (n > RELU_PARALLEL_MIN)
    {
        const int t = omp_get_thread_num(), count = omp_get_num_threads();
        const int64_t lo = n * t / count, hi = n * (t + 1) / count;
        relu_values(y->data + lo, x->data + lo, hi - lo);
    }
    return MRT_OK;
}

int mrt_cpu_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y,
                          mrt_tensor *dx)
{
    const int64_t n = y->numel;

    (void)ctx;
#pragma omp parallel if (n > RELU_PARALLEL_MIN)
    {
        const int t = omp_get_thread_num(), count = omp_get_num_threads();
        const int64_t lo = n * t / count, hi = n * (t + 1) / count;
        relu_grad_values(dx->data + lo, dy->data + lo, y->data + lo, hi - lo);
    }
    return MRT_OK;
}
