/*
 * core.c: error messages, logging, thread count, engine contexts, device
 * memory and the loading of the CUDA backend library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mrt_internal.h"

#define MRT_VERSION "0.1.0"

static _Thread_local char error_message[1024];

static mrt_log_fn log_fn;
static void *log_userdata;

int mrt_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return status;
}

const char *mrt_error_message(void)
{
    return error_message;
}

void mrt_error_clear(void)
{
    error_message[0] = '\0';
}

void mrt_log_set(mrt_log_fn fn, void *userdata)
{
    log_fn = fn;
    log_userdata = userdata;
}

void mrt_log(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (log_fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_fn(level, line, log_userdata);
}

const char *mrt_version(void)
{
    return MRT_VERSION;
}

/* ---- CUDA backend library ------------------------------------------------ */

static const mrt_backend *cuda_backend;

/* Opens libmrt_cuda.so from the folder that contains this library. */
static void *open_cuda_library(char *why, size_t whylen)
{
    Dl_info info;
    char path[4096];
    void *handle;

    if (dladdr((void *)open_cuda_library, &info) == 0 || info.dli_fname == NULL) {
        snprintf(why, whylen, "cannot locate libmrt.so to find libmrt_cuda.so beside it");
        return NULL;
    }
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (slash != NULL)
        snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "libmrt_cuda.so");
    else
        snprintf(path, sizeof path, "libmrt_cuda.so");
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL)
        snprintf(why, whylen, "%s", dlerror());
    return handle;
}

int mrt_cuda_init(void)
{
    char why[1024];
    void *handle;
    mrt_cuda_backend_fn get;

    if (cuda_backend != NULL)
        return MRT_OK;
    handle = open_cuda_library(why, sizeof why);
    if (handle == NULL)
        return mrt_fail(MRT_EDEVICE,
                        "CUDA backend not available (%s); build it with 'make' on a machine "
                        "with nvcc, or use --device cpu",
                        why);
    get = (mrt_cuda_backend_fn)dlsym(handle, "mrt_cuda_backend");
    if (get == NULL) {
        dlclose(handle);
        return mrt_fail(MRT_EDEVICE, "libmrt_cuda.so has no symbol mrt_cuda_backend; rebuild it");
    }
    /* The CUDA library probes the driver and fails with its own message when it finds no GPU. */
    const mrt_backend *backend = get();
    if (backend == NULL)
        return MRT_EDEVICE;
    cuda_backend = backend;
    return MRT_OK;
}

int mrt_cuda_available(void)
{
    if (mrt_cuda_init() == MRT_OK)
        return 1;
    mrt_error_clear();
    return 0;
}

static const mrt_backend *backend_for(int device)
{
    if (device == MRT_CPU)
        return mrt_cpu_backend();
    if (device == MRT_CUDA) {
        if (mrt_cuda_init() != MRT_OK)
            return NULL;
        return cuda_backend;
    }
    mrt_fail(MRT_EINVAL, "unknown device %d (expected 0 for cpu or 1 for cuda)", device);
    return NULL;
}

/* ---- contexts and memory ------------------------------------------------- */

mrt_ctx *mrt_ctx_new(int device)
{
    const mrt_backend *backend = backend_for(device);
    mrt_ctx *ctx;

    if (backend == NULL)
        return NULL;
    ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        mrt_fail(MRT_ENOMEM, "mrt_ctx_new: out of memory");
        return NULL;
    }
    ctx->backend = backend;
    ctx->device = device;
    if (backend->ctx_init != NULL && backend->ctx_init(ctx) != MRT_OK) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

void mrt_ctx_free(mrt_ctx *ctx)
{
    if (ctx == NULL)
        return;
    if (ctx->backend->ctx_free != NULL)
        ctx->backend->ctx_free(ctx);
    free(ctx);
}

int mrt_ctx_device(const mrt_ctx *ctx)
{
    return ctx->device;
}

int mrt_ctx_set_deterministic(mrt_ctx *ctx, int on)
{
    ctx->deterministic = on != 0;
    return MRT_OK;
}

int mrt_ctx_set_allow_tf32(mrt_ctx *ctx, int on)
{
    ctx->allow_tf32 = on != 0;
    return MRT_OK;
}

int mrt_ctx_sync(mrt_ctx *ctx)
{
    if (ctx->backend->sync == NULL)
        return MRT_OK;
    return ctx->backend->sync(ctx);
}

void *mrt_alloc(int device, int64_t nbytes)
{
    const mrt_backend *backend = backend_for(device);
    void *ptr;

    if (backend == NULL)
        return NULL;
    if (nbytes < 0) {
        mrt_fail(MRT_EINVAL, "mrt_alloc: negative size %lld", (long long)nbytes);
        return NULL;
    }
    /* Cleared so that a message left by an earlier failure is never reported for this one. */
    mrt_error_clear();
    ptr = backend->alloc(nbytes > 0 ? nbytes : 1);
    /* The CUDA backend sets its own message, naming the device and the CUDA error. */
    if (ptr == NULL && error_message[0] == '\0')
        mrt_fail(MRT_ENOMEM, "mrt_alloc: out of memory allocating %lld bytes on %s",
                 (long long)nbytes, backend->name);
    return ptr;
}

void mrt_free(int device, void *ptr)
{
    const mrt_backend *backend;

    if (ptr == NULL)
        return;
    backend = device == MRT_CUDA ? cuda_backend : mrt_cpu_backend();
    if (backend != NULL)
        backend->free(ptr);
}

int mrt_memcpy(int dst_device, void *dst, int src_device, const void *src, int64_t nbytes)
{
    const mrt_backend *backend;

    if (nbytes < 0)
        return mrt_fail(MRT_EINVAL, "mrt_memcpy: negative size %lld", (long long)nbytes);
    if (nbytes == 0 || dst == src)
        return MRT_OK;
    if (dst_device == MRT_CPU && src_device == MRT_CPU) {
        memmove(dst, src, (size_t)nbytes);
        return MRT_OK;
    }
    backend = backend_for(dst_device == MRT_CPU ? src_device : dst_device);
    if (backend == NULL)
        return MRT_EDEVICE;
    return backend->memcpy(dst_device, dst, src_device, src, nbytes);
}
