/*
 * layout.c: conversion of 4-D activations between the NCHW layout and the
 * channels-last layout NHWC: argument checks and the CPU implementation.
 *
 * A channels-last tensor is an ordinary row-major tensor of shape
 * [N,H,W,C]. mrt_nn.h lists the ops that accept one, through the
 * channels_last field of their parameters or by the tensor's rank. The CPU
 * backend's convolutions are fastest on channels-last data, so models keep
 * their activations in it from the first convolution to the global pooling.
 */
#include "cpu.h"

/* Tiles of this many channels and positions keep a transpose inside L1. */
#define TILE 32

int mrt_channels_last_supported(const mrt_ctx *ctx)
{
    return ctx != NULL && ctx->backend->channels_last;
}

/* Checks x and y for a layout conversion; perm maps y's dims to x's. */
static int check_transpose(mrt_ctx *ctx, const char *fn, const mrt_tensor *x,
                           const mrt_tensor *y, const int *perm)
{
    int64_t y_shape[4];

    MRT_TRY(mrt_check_tensor(ctx, fn, "x", x, 4));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    for (int i = 0; i < 4; i++)
        y_shape[i] = x->shape[perm[i]];
    MRT_TRY(mrt_check_shape(fn, "y", y, 4, y_shape));
    if (x->data == y->data && x->numel > 0)
        return mrt_fail(MRT_EINVAL, "%s: 'y' must not share storage with 'x'", fn);
    return MRT_OK;
}

int mrt_to_channels_last(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    static const int perm[4] = {0, 2, 3, 1};

    MRT_TRY(check_transpose(ctx, "mrt_to_channels_last", x, y, perm));
    return MRT_DISPATCH(ctx, to_channels_last, x, y);
}

int mrt_to_channels_first(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    static const int perm[4] = {0, 3, 1, 2};

    MRT_TRY(check_transpose(ctx, "mrt_to_channels_first", x, y, perm));
    return MRT_DISPATCH(ctx, to_channels_first, x, y);
}

/* ---- CPU implementation ------------------------------------------------- */

/*
 * out[q, r] := in[r, q] for every image: in is [rows, cols] and out is
 * [cols, rows] per image, both row-major. Tiles of TILE x TILE elements
 * keep both the reads and the writes within a few cache lines.
 */
void mrt_cpu_transpose_images(const float *in, float *out, int64_t images, int64_t rows,
                              int64_t cols)
{
    const int64_t row_tiles = (rows + TILE - 1) / TILE, col_tiles = (cols + TILE - 1) / TILE;
    const int64_t tiles = images * row_tiles * col_tiles;

#pragma omp parallel for if (images * rows * cols > 32768) schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t image = t / (row_tiles * col_tiles);
        const int64_t r0 = (t / col_tiles) % row_tiles * TILE, c0 = t % col_tiles * TILE;
        const int64_t r1 = r0 + TILE < rows ? r0 + TILE : rows;
        const int64_t c1 = c0 + TILE < cols ? c0 + TILE : cols;
        const float *src = in + image * rows * cols;
        float *dst = out + image * rows * cols;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t r = r0; r < r1; r++)
                dst[c * rows + r] = src[r * cols + c];
    }
}

int mrt_cpu_to_channels_last(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    (void)ctx;
    /* Per image, [C, H*W] becomes [H*W, C]. */
    mrt_cpu_transpose_images(x->data, y->data, x->shape[0], x->shape[1],
                             x->shape[2] * x->shape[3]);
    return MRT_OK;
}

int mrt_cpu_to_channels_first(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y)
{
    (void)ctx;
    /* Per image, [H*W, C] becomes [C, H*W]. */
    mrt_cpu_transpose_images(x->data, y->data, x->shape[0], x->shape[1] * x->shape[2],
                             x->shape[3]);
    return MRT_OK;
}
