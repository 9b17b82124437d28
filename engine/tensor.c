/*
 * tensor.c: tensor shapes, the argument checks every op shares, and the
 * elementwise ops of mrt_tensor.h.
 */
#include <stdio.h>
#include <string.h>

#include "mrt_internal.h"

/* Fails naming the shape when its float32 elements take more than INT64_MAX bytes. */
static int check_byte_size(int ndim, const int64_t *shape)
{
    const int64_t max_numel = INT64_MAX / (int64_t)sizeof(float);
    int64_t numel = 1;
    int zero = 0;
    mrt_tensor view;
    char buf[200];

    for (int i = 0; i < ndim; i++)
        zero |= shape[i] == 0;
    for (int i = 0; i < ndim && !zero; i++) {
        if (numel > max_numel / shape[i]) {
            memset(&view, 0, sizeof view);
            view.ndim = ndim;
            memcpy(view.shape, shape, (size_t)ndim * sizeof *shape);
            return mrt_fail(MRT_EINVAL, "mrt_tensor_set_shape: shape %s is too large (more "
                            "than %lld elements, so the size in bytes overflows int64)",
                            mrt_tensor_shape_str(&view, buf, sizeof buf), (long long)max_numel);
        }
        numel *= shape[i];
    }
    return MRT_OK;
}

int mrt_tensor_set_shape(mrt_tensor *t, int ndim, const int64_t *shape)
{
    int64_t numel = 1;

    if (ndim < 0 || ndim > 8)
        return mrt_fail(MRT_EINVAL, "mrt_tensor_set_shape: %d dimensions (expected 0 to 8)", ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return mrt_fail(MRT_EINVAL,
                            "mrt_tensor_set_shape: size %lld of dimension %d is negative",
                            (long long)shape[i], i + 1);
    MRT_TRY(check_byte_size(ndim, shape));
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    for (int i = 0; i < 8; i++)
        t->shape[i] = i < ndim ? shape[i] : 0;
    t->ndim = ndim;
    t->numel = numel;
    return MRT_OK;
}

const char *mrt_tensor_shape_str(const mrt_tensor *t, char *buf, int buflen)
{
    int used = 0;

    if (buflen <= 0)
        return buf;
    buf[0] = '\0';
    used += snprintf(buf + used, (size_t)(buflen - used), "[");
    for (int i = 0; i < t->ndim && used < buflen; i++)
        used += snprintf(buf + used, (size_t)(buflen - used), i ? ",%lld" : "%lld",
                         (long long)t->shape[i]);
    if (used < buflen)
        snprintf(buf + used, (size_t)(buflen - used), "]");
    return buf;
}

int mrt_tensor_same_shape(const mrt_tensor *a, const mrt_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

static const char *device_name(int device)
{
    if (device == MRT_CPU)
        return "cpu";
    if (device == MRT_CUDA)
        return "cuda";
    return "unknown";
}

int mrt_check_tensor(const mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                     int ndim)
{
    char buf[160];

    if (t == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing tensor '%s'", fn, name);
    if (t->data == NULL && t->numel > 0)
        return mrt_fail(MRT_EINVAL, "%s: tensor '%s' has no storage", fn, name);
    if (t->device != ctx->device)
        return mrt_fail(MRT_EINVAL, "%s: tensor '%s' is on %s but the context is on %s; copy it "
                        "with :to('%s') first", fn, name, device_name(t->device),
                        device_name(ctx->device), device_name(ctx->device));
    if (ndim >= 0 && t->ndim != ndim)
        return mrt_fail(MRT_EINVAL, "%s: expected %d-D '%s', got %d-D %s", fn, ndim, name,
                        (int)t->ndim, mrt_tensor_shape_str(t, buf, sizeof buf));
    return MRT_OK;
}

int mrt_check_shape(const char *fn, const char *name, const mrt_tensor *t, int ndim,
                    const int64_t *expected)
{
    char got[160], want[160];
    int ok = t->ndim == ndim;

    for (int i = 0; ok && i < ndim; i++)
        if (expected[i] >= 0 && t->shape[i] != expected[i])
            ok = 0;
    if (ok)
        return MRT_OK;
    mrt_tensor want_t;
    memset(&want_t, 0, sizeof want_t);
    want_t.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        want_t.shape[i] = expected[i];
    return mrt_fail(MRT_EINVAL, "%s: '%s' has shape %s, expected %s (-1 = any)", fn, name,
                    mrt_tensor_shape_str(t, got, sizeof got),
                    mrt_tensor_shape_str(&want_t, want, sizeof want));
}

/* Fails unless b has a's number of elements. */
static int check_same_numel(const char *fn, const char *an, const mrt_tensor *a, const char *bn,
                            const mrt_tensor *b)
{
    char sa[160], sb[160];

    if (a->numel == b->numel)
        return MRT_OK;
    return mrt_fail(MRT_EINVAL, "%s: '%s' %s and '%s' %s differ in size", fn, an,
                    mrt_tensor_shape_str(a, sa, sizeof sa), bn,
                    mrt_tensor_shape_str(b, sb, sizeof sb));
}

int mrt_tensor_copy(mrt_ctx *ctx, mrt_tensor *dst, const mrt_tensor *src)
{
    (void)ctx;
    if (dst == NULL || src == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_tensor_copy: missing tensor");
    MRT_TRY(check_same_numel("mrt_tensor_copy", "dst", dst, "src", src));
    return mrt_memcpy(dst->device, dst->data, src->device, src->data,
                      src->numel * (int64_t)sizeof(float));
}

int mrt_fill(mrt_ctx *ctx, mrt_tensor *t, float value)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_fill", "t", t, -1));
    return MRT_DISPATCH(ctx, fill, t, value);
}

int mrt_axpby(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_axpby", "x", x, -1));
    MRT_TRY(mrt_check_tensor(ctx, "mrt_axpby", "y", y, -1));
    MRT_TRY(check_same_numel("mrt_axpby", "x", x, "y", y));
    return MRT_DISPATCH(ctx, axpby, alpha, x, beta, y);
}

int mrt_add(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_add", "a", a, -1));
    MRT_TRY(mrt_check_tensor(ctx, "mrt_add", "b", b, -1));
    MRT_TRY(mrt_check_tensor(ctx, "mrt_add", "y", y, -1));
    MRT_TRY(check_same_numel("mrt_add", "a", a, "b", b));
    MRT_TRY(check_same_numel("mrt_add", "a", a, "y", y));
    return MRT_DISPATCH(ctx, add, a, b, y);
}

int mrt_mul(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_mul", "x", x, -1));
    MRT_TRY(mrt_check_tensor(ctx, "mrt_mul", "mask", mask, -1));
    MRT_TRY(mrt_check_tensor(ctx, "mrt_mul", "y", y, -1));
    MRT_TRY(check_same_numel("mrt_mul", "x", x, "mask", mask));
    MRT_TRY(check_same_numel("mrt_mul", "x", x, "y", y));
    return MRT_DISPATCH(ctx, mul, x, mask, y);
}

int mrt_sum(mrt_ctx *ctx, const mrt_tensor *x, double *sum)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_sum", "x", x, -1));
    return MRT_DISPATCH(ctx, sum, x, sum);
}

int mrt_sumsq(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_sumsq", "x", x, -1));
    return MRT_DISPATCH(ctx, sumsq, x, sumsq);
}

int mrt_nonfinite(mrt_ctx *ctx, const mrt_tensor *x, int *bad)
{
    MRT_TRY(mrt_check_tensor(ctx, "mrt_nonfinite", "x", x, -1));
    return MRT_DISPATCH(ctx, nonfinite, x, bad);
}
