/*
 * cuda_alloc.c: the caching allocator behind mrt_alloc(MRT_CUDA, ...).
 *
 * cudaMalloc and cudaFree synchronize the device and cost far more than a
 * training step can afford, so freed blocks stay with the process in free
 * lists, one per size class, and the next request of that class takes one
 * back. Sizes round up to 512 bytes, then to a quarter of their power of two
 * (640, 768, 896, 1024, 1280, ...), so a block wastes under 25%. A training
 * loop that repeats its requests stops calling cudaMalloc after its first
 * step. Blocks go back to CUDA only when cudaMalloc runs out of memory
 * (then every cached block is freed and the request retried) or through
 * mrt_cuda_empty_cache.
 *
 * Reuse is safe without events because all work of a context runs on one
 * stream in issue order (see cuda_common.h): a block freed on the host while
 * kernels still read it is only handed out to work queued after them. With
 * two or more live contexts that no longer holds, so free then waits for the
 * device first.
 *
 * The allocator is one per process, guarded by a mutex: the backend table's
 * alloc and free take no context.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_common.h"

#define SMALLEST_BLOCK 512
#define SIZE_CLASSES 256
#define LIVE_BUCKETS 4096

typedef struct block {
    void *ptr;
    size_t size;
    int size_class;
    struct block *next;
} block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_lists[SIZE_CLASSES];
static block *live[LIVE_BUCKETS];     /* handed-out blocks by pointer hash */
static block *spare_nodes;            /* block records not in use */
static int contexts_open;
static int64_t malloc_calls, bytes_reserved, bytes_live, bytes_cached;

/* Rounds nbytes up to its size class; fails for sizes beyond the classes. */
static int size_class_of(size_t nbytes, size_t *rounded, int *size_class)
{
    if (nbytes <= SMALLEST_BLOCK) {
        *rounded = SMALLEST_BLOCK;
        *size_class = 0;
        return MRT_OK;
    }
    /* 2^e < nbytes <= 2^(e+1), with e >= 9; classes step by 2^(e-2). */
    int e = 63 - __builtin_clzll((unsigned long long)(nbytes - 1));
    size_t step = (size_t)1 << (e - 2);
    size_t quarters = (nbytes - ((size_t)1 << e) + step - 1) / step;   /* 1..4 */
    int cls = 1 + (e - 9) * 4 + (int)(quarters - 1);

    if (cls >= SIZE_CLASSES)
        return MRT_EINVAL;
    *rounded = ((size_t)1 << e) + quarters * step;
    *size_class = cls;
    return MRT_OK;
}

static size_t bucket_of(const void *ptr)
{
    uint64_t h = (uint64_t)(uintptr_t)ptr >> 8;   /* cudaMalloc aligns to 256 bytes */
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 52) % LIVE_BUCKETS;
}

static block *node_new(void)
{
    block *b = spare_nodes;

    if (b != NULL) {
        spare_nodes = b->next;
        return b;
    }
    return malloc(sizeof *b);
}

static void node_release(block *b)
{
    b->next = spare_nodes;
    spare_nodes = b;
}

/* Frees every cached block; the caller holds the lock. */
static int release_cached_locked(void)
{
    int status = MRT_OK;
    /* Work queued before a block was freed may still read it. */
    cudaError_t synced = cudaDeviceSynchronize();

    if (synced != cudaSuccess)
        return mrt_cuda_fail_runtime(synced, "cudaDeviceSynchronize", __FILE__, __LINE__);

    for (int c = 0; c < SIZE_CLASSES; c++) {
        while (free_lists[c] != NULL) {
            block *b = free_lists[c];
            cudaError_t err = cudaFree(b->ptr);
            if (err != cudaSuccess && status == MRT_OK)
                status = mrt_cuda_fail_runtime(err, "cudaFree", __FILE__, __LINE__);
            free_lists[c] = b->next;
            bytes_reserved -= (int64_t)b->size;
            bytes_cached -= (int64_t)b->size;
            node_release(b);
        }
    }
    return status;
}

/* A new block from cudaMalloc, emptying the cache and retrying once when memory is short. */
static block *malloc_block(size_t rounded, int size_class)
{
    void *ptr = NULL;
    cudaError_t err = cudaMalloc(&ptr, rounded);

    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();    /* clear it so that the next launch check does not report it */
        if (release_cached_locked() != MRT_OK)
            mrt_log(MRT_LOG_WARN, "mrt_alloc: emptying the CUDA cache failed: %s",
                    mrt_error_message());
        err = cudaMalloc(&ptr, rounded);
    }
    if (err != cudaSuccess) {
        cudaGetLastError();
        mrt_cuda_fail_runtime(err, "cudaMalloc", __FILE__, __LINE__);
        return NULL;
    }
    block *b = node_new();
    if (b == NULL) {
        err = cudaFree(ptr);
        if (err != cudaSuccess)
            mrt_log(MRT_LOG_WARN, "mrt_alloc: cudaFree failed: %s (status %d)",
                    cudaGetErrorString(err), (int)err);
        mrt_fail(MRT_ENOMEM, "mrt_alloc: out of host memory for the CUDA block table");
        return NULL;
    }
    b->ptr = ptr;
    b->size = rounded;
    b->size_class = size_class;
    malloc_calls++;
    bytes_reserved += (int64_t)rounded;
    return b;
}

void *mrt_cuda_alloc(int64_t nbytes)
{
    size_t rounded;
    int size_class;
    int64_t in_use;
    block *b;

    if (nbytes < 0 || size_class_of((size_t)nbytes, &rounded, &size_class) != MRT_OK) {
        mrt_fail(MRT_ENOMEM, "mrt_alloc: %lld bytes is beyond what the CUDA allocator serves",
                 (long long)nbytes);
        return NULL;
    }
    pthread_mutex_lock(&lock);
    b = free_lists[size_class];
    if (b != NULL) {
        free_lists[size_class] = b->next;
        bytes_cached -= (int64_t)b->size;
    } else {
        b = malloc_block(rounded, size_class);
    }
    if (b != NULL) {
        size_t k = bucket_of(b->ptr);
        b->next = live[k];
        live[k] = b;
        bytes_live += (int64_t)b->size;
    }
    in_use = bytes_live;
    pthread_mutex_unlock(&lock);
    if (b == NULL) {
        /* The message names the failed call; add the sizes that explain it. */
        char why[768];
        snprintf(why, sizeof why, "%s", mrt_error_message());
        mrt_fail(MRT_ENOMEM, "mrt_alloc: %lld bytes on cuda: %s; %lld bytes in use",
                 (long long)nbytes, why, (long long)in_use);
        return NULL;
    }
    return b->ptr;
}

/* Takes ptr's block out of the live table; NULL when ptr is not one of ours. */
static block *unlink_live(void *ptr)
{
    block **link = &live[bucket_of(ptr)];

    while (*link != NULL && (*link)->ptr != ptr)
        link = &(*link)->next;
    block *b = *link;
    if (b != NULL)
        *link = b->next;
    return b;
}

void mrt_cuda_free(void *ptr)
{
    if (ptr == NULL)
        return;
    pthread_mutex_lock(&lock);
    block *b = unlink_live(ptr);
    if (b == NULL) {
        pthread_mutex_unlock(&lock);
        mrt_log(MRT_LOG_ERROR, "mrt_free: %p was not allocated by the CUDA backend; ignored", ptr);
        return;
    }
    if (contexts_open > 1) {
        cudaError_t err = cudaDeviceSynchronize();
        if (err != cudaSuccess)
            mrt_log(MRT_LOG_WARN, "mrt_free: cudaDeviceSynchronize failed: %s (status %d)",
                    cudaGetErrorString(err), (int)err);
    }
    bytes_live -= (int64_t)b->size;
    bytes_cached += (int64_t)b->size;
    b->next = free_lists[b->size_class];
    free_lists[b->size_class] = b;
    pthread_mutex_unlock(&lock);
}

void mrt_cuda_alloc_context_opened(void)
{
    pthread_mutex_lock(&lock);
    contexts_open++;
    pthread_mutex_unlock(&lock);
}

void mrt_cuda_alloc_context_closed(void)
{
    pthread_mutex_lock(&lock);
    contexts_open--;
    pthread_mutex_unlock(&lock);
}

void mrt_cuda_memory_stats(int64_t counts[4])
{
    pthread_mutex_lock(&lock);
    counts[0] = malloc_calls;
    counts[1] = bytes_reserved;
    counts[2] = bytes_live;
    counts[3] = bytes_cached;
    pthread_mutex_unlock(&lock);
}

int mrt_cuda_empty_cache(void)
{
    pthread_mutex_lock(&lock);
    int status = release_cached_locked();
    pthread_mutex_unlock(&lock);
    return status;
}
