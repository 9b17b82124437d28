/*
 * host_check.cu: runs the CUDA kernels' per-element arithmetic (the MRT_HD
 * functions of the kernel headers) on the host and compares it bit for bit with
 * the CPU backend of build/libmrt.so. It needs no GPU and no nvcc: the
 * Makefile builds it with the C++ compiler as `make cuda-host-check`.
 *
 * Covered: the Philox normals behind Langevin noise (stream position and
 * generator counter), every SGD flag combination, Adam/AdamW, averaging,
 * masked SGD, max and average pooling forward and backward (ties, NaN,
 * padding, overlapping windows), the bilinear resize and the crop with
 * flip. Not covered here: the block reductions (sums, softmax
 * cross-entropy, global average pooling) and the cuDNN/cuBLAS layers,
 * which only tests/cuda_spec.lua on a GPU checks.
 *
 * Prints one line per check and exits with the number of failed checks.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../engine/include/mrt_nn.h"
#include "../../engine/include/mrt_optim.h"
#include "../../engine/include/mrt_transform.h"
}

#include "../../kernels/optim.cuh"
#include "../../kernels/philox.cuh"
#include "../../kernels/pool.cuh"
#include "../../kernels/transform.cuh"

static int failures;

/* Reports one check; a failure names the first differing element. */
static void report(const char *name, int64_t bad_index, double got, double want)
{
    if (bad_index < 0) {
        printf("ok %s\n", name);
        return;
    }
    printf("FAIL %s: element %lld is %.9g, the CPU backend gives %.9g\n", name,
           (long long)bad_index, got, want);
    failures++;
}

/* Index of the first element whose bits differ, or -1. */
static int64_t first_difference(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            return i;
    return -1;
}

static void compare(const char *name, const float *got, const float *want, int64_t n)
{
    int64_t i = first_difference(got, want, n);
    report(name, i, i >= 0 ? got[i] : 0.0, i >= 0 ? want[i] : 0.0);
}

static void fill_uniform(mrt_rng *rng, float *p, int64_t n, float lo, float hi)
{
    mrt_rng_fill_uniform(rng, p, n, lo, hi);
}

/* Small integers, so that pooling windows hold ties. */
static void fill_ties(mrt_rng *rng, float *p, int64_t n)
{
    mrt_rng_fill_uniform(rng, p, n, 0.0f, 4.0f);
    for (int64_t i = 0; i < n; i++)
        p[i] = floorf(p[i]);
}

static mrt_tensor tensor_of(float *data, int ndim, const int64_t *shape)
{
    mrt_tensor t;

    memset(&t, 0, sizeof t);
    mrt_tensor_set_shape(&t, ndim, shape);
    t.data = data;
    t.device = MRT_CPU;
    return t;
}

/* ---- Philox normals ------------------------------------------------------ */

static void check_normals(void)
{
    const uint64_t seeds[] = {0, 1, 0xDEADBEEFCAFEF00Dull};
    const uint64_t counters[] = {0, 1, 2, 3, 6, (1ull << 34) + 1};
    const int64_t n = 777;
    float want[777], got[777];
    char name[128];

    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
            mrt_rng rng = {seeds[s], counters[c]};
            mrt_rng_fill_normal(&rng, want, n, 0.0f, 1.0f);
            for (int64_t i = 0; i < n; i++)
                got[i] = (float)mrt_philox_normal(seeds[s], counters[c] + 2 * (uint64_t)i);
            snprintf(name, sizeof name, "philox normals, seed %llx, counter %llu",
                     (unsigned long long)seeds[s], (unsigned long long)counters[c]);
            compare(name, got, want, n);
            snprintf(name, sizeof name, "philox counter after %lld normals", (long long)n);
            report(name, rng.counter == counters[c] + 2 * (uint64_t)n ? -1 : 0,
                   (double)rng.counter, (double)(counters[c] + 2 * (uint64_t)n));
        }
    }
}

/* ---- optimizers ---------------------------------------------------------- */

/* More elements than the CPU backend's noise chunk (65536), so its chunked path runs. */
enum { OPT_N = 70000 };

/* Optional arrays an update case passes, as bits. */
enum {
    WITH_MASK = 1,          /* mask: every third element is 1 */
    WITH_COUNTS = 2,        /* counts: 0 to 22, so some elements have their first update */
    WIDE_COUNTS = 4,        /* counts: 0 to 4999, beyond the CPU's table of Adam factors */
    MASK_NONE = 8           /* mask: all 1 with mask_on 0, so no element is in the part */
};

/* One SGD configuration: CPU backend against mrt_sgd_element with Philox noise. */
static void check_sgd_case(mrt_ctx *ctx, const mrt_sgd_params *p, int with_buffer, int arrays)
{
    static float theta0[OPT_N], grad[OPT_N], buffer0[OPT_N], direction0[OPT_N];
    static float theta_cpu[OPT_N], buffer_cpu[OPT_N], theta_k[OPT_N], buffer_k[OPT_N];
    static float direction_cpu[OPT_N], direction_k[OPT_N];
    mrt_rng data = {42, 0}, rng_cpu = {7, 5};
    char name[256];

    fill_uniform(&data, theta0, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, grad, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, buffer0, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, direction0, OPT_N, -1.0f, 1.0f);
    memcpy(direction_cpu, direction0, sizeof direction0);
    memcpy(direction_k, direction0, sizeof direction0);
    memcpy(theta_cpu, theta0, sizeof theta0);
    memcpy(buffer_cpu, buffer0, sizeof buffer0);
    memcpy(theta_k, theta0, sizeof theta0);
    memcpy(buffer_k, buffer0, sizeof buffer0);
    static float mask[OPT_N], counts_cpu[OPT_N], counts_k[OPT_N];
    for (int64_t i = 0; i < OPT_N; i++) {
        mask[i] = (float)(i % 3 == 0);
        counts_cpu[i] = counts_k[i] = (float)(i % 23);
    }
    const uint64_t counter0 = rng_cpu.counter;
    mrt_sgd_params q = *p;
    q.mask = arrays & WITH_MASK ? mask : NULL;
    q.counts = arrays & WITH_COUNTS ? counts_cpu : NULL;
    q.direction = p->nesterov ? direction_cpu : NULL;

    if (mrt_sgd_update(ctx, theta_cpu, p->update_buffer ? grad : NULL,
                       with_buffer ? buffer_cpu : NULL, OPT_N, &q, &rng_cpu) != MRT_OK) {
        printf("FAIL sgd: the CPU backend failed: %s\n", mrt_error_message());
        failures++;
        return;
    }
    const int noisy = p->update_buffer && p->noise_std > 0.0f;
    for (int64_t i = 0; i < OPT_N; i++) {
        if (q.mask != NULL && (mask[i] != 0.0f) != (q.mask_on != 0))
            continue;
        float z = noisy ? (float)mrt_philox_normal(7, counter0 + 2 * (uint64_t)i) : 0.0f;
        mrt_sgd_element(&theta_k[i], p->update_buffer ? &grad[i] : NULL,
                        with_buffer ? &buffer_k[i] : NULL,
                        p->nesterov ? &direction_k[i] : NULL,
                        q.counts != NULL ? &counts_k[i] : NULL, q, z);
    }
    snprintf(name, sizeof name, "sgd mu=%g damp=%g nesterov=%d wd=%g noise=%g first=%d "
             "update_buffer=%d apply=%d buffer=%d arrays=%d mask_on=%d", p->momentum,
             p->dampening, p->nesterov, p->weight_decay, p->noise_std, p->first,
             p->update_buffer, p->apply, with_buffer, arrays, p->mask_on);
    compare(name, theta_k, theta_cpu, OPT_N);
    if (with_buffer)
        compare("  ... its buffer", buffer_k, buffer_cpu, OPT_N);
    if (p->nesterov)
        compare("  ... its stored direction", direction_k, direction_cpu, OPT_N);
    if (q.counts != NULL)
        compare("  ... its counts", counts_k, counts_cpu, OPT_N);
    const uint64_t expected = counter0 + (noisy ? 2 * (uint64_t)OPT_N : 0);
    report("  ... its generator counter", rng_cpu.counter == expected ? -1 : 0,
           (double)rng_cpu.counter, (double)expected);
}

static void check_sgd(mrt_ctx *ctx)
{
    const float momenta[] = {0.0f, 0.9f}, dampenings[] = {0.0f, 0.1f};
    const float decays[] = {0.0f, 1e-3f}, noises[] = {0.0f, 0.01f};

    for (int a = 0; a < 2; a++)
    for (int b = 0; b < 2; b++)
    for (int nesterov = 0; nesterov < 2; nesterov++)
    for (int c = 0; c < 2; c++)
    for (int d = 0; d < 2; d++)
    for (int first = 0; first < 2; first++)
    for (int update = 0; update < 2; update++)
    for (int apply = 0; apply < 2; apply++)
    for (int with_buffer = 0; with_buffer < 2; with_buffer++) {
        mrt_sgd_params p;
        memset(&p, 0, sizeof p);
        p.lr = 0.05f;
        p.momentum = momenta[a];
        p.dampening = dampenings[b];
        p.nesterov = nesterov;
        p.weight_decay = decays[c];
        p.noise_std = noises[d];
        p.first = first;
        p.update_buffer = update;
        p.apply = apply;
        /* The combinations mrt_sgd_update rejects. */
        if (nesterov && (p.momentum == 0.0f || p.dampening != 0.0f))
            continue;
        if (!update && !apply)
            continue;
        if (!with_buffer && (p.momentum != 0.0f || !update))
            continue;
        check_sgd_case(ctx, &p, with_buffer, 0);
        /* Element masks (only the elements whose mask is mask_on move) and counts. */
        if (momenta[a] != 0.0f && c == 1 && first == 0) {
            for (int on = 0; on < 2; on++) {
                p.mask_on = on;
                check_sgd_case(ctx, &p, with_buffer, WITH_MASK);
                check_sgd_case(ctx, &p, with_buffer, WITH_MASK | WITH_COUNTS);
            }
            p.mask_on = 0;
            check_sgd_case(ctx, &p, with_buffer, WITH_COUNTS);
        }
    }
}

static void check_adam_case(mrt_ctx *ctx, const mrt_adam_params *p, int arrays)
{
    static float theta_cpu[OPT_N], m_cpu[OPT_N], v_cpu[OPT_N], grad[OPT_N];
    static float theta_k[OPT_N], m_k[OPT_N], v_k[OPT_N];
    static float mask[OPT_N], counts_cpu[OPT_N], counts_k[OPT_N];
    mrt_rng data = {43, 0};
    char name[256];
    mrt_adam_params q = *p;

    for (int64_t i = 0; i < OPT_N; i++) {
        mask[i] = arrays & MASK_NONE ? 1.0f : (float)(i % 3 == 0);
        counts_cpu[i] = counts_k[i] = (float)(i % (arrays & WIDE_COUNTS ? 5000 : 23));
    }
    q.mask = arrays & (WITH_MASK | MASK_NONE) ? mask : NULL;
    q.mask_on = arrays & MASK_NONE ? 0 : p->mask_on;
    q.counts = arrays & (WITH_COUNTS | WIDE_COUNTS) ? counts_cpu : NULL;
    fill_uniform(&data, theta_cpu, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, grad, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, m_cpu, OPT_N, -0.1f, 0.1f);
    fill_uniform(&data, v_cpu, OPT_N, 0.0f, 0.01f);
    memcpy(theta_k, theta_cpu, sizeof theta_k);
    memcpy(m_k, m_cpu, sizeof m_k);
    memcpy(v_k, v_cpu, sizeof v_k);
    if (mrt_adam_update(ctx, theta_cpu, p->update_moments ? grad : NULL, m_cpu, v_cpu, OPT_N,
                        &q) != MRT_OK) {
        printf("FAIL adam: the CPU backend failed: %s\n", mrt_error_message());
        failures++;
        return;
    }
    const mrt_cuda_adam_factors f = mrt_cuda_adam_factors_for(p);
    for (int64_t i = 0; i < OPT_N; i++) {
        if (q.mask != NULL && (mask[i] != 0.0f) != (q.mask_on != 0))
            continue;
        float step_size = f.step_size, bias2_sqrt = f.bias2_sqrt;
        if (q.counts != NULL && !mrt_adam_count(&counts_k[i], q, &step_size, &bias2_sqrt))
            continue;
        mrt_adam_element(&theta_k[i], p->update_moments ? &grad[i] : NULL, &m_k[i], &v_k[i], q,
                         step_size, bias2_sqrt, f.decay);
    }
    snprintf(name, sizeof name, "adam decoupled=%d wd=%g step=%lld update_moments=%d apply=%d "
             "arrays=%d mask_on=%d", p->decoupled, p->weight_decay, (long long)p->step,
             p->update_moments, p->apply, arrays, q.mask_on);
    compare(name, theta_k, theta_cpu, OPT_N);
    compare("  ... its m", m_k, m_cpu, OPT_N);
    compare("  ... its v", v_k, v_cpu, OPT_N);
    if (q.counts != NULL)
        compare("  ... its counts", counts_k, counts_cpu, OPT_N);
}

static void check_adam(mrt_ctx *ctx)
{
    const float decays[] = {0.0f, 0.01f};
    const int64_t steps[] = {1, 7};

    for (int decoupled = 0; decoupled < 2; decoupled++)
    for (int d = 0; d < 2; d++)
    for (int s = 0; s < 2; s++)
    for (int update = 0; update < 2; update++)
    for (int apply = 0; apply < 2; apply++) {
        if (!update && !apply)
            continue;
        mrt_adam_params p;
        memset(&p, 0, sizeof p);
        p.lr = 1e-3f;
        p.beta1 = 0.9;
        p.beta2 = 0.999;
        p.eps = 1e-8f;
        p.weight_decay = decays[d];
        p.decoupled = decoupled;
        p.step = steps[s];
        p.update_moments = update;
        p.apply = apply;
        check_adam_case(ctx, &p, 0);
        if (s == 1) {
            for (int on = 0; on < 2; on++) {
                p.mask_on = on;
                check_adam_case(ctx, &p, WITH_MASK);
                check_adam_case(ctx, &p, WITH_MASK | WITH_COUNTS);
            }
            p.mask_on = 0;
            check_adam_case(ctx, &p, WITH_COUNTS);
            check_adam_case(ctx, &p, WIDE_COUNTS);
            check_adam_case(ctx, &p, MASK_NONE | WITH_COUNTS);
        }
    }
}

static void check_average(mrt_ctx *ctx)
{
    static float a[OPT_N], b[OPT_N], c[OPT_N], want[OPT_N], got[OPT_N];
    mrt_rng data = {44, 0};

    fill_uniform(&data, a, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, b, OPT_N, -1.0f, 1.0f);
    fill_uniform(&data, c, OPT_N, -1.0f, 1.0f);
    const float *srcs[3] = {a, b, c};
    if (mrt_average(ctx, want, srcs, 3, OPT_N) != MRT_OK) {
        printf("FAIL average: the CPU backend failed: %s\n", mrt_error_message());
        failures++;
        return;
    }
    for (int64_t i = 0; i < OPT_N; i++)
        got[i] = mrt_average_element(srcs, 3, i);
    compare("average of 3 buffers", got, want, OPT_N);
}

/* ---- pooling ------------------------------------------------------------- */

static void check_pool_case(mrt_ctx *ctx, int kh, int kw, int sh, int sw, int ph, int pw,
                            int include_pad, int with_nan)
{
    enum { N = 2, C = 3, H = 7, W = 9 };
    mrt_pool2d_params p = {kh, kw, sh, sw, ph, pw, include_pad, 0, 0};
    const int64_t oh = mrt_conv2d_out_size(H, kh, sh, ph, 1);
    const int64_t ow = mrt_conv2d_out_size(W, kw, sw, pw, 1);
    const int64_t xs[4] = {N, C, H, W}, ys[4] = {N, C, oh, ow};
    const int64_t nx = N * C * H * W, ny = N * C * oh * ow;
    float *buf = (float *)calloc((size_t)(4 * nx + 4 * ny), sizeof(float));
    float *x = buf, *dx_cpu = x + nx, *dx_k = dx_cpu + nx, *y_cpu = dx_k + nx;
    float *y_k = y_cpu + ny, *dy = y_k + ny;
    mrt_rng data = {45, 0};
    char name[200];

    fill_ties(&data, x, nx);
    fill_uniform(&data, dy, ny, -1.0f, 1.0f);
    if (with_nan) {
        x[10] = NAN;
        x[11] = NAN;
        x[40] = -INFINITY;
    }
    mrt_tensor tx = tensor_of(x, 4, xs), tdx = tensor_of(dx_cpu, 4, xs);
    mrt_tensor ty = tensor_of(y_cpu, 4, ys), tdy = tensor_of(dy, 4, ys);
    mrt_cuda_pool_shape s = {N, C, H, W, oh, ow, kh, kw, sh, sw, ph, pw, include_pad, 0};

    snprintf(name, sizeof name, "maxpool %dx%d stride %dx%d pad %dx%d%s", kh, kw, sh, sw, ph,
             pw, with_nan ? " with NaN" : "");
    if (mrt_maxpool2d_forward(ctx, &p, &tx, &ty) != MRT_OK ||
        mrt_maxpool2d_backward(ctx, &p, &tdy, &tx, &ty, &tdx) != MRT_OK) {
        printf("FAIL %s: the CPU backend failed: %s\n", name, mrt_error_message());
        failures++;
        free(buf);
        return;
    }
    for (int64_t i = 0; i < ny; i++)
        y_k[i] = mrt_maxpool_forward_at(s, x, i);
    for (int64_t i = 0; i < nx; i++)
        dx_k[i] = mrt_maxpool_backward_at(s, dy, x, y_cpu, i);
    compare(name, y_k, y_cpu, ny);
    compare("  ... its backward", dx_k, dx_cpu, nx);

    snprintf(name, sizeof name, "avgpool %dx%d stride %dx%d pad %dx%d count_include_pad %d",
             kh, kw, sh, sw, ph, pw, include_pad);
    if (mrt_avgpool2d_forward(ctx, &p, &tx, &ty) != MRT_OK ||
        mrt_avgpool2d_backward(ctx, &p, &tdy, &tdx) != MRT_OK) {
        printf("FAIL %s: the CPU backend failed: %s\n", name, mrt_error_message());
        failures++;
        free(buf);
        return;
    }
    for (int64_t i = 0; i < ny; i++)
        y_k[i] = mrt_avgpool_forward_at(s, x, i);
    for (int64_t i = 0; i < nx; i++)
        dx_k[i] = mrt_avgpool_backward_at(s, dy, i);
    compare(name, y_k, y_cpu, ny);
    compare("  ... its backward", dx_k, dx_cpu, nx);
    free(buf);
}

static void check_pool(mrt_ctx *ctx)
{
    for (int include_pad = 0; include_pad < 2; include_pad++) {
        check_pool_case(ctx, 3, 3, 2, 2, 1, 1, include_pad, 0);
        check_pool_case(ctx, 2, 2, 2, 2, 0, 0, include_pad, 0);
        check_pool_case(ctx, 3, 2, 1, 1, 1, 1, include_pad, 0);
        check_pool_case(ctx, 5, 3, 2, 1, 2, 0, include_pad, 0);
    }
    check_pool_case(ctx, 3, 3, 1, 1, 1, 1, 1, 1);
}

/* ---- transforms ---------------------------------------------------------- */

static void check_resize_case(mrt_ctx *ctx, int64_t h, int64_t w, int64_t oh, int64_t ow)
{
    const int64_t planes = 4, xs[4] = {2, 2, h, w}, ys[4] = {2, 2, oh, ow};
    float *x = (float *)malloc((size_t)(planes * h * w) * sizeof(float));
    float *y_cpu = (float *)malloc((size_t)(planes * oh * ow) * sizeof(float));
    float *y_k = (float *)malloc((size_t)(planes * oh * ow) * sizeof(float));
    mrt_rng data = {46, 0};
    char name[128];

    fill_uniform(&data, x, planes * h * w, -3.0f, 3.0f);
    mrt_tensor tx = tensor_of(x, 4, xs), ty = tensor_of(y_cpu, 4, ys);
    snprintf(name, sizeof name, "resize %lldx%lld to %lldx%lld", (long long)h, (long long)w,
             (long long)oh, (long long)ow);
    if (mrt_resize_bilinear(ctx, &tx, &ty) != MRT_OK) {
        printf("FAIL %s: the CPU backend failed: %s\n", name, mrt_error_message());
        failures++;
    } else {
        for (int64_t k = 0; k < planes * oh * ow; k++)
            y_k[k] = mrt_resize_at(x, h, w, oh, ow, k);
        compare(name, y_k, y_cpu, planes * oh * ow);
    }
    free(x);
    free(y_cpu);
    free(y_k);
}

static void check_crop(mrt_ctx *ctx)
{
    enum { N = 3, C = 2, H = 6, W = 5, OH = 4, OW = 7 };
    const int64_t xs[4] = {N, C, H, W}, ys[4] = {N, C, OH, OW};
    const int32_t top[N] = {-2, 0, 3}, left[N] = {1, -3, 0};
    const uint8_t flip[N] = {1, 0, 1};
    float x[N * C * H * W], y_cpu[N * C * OH * OW], y_k[N * C * OH * OW];
    mrt_rng data = {47, 0};

    fill_uniform(&data, x, N * C * H * W, -1.0f, 1.0f);
    mrt_tensor tx = tensor_of(x, 4, xs), ty = tensor_of(y_cpu, 4, ys);
    if (mrt_crop_flip(ctx, &tx, top, left, flip, &ty) != MRT_OK) {
        printf("FAIL crop_flip: the CPU backend failed: %s\n", mrt_error_message());
        failures++;
        return;
    }
    for (int64_t k = 0; k < N * C * OH * OW; k++)
        y_k[k] = mrt_crop_at(x, C, H, W, top, left, flip, OH, OW, k);
    compare("crop_flip with negative offsets and flips", y_k, y_cpu, N * C * OH * OW);
}

int main(void)
{
    mrt_ctx *ctx = mrt_ctx_new(MRT_CPU);

    if (ctx == NULL) {
        printf("FAIL: no CPU context: %s\n", mrt_error_message());
        return 1;
    }
    check_normals();
    check_sgd(ctx);
    check_adam(ctx);
    check_average(ctx);
    check_pool(ctx);
    check_resize_case(ctx, 7, 9, 13, 5);
    check_resize_case(ctx, 32, 32, 224, 224);
    check_resize_case(ctx, 9, 9, 9, 9);
    check_crop(ctx);
    mrt_ctx_free(ctx);
    printf("%d failed\n", failures);
    return failures > 0 ? 1 : 0;
}
