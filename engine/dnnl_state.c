/*
 * dnnl_state.c: the oneDNN state of a CPU context (engine, stream,
 * attributes, caches of primitives) and the helpers that dnnl_conv.c and
 * dnnl_matmul.c share to run primitives.
 *
 * Every primitive runs with a user-managed scratchpad in the context's
 * scratch slot MRT_DNNL_SLOT, so mrt allocates nothing per call. NOTE:
 * dnnl_primitive_execute itself builds a small map of its arguments on the
 * heap on each call (oneDNN 2.6), a few allocations of tens of bytes.
 */
#include <stdlib.h>

#include "cpu.h"

#ifdef MRT_HAVE_DNNL

#include <dnnl_debug.h>

#include "dnnl_common.h"

int mrt_dnnl_fail(const char *fn, const char *call, dnnl_status_t status)
{
    if (status == dnnl_unimplemented)
        return mrt_fail(MRT_ENYI, "NYI: %s: oneDNN has no kernel for this problem (%s)", fn,
                        call);
    if (status == dnnl_out_of_memory)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory in oneDNN %s", fn, call);
    return mrt_fail(MRT_EINVAL, "%s: oneDNN %s failed with status %s", fn, call,
                    dnnl_status2str(status));
}

void mrt_cpu_dnnl_free(void *state)
{
    mrt_dnnl_state *st = state;

    if (st == NULL)
        return;
    mrt_dnnl_conv_plans_free(st);
    mrt_dnnl_matmul_plans_free(st);
    if (st->attr != NULL)
        dnnl_primitive_attr_destroy(st->attr);
    if (st->stream != NULL)
        dnnl_stream_destroy(st->stream);
    if (st->engine != NULL)
        dnnl_engine_destroy(st->engine);
    free(st);
}

int mrt_dnnl_state_of(mrt_ctx *ctx, const char *fn, mrt_dnnl_state **out)
{
    void **slot = mrt_cpu_dnnl_slot(ctx);
    mrt_dnnl_state *st = *slot;

    if (st == NULL) {
        st = calloc(1, sizeof *st);
        if (st == NULL)
            return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
        *slot = st;
        MRT_DNNL_TRY(fn, dnnl_engine_create(&st->engine, dnnl_cpu, 0));
        MRT_DNNL_TRY(fn, dnnl_stream_create(&st->stream, st->engine, dnnl_stream_default_flags));
        MRT_DNNL_TRY(fn, dnnl_primitive_attr_create(&st->attr));
        MRT_DNNL_TRY(fn, dnnl_primitive_attr_set_scratchpad_mode(st->attr,
                                                                 dnnl_scratchpad_mode_user));
    }
    *out = st;
    return MRT_OK;
}

int mrt_dnnl_memory_new(const char *fn, mrt_dnnl_state *st, const dnnl_memory_desc_t *md,
                        dnnl_memory_t *out)
{
    MRT_DNNL_TRY(fn, dnnl_memory_create(out, md, st->engine, DNNL_MEMORY_NONE));
    return MRT_OK;
}

int mrt_dnnl_set_handle(const char *fn, dnnl_memory_t m, const void *data)
{
    MRT_DNNL_TRY(fn, dnnl_memory_set_data_handle(m, (void *)data));
    return MRT_OK;
}

int mrt_dnnl_run(const char *fn, mrt_dnnl_state *st, dnnl_primitive_t prim, int nargs,
                 const dnnl_exec_arg_t *args)
{
    MRT_DNNL_TRY(fn, dnnl_primitive_execute(prim, st->stream, nargs, args));
    MRT_DNNL_TRY(fn, dnnl_stream_wait(st->stream));
    return MRT_OK;
}

int mrt_dnnl_scratch_new(const char *fn, mrt_dnnl_state *st, const_dnnl_primitive_desc_t pd,
                         dnnl_memory_t *out, size_t *bytes)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);

    *out = NULL;
    *bytes = md != NULL ? dnnl_memory_desc_get_size(md) : 0;
    if (*bytes == 0)
        return MRT_OK;
    return mrt_dnnl_memory_new(fn, st, md, out);
}

int mrt_dnnl_bind_scratch(const char *fn, mrt_ctx *ctx, dnnl_memory_t scratch, size_t bytes,
                          dnnl_exec_arg_t *args, int *nargs)
{
    if (scratch == NULL)
        return MRT_OK;
    float *memory = mrt_cpu_scratch(ctx, MRT_DNNL_SLOT, (int64_t)(bytes + 3) / 4);
    if (memory == NULL)
        return MRT_ENOMEM;
    MRT_TRY(mrt_dnnl_set_handle(fn, scratch, memory));
    args[*nargs].arg = DNNL_ARG_SCRATCHPAD;
    args[*nargs].memory = scratch;
    (*nargs)++;
    return MRT_OK;
}

int mrt_cpu_dnnl_available(void)
{
    return 1;
}

#else /* without oneDNN */

void mrt_cpu_dnnl_free(void *state)
{
    (void)state;
}

int mrt_cpu_dnnl_available(void)
{
    return 0;
}

#endif
