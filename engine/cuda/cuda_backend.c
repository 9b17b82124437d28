/*
 * cuda_backend.c: libmrt_cuda.so's entry point mrt_cuda_backend(), the
 * backend table, CUDA contexts (stream, cuDNN and cuBLAS handles, scratch),
 * memory copies, and the messages for failed CUDA, cuDNN and cuBLAS calls.
 *
 * engine/core.c loads this library on demand and calls mrt_cuda_backend().
 * When no GPU is available, that returns NULL with a message naming the
 * failed call and what to do instead.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.h"

/*
 * cuBLAS workspace per context: the size cuBLAS's documentation of
 * cublasSetWorkspace recommends for Hopper (4 MiB for older GPUs).
 */
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)

#define NO_GPU_HINT "run on a machine with an NVIDIA GPU or use --device cpu"

/* ---- error messages ----------------------------------------------------- */

/* The device ordinal for messages; -1 when even that query fails. */
static int current_gpu(void)
{
    int gpu = -1;

    if (cudaGetDevice(&gpu) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return gpu;
}

/* Length of the function name that starts a call's source text. */
static int name_length(const char *call)
{
    return (int)strcspn(call, "( ");
}

static int fail_call(int mrt_status, const char *call, const char *text, int status,
                     const char *file, int line)
{
    return mrt_fail(mrt_status, "%.*s failed on cuda:%d: %s (status %d) [%s:%d]",
                    name_length(call), call, current_gpu(), text, status, file, line);
}

int mrt_cuda_fail_runtime(cudaError_t status, const char *call, const char *file, int line)
{
    int code = status == cudaErrorMemoryAllocation ? MRT_ENOMEM : MRT_EDEVICE;
    return fail_call(code, call, cudaGetErrorString(status), (int)status, file, line);
}

int mrt_cuda_fail_cudnn(cudnnStatus_t status, const char *call, const char *file, int line)
{
    char detail[512], text[640];
    int code = status == CUDNN_STATUS_ALLOC_FAILED ? MRT_ENOMEM : MRT_EDEVICE;

    /* cuDNN 9 keeps a longer explanation of its last failure; add it when there is one. */
    cudnnGetLastErrorString(detail, sizeof detail);
    if (detail[0] != '\0')
        snprintf(text, sizeof text, "%s: %s", cudnnGetErrorString(status), detail);
    else
        snprintf(text, sizeof text, "%s", cudnnGetErrorString(status));
    return fail_call(code, call, text, (int)status, file, line);
}

int mrt_cuda_fail_cublas(cublasStatus_t status, const char *call, const char *file, int line)
{
    char text[256];
    int code = status == CUBLAS_STATUS_ALLOC_FAILED ? MRT_ENOMEM : MRT_EDEVICE;

    snprintf(text, sizeof text, "%s, %s", cublasGetStatusName(status),
             cublasGetStatusString(status));
    return fail_call(code, call, text, (int)status, file, line);
}

int mrt_cuda_check_launch(const char *kernel, const char *file, int line)
{
    cudaError_t status = cudaGetLastError();

    if (status == cudaSuccess)
        return MRT_OK;
    return mrt_fail(status == cudaErrorMemoryAllocation ? MRT_ENOMEM : MRT_EDEVICE,
                    "launch of %s failed on cuda:%d: %s (status %d) [%s:%d]", kernel,
                    current_gpu(), cudaGetErrorString(status), (int)status, file, line);
}

int mrt_cuda_fail_launcher(const char *launcher, const char *problem, long long value)
{
    return mrt_fail(MRT_EINVAL, "%s: %s (got %lld)", launcher, problem, value);
}

/* Logs a failed clean-up call: clean-up has no caller to return the status to. */
static void warn_cleanup(const char *call, const char *text, int status)
{
    mrt_log(MRT_LOG_WARN, "mrt_ctx_free: %s failed on cuda:%d: %s (status %d)", call,
            current_gpu(), text, status);
}

static void check_cleanup_runtime(cudaError_t status, const char *call)
{
    if (status != cudaSuccess)
        warn_cleanup(call, cudaGetErrorString(status), (int)status);
}

static void check_cleanup_cudnn(cudnnStatus_t status, const char *call)
{
    if (status != CUDNN_STATUS_SUCCESS)
        warn_cleanup(call, cudnnGetErrorString(status), (int)status);
}

/* ---- contexts ----------------------------------------------------------- */

/* Creates the stream, handles, workspace and host buffer of a context. */
static int impl_setup(mrt_cuda_impl *impl)
{
    MRT_CUDA_CHECK(cudaGetDevice(&impl->gpu));
    MRT_CUDA_CHECK(cudaStreamCreate(&impl->stream));
    MRT_CUDNN_CHECK(cudnnCreate(&impl->cudnn));
    MRT_CUDNN_CHECK(cudnnSetStream(impl->cudnn, impl->stream));
    MRT_CUBLAS_CHECK(cublasCreate(&impl->cublas));
    MRT_CUBLAS_CHECK(cublasSetStream(impl->cublas, impl->stream));
    MRT_CUBLAS_CHECK(cublasSetPointerMode(impl->cublas, CUBLAS_POINTER_MODE_HOST));
    /* Atomics in cuBLAS reductions would make results vary from run to run. */
    MRT_CUBLAS_CHECK(cublasSetAtomicsMode(impl->cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
    MRT_CUBLAS_CHECK(cublasSetMathMode(impl->cublas, CUBLAS_DEFAULT_MATH));
    impl->cublas_tf32 = 0;
    /* An own workspace keeps cuBLAS from allocating one per stream behind our back. */
    impl->cublas_workspace = mrt_cuda_alloc((int64_t)CUBLAS_WORKSPACE_BYTES);
    if (impl->cublas_workspace == NULL)
        return MRT_ENOMEM;
    MRT_CUBLAS_CHECK(
        cublasSetWorkspace(impl->cublas, impl->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    MRT_CUDA_CHECK(cudaMallocHost(&impl->host, MRT_CUDA_HOST_BYTES));
    MRT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&impl->bn_x));
    MRT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&impl->bn_param));
    return MRT_OK;
}

/* Frees what impl_setup made, also after a partial setup. */
static void impl_release(mrt_cuda_impl *impl)
{
    /* Queued work may still use the buffers about to go back to the cache. */
    if (impl->stream != NULL)
        check_cleanup_runtime(cudaStreamSynchronize(impl->stream), "cudaStreamSynchronize");
    mrt_cuda_conv_cache_free(impl);
    if (impl->bn_x != NULL)
        check_cleanup_cudnn(cudnnDestroyTensorDescriptor(impl->bn_x),
                            "cudnnDestroyTensorDescriptor");
    if (impl->bn_param != NULL)
        check_cleanup_cudnn(cudnnDestroyTensorDescriptor(impl->bn_param),
                            "cudnnDestroyTensorDescriptor");
    if (impl->cudnn != NULL)
        check_cleanup_cudnn(cudnnDestroy(impl->cudnn), "cudnnDestroy");
    if (impl->cublas != NULL) {
        cublasStatus_t status = cublasDestroy(impl->cublas);
        if (status != CUBLAS_STATUS_SUCCESS)
            warn_cleanup("cublasDestroy", cublasGetStatusName(status), (int)status);
    }
    mrt_cuda_free(impl->cublas_workspace);
    mrt_cuda_free(impl->workspace);
    for (int i = 0; i < MRT_CUDA_SCRATCH_SLOTS; i++)
        mrt_cuda_free(impl->scratch[i]);
    if (impl->host != NULL)
        check_cleanup_runtime(cudaFreeHost(impl->host), "cudaFreeHost");
    if (impl->stream != NULL)
        check_cleanup_runtime(cudaStreamDestroy(impl->stream), "cudaStreamDestroy");
    free(impl);
}

static int cuda_ctx_init(mrt_ctx *ctx)
{
    mrt_cuda_impl *impl = calloc(1, sizeof *impl);

    if (impl == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_ctx_new: out of memory");
    int status = impl_setup(impl);
    if (status != MRT_OK) {
        /* Keep the setup failure's message: the release only logs. */
        impl_release(impl);
        return status;
    }
    ctx->impl = impl;
    mrt_cuda_alloc_context_opened();
    return MRT_OK;
}

static void cuda_ctx_free(mrt_ctx *ctx)
{
    if (ctx->impl == NULL)
        return;
    impl_release(ctx->impl);
    ctx->impl = NULL;
    mrt_cuda_alloc_context_closed();
}

static int cuda_sync(mrt_ctx *ctx)
{
    mrt_cuda_impl *impl = ctx->impl;

    MRT_CUDA_CHECK(cudaStreamSynchronize(impl->stream));
    return MRT_OK;
}

void *mrt_cuda_scratch(mrt_ctx *ctx, int slot, size_t nbytes)
{
    mrt_cuda_impl *impl = ctx->impl;

    if (slot < 0 || slot >= MRT_CUDA_SCRATCH_SLOTS) {
        mrt_fail(MRT_EINVAL, "mrt_cuda_scratch: slot %d out of range 0..%d", slot,
                 MRT_CUDA_SCRATCH_SLOTS - 1);
        return NULL;
    }
    if (nbytes > impl->scratch_bytes[slot] || impl->scratch[slot] == NULL) {
        /* Stream order keeps the old buffer intact for the work already queued on it. */
        mrt_cuda_free(impl->scratch[slot]);
        impl->scratch[slot] = mrt_cuda_alloc((int64_t)(nbytes > 0 ? nbytes : 1));
        impl->scratch_bytes[slot] = impl->scratch[slot] != NULL ? nbytes : 0;
    }
    return impl->scratch[slot];
}

int mrt_cuda_read_back(mrt_ctx *ctx, const void *device_ptr, size_t nbytes)
{
    mrt_cuda_impl *impl = ctx->impl;

    if (nbytes > MRT_CUDA_HOST_BYTES)
        return mrt_fail(MRT_EINVAL, "mrt_cuda_read_back: %zu bytes exceed the %d-byte host buffer",
                        nbytes, MRT_CUDA_HOST_BYTES);
    MRT_CUDA_CHECK(
        cudaMemcpyAsync(impl->host, device_ptr, nbytes, cudaMemcpyDeviceToHost, impl->stream));
    MRT_CUDA_CHECK(cudaStreamSynchronize(impl->stream));
    return MRT_OK;
}

/* ---- memory copies ------------------------------------------------------ */

/*
 * cudaMemcpy runs on the legacy default stream, which waits for the work
 * already queued on every context's (blocking) stream, and which that later
 * work waits for. Copies to the host return when the data is there.
 */
static int cuda_memcpy(int dst_device, void *dst, int src_device, const void *src,
                       int64_t nbytes)
{
    enum cudaMemcpyKind kind;

    if (dst_device == MRT_CPU && src_device == MRT_CPU)
        kind = cudaMemcpyHostToHost;
    else if (dst_device == MRT_CPU)
        kind = cudaMemcpyDeviceToHost;
    else if (src_device == MRT_CPU)
        kind = cudaMemcpyHostToDevice;
    else
        kind = cudaMemcpyDeviceToDevice;
    MRT_CUDA_CHECK(cudaMemcpy(dst, src, (size_t)nbytes, kind));
    return MRT_OK;
}

/* ---- the table ---------------------------------------------------------- */

static mrt_backend cuda_table;
static pthread_once_t cuda_table_once = PTHREAD_ONCE_INIT;

static void build_table(void)
{
    cuda_table.name = "cuda";
    cuda_table.device = MRT_CUDA;
    cuda_table.alloc = mrt_cuda_alloc;
    cuda_table.free = mrt_cuda_free;
    cuda_table.ctx_init = cuda_ctx_init;
    cuda_table.ctx_free = cuda_ctx_free;
    cuda_table.sync = cuda_sync;
    cuda_table.memcpy = cuda_memcpy;
    mrt_cuda_register_tensor_ops(&cuda_table);
    mrt_cuda_register_layer_ops(&cuda_table);
    mrt_cuda_register_optim_ops(&cuda_table);
    mrt_cuda_register_cudnn_ops(&cuda_table);
    mrt_cuda_register_cublas_ops(&cuda_table);
    mrt_cuda_register_transform_ops(&cuda_table);
}

const mrt_backend *mrt_cuda_backend(void)
{
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);

    if (status != cudaSuccess) {
        cudaGetLastError();
        mrt_fail(MRT_EDEVICE, "cudaGetDeviceCount failed: %s (status %d); " NO_GPU_HINT,
                 cudaGetErrorString(status), (int)status);
        return NULL;
    }
    if (count < 1) {
        mrt_fail(MRT_EDEVICE, "cudaGetDeviceCount found no CUDA device; " NO_GPU_HINT);
        return NULL;
    }
    size_t cudnn_version = cudnnGetVersion();
    if (cudnn_version / 10000 != CUDNN_MAJOR) {
        mrt_fail(MRT_EDEVICE, "cuDNN %zu is loaded but libmrt_cuda.so was built against cuDNN "
                 "%d; install cuDNN %d or rebuild with 'make'", cudnn_version, CUDNN_VERSION,
                 CUDNN_MAJOR);
        return NULL;
    }
    pthread_once(&cuda_table_once, build_table);
    return &cuda_table;
}
