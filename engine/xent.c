/*
 * xent.c: mean softmax cross-entropy of logits[N,C] against int32 class
 * labels, as PyTorch's cross_entropy with reduction 'mean' and no class
 * weights: argument checks and the CPU implementation.
 *
 * The labels live on the context's device, so the backend (not the public
 * wrapper) checks their range. The CPU path subtracts each row's maximum
 * before exponentiating and works in double. It runs the rows in order, so
 * the loss is the same from run to run.
 */
#include <math.h>

#include "cpu.h"

/*
 * Checks an activation t[N,C] with N, C >= 1 (logits, or probs standing in
 * for them), the labels pointer, and a partner tensor of t's shape.
 */
static int check_operands(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                          const int32_t *labels, const char *other_name, const mrt_tensor *other)
{
    char ts[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, 2));
    if (t->shape[0] < 1 || t->shape[1] < 1)
        return mrt_fail(MRT_EINVAL, "%s: '%s' %s is empty (expected at least one row and one "
                        "class)", fn, name, mrt_tensor_shape_str(t, ts, sizeof ts));
    if (labels == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing labels", fn);
    MRT_TRY(mrt_check_tensor(ctx, fn, other_name, other, -1));
    return mrt_check_shape(fn, other_name, other, 2, t->shape);
}

int mrt_xent_forward(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                     mrt_tensor *probs, double *loss, int64_t *correct)
{
    MRT_TRY(check_operands(ctx, "mrt_xent_forward", "logits", logits, labels, "probs", probs));
    return MRT_DISPATCH(ctx, xent_forward, logits, labels, probs, loss, correct);
}

int mrt_xent_backward(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels, float scale,
                      mrt_tensor *dlogits)
{
    MRT_TRY(check_operands(ctx, "mrt_xent_backward", "probs", probs, labels, "dlogits",
                           dlogits));
    return MRT_DISPATCH(ctx, xent_backward, probs, labels, scale, dlogits);
}

/* ---- CPU implementation ------------------------------------------------- */

/* Fails on the first label outside 0..classes-1, naming its row and value. */
static int check_labels(const char *fn, const int32_t *labels, int64_t rows, int64_t classes)
{
    for (int64_t i = 0; i < rows; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return mrt_fail(MRT_EINVAL, "%s: label %d in row %lld is out of range (expected 0 "
                            "to %lld)", fn, (int)labels[i], (long long)i,
                            (long long)(classes - 1));
    return MRT_OK;
}

/*
 * Writes the softmax of one row into probs and returns the row's loss
 * log(sum exp) - row[label]. Sets *hit when the first maximum is at label.
 */
static double softmax_row(const float *row, int64_t classes, int32_t label, float *probs,
                          int *hit)
{
    int64_t argmax = 0;
    double max = row[0], sum = 0.0;

    for (int64_t j = 1; j < classes; j++)
        if (row[j] > max) {
            max = row[j];
            argmax = j;
        }
    for (int64_t j = 0; j < classes; j++)
        sum += exp(row[j] - max);
    for (int64_t j = 0; j < classes; j++)
        probs[j] = (float)(exp(row[j] - max) / sum);
    *hit = argmax == label;
    return max + log(sum) - row[label];
}

int mrt_cpu_xent_forward(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                         mrt_tensor *probs, double *loss, int64_t *correct)
{
    const int64_t rows = logits->shape[0], classes = logits->shape[1];
    double total = 0.0;
    int64_t hits = 0;

    (void)ctx;
    MRT_TRY(check_labels("mrt_xent_forward", labels, rows, classes));
    for (int64_t i = 0; i < rows; i++) {
        int hit;
        total += softmax_row(logits->data + i * classes, classes, labels[i],
                             probs->data + i * classes, &hit);
        hits += hit;
    }
    if (loss != NULL)
        *loss = total / (double)rows;
    if (correct != NULL)
        *correct = hits;
    return MRT_OK;
}

int mrt_cpu_xent_backward(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels,
                          float scale, mrt_tensor *dlogits)
{
    const int64_t rows = probs->shape[0], classes = probs->shape[1];
    const float factor = (float)((double)scale / (double)rows);

    (void)ctx;
    MRT_TRY(check_labels("mrt_xent_backward", labels, rows, classes));
    /* dlogits may alias probs: each element is read before it is written. */
    for (int64_t i = 0; i < rows; i++) {
        const float *p = probs->data + i * classes;
        float *d = dlogits->data + i * classes;
        for (int64_t j = 0; j < classes; j++)
            d[j] = factor * (p[j] - (j == labels[i] ? 1.0f : 0.0f));
    }
    return MRT_OK;
}
