/*
 * dnnl_matmul.c: the CPU backend's row-major matrix product with bias and
 * accumulation, c := op(a) op(b) + bias + beta*c, through oneDNN's matmul
 * primitive, or mrt_cpu_sgemm where the build has no oneDNN.
 *
 * The primitive picks its kernel at run time (brgemm kernels on AVX-512)
 * and packs its operands in a scratchpad that mrt provides, where
 * dnnl_sgemm allocates packing buffers on every call. On the perceptron's
 * layers it reaches about 200 GFLOP/s on both cores of the development
 * machine (docs/performance.md). Each distinct problem (sizes, transposes,
 * bias, beta) gets a cached plan, as in dnnl_conv.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

/* c := beta*c + bias, the product of an empty inner dimension. */
static void empty_product(int64_t m, int64_t n, const float *bias, float beta, float *c)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const float old = beta == 0.0f ? 0.0f : beta * c[i * n + j];
            c[i * n + j] = old + (bias != NULL ? bias[j] : 0.0f);
        }
}

/* The product through mrt_cpu_sgemm: c starts as bias (or beta*c) and sgemm adds onto it. */
static int sgemm_product(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         const float *a, const float *b, const float *bias, float beta, float *c)
{
    if (bias != NULL) {
        empty_product(m, n, bias, beta, c);
        beta = 1.0f;
    }
    return mrt_cpu_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, trans_a ? m : k, b, trans_b ? k : n,
                         beta, c, n);
}

#ifdef MRT_HAVE_DNNL

#include "dnnl_common.h"

typedef struct matmul_key {
    int64_t m, n, k;
    int32_t trans_a, trans_b, has_bias;
    float beta;
} matmul_key;

typedef struct matmul_plan {
    matmul_key key;
    unsigned long last_use;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, bias, scratch;   /* handles set per call */
    size_t scratch_bytes;
} matmul_plan;

static void plan_free(matmul_plan *plan)
{
    if (plan == NULL)
        return;
    dnnl_memory_t mems[] = {plan->a, plan->b, plan->c, plan->bias, plan->scratch};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i] != NULL)
            dnnl_memory_destroy(mems[i]);
    if (plan->prim != NULL)
        dnnl_primitive_destroy(plan->prim);
    if (plan->pd != NULL)
        dnnl_primitive_desc_destroy(plan->pd);
    free(plan);
}

void mrt_dnnl_matmul_plans_free(mrt_dnnl_state *st)
{
    for (int i = 0; i < st->matmul_count; i++)
        plan_free(st->matmul_plans[i]);
    st->matmul_count = 0;
}

/* A row-major [rows, cols] matrix, or the transpose of a row-major [cols, rows] one. */
static int matrix_md(const char *fn, int64_t rows, int64_t cols, int transposed,
                     dnnl_memory_desc_t *md)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {transposed ? 1 : cols, transposed ? rows : 1};

    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides));
    return MRT_OK;
}

/* The primitive attributes of a plan: the user scratchpad, and beta*c as a sum post-op. */
static int plan_attr(const char *fn, mrt_dnnl_state *st, float beta, dnnl_primitive_attr_t *out)
{
    dnnl_post_ops_t ops;

    MRT_DNNL_TRY(fn, dnnl_primitive_attr_clone(out, st->attr));
    if (beta == 0.0f)
        return MRT_OK;
    MRT_DNNL_TRY(fn, dnnl_post_ops_create(&ops));
    dnnl_status_t status = dnnl_post_ops_append_sum(ops, beta);
    if (status == dnnl_success)
        status = dnnl_primitive_attr_set_post_ops(*out, ops);
    dnnl_post_ops_destroy(ops);
    MRT_DNNL_TRY(fn, status);
    return MRT_OK;
}

static int plan_init(const char *fn, mrt_dnnl_state *st, matmul_plan *plan)
{
    const matmul_key *k = &plan->key;
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr;

    MRT_TRY(matrix_md(fn, k->m, k->k, k->trans_a, &a_md));
    MRT_TRY(matrix_md(fn, k->k, k->n, k->trans_b, &b_md));
    MRT_TRY(matrix_md(fn, k->m, k->n, 0, &c_md));
    MRT_TRY(matrix_md(fn, 1, k->n, 0, &bias_md));
    MRT_DNNL_TRY(fn, dnnl_matmul_desc_init(&desc, &a_md, &b_md, k->has_bias ? &bias_md : NULL,
                                           &c_md));
    MRT_TRY(plan_attr(fn, st, k->beta, &attr));
    dnnl_status_t status = dnnl_primitive_desc_create(&plan->pd, &desc, attr, st->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    MRT_DNNL_TRY(fn, status);
    MRT_DNNL_TRY(fn, dnnl_primitive_create(&plan->prim, plan->pd));
    MRT_TRY(mrt_dnnl_scratch_new(fn, st, plan->pd, &plan->scratch, &plan->scratch_bytes));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &a_md, &plan->a));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &b_md, &plan->b));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &c_md, &plan->c));
    return mrt_dnnl_memory_new(fn, st, &bias_md, &plan->bias);
}

/* Returns the plan for key, creating it (and evicting the least recently used) when new. */
static int plan_get(const char *fn, mrt_dnnl_state *st, const matmul_key *k, matmul_plan **out)
{
    st->clock++;
    for (int i = 0; i < st->matmul_count; i++) {
        if (memcmp(&st->matmul_plans[i]->key, k, sizeof *k) == 0) {
            st->matmul_plans[i]->last_use = st->clock;
            *out = st->matmul_plans[i];
            return MRT_OK;
        }
    }
    matmul_plan *plan = calloc(1, sizeof *plan);
    if (plan == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    plan->key = *k;
    int status = plan_init(fn, st, plan);
    if (status != MRT_OK) {
        plan_free(plan);
        return status;
    }
    int slot = st->matmul_count;
    if (slot == MRT_DNNL_MAX_PLANS) {
        slot = 0;
        for (int i = 1; i < st->matmul_count; i++)
            if (st->matmul_plans[i]->last_use < st->matmul_plans[slot]->last_use)
                slot = i;
        plan_free(st->matmul_plans[slot]);
    } else {
        st->matmul_count++;
    }
    plan->last_use = st->clock;
    st->matmul_plans[slot] = plan;
    *out = plan;
    return MRT_OK;
}

static int dnnl_product(mrt_ctx *ctx, const char *fn, const matmul_key *k, const float *a,
                        const float *b, const float *bias, float *c)
{
    mrt_dnnl_state *st;
    matmul_plan *plan = NULL;
    dnnl_exec_arg_t args[5];
    int nargs = 0;

    MRT_TRY(mrt_dnnl_state_of(ctx, fn, &st));
    MRT_TRY(plan_get(fn, st, k, &plan));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->a, a));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->b, b));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->c, c));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, plan->a};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, plan->b};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, plan->c};
    if (bias != NULL) {
        MRT_TRY(mrt_dnnl_set_handle(fn, plan->bias, bias));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, plan->bias};
    }
    MRT_TRY(mrt_dnnl_bind_scratch(fn, ctx, plan->scratch, plan->scratch_bytes, args, &nargs));
    return mrt_dnnl_run(fn, st, plan->prim, nargs, args);
}

#endif

int mrt_cpu_matmul(mrt_ctx *ctx, const char *fn, int trans_a, int trans_b, int64_t m, int64_t n,
                   int64_t k, const float *a, const float *b, const float *bias, float beta,
                   float *c)
{
    if (m == 0 || n == 0)
        return MRT_OK;
    if (k == 0) {
        empty_product(m, n, bias, beta, c);
        return MRT_OK;
    }
#ifdef MRT_HAVE_DNNL
    matmul_key key;
    memset(&key, 0, sizeof key);     /* the padding bytes take part in memcmp */
    key.m = m;
    key.n = n;
    key.k = k;
    key.trans_a = trans_a != 0;
    key.trans_b = trans_b != 0;
    key.has_bias = bias != NULL;
    key.beta = beta;
    int status = dnnl_product(ctx, fn, &key, a, b, bias, c);
    if (status != MRT_ENYI)
        return status;
    mrt_error_clear();
#else
    (void)ctx;
    (void)fn;
#endif
    return sgemm_product(trans_a, trans_b, m, n, k, a, b, bias, beta, c);
}
