/*
 * idx.c: IDX array files (the MNIST and Fashion-MNIST format), raw or
 * gzip-compressed, and the element-type helpers that all file formats of
 * mrt_io.h share.
 *
 * zlib's gz* functions read raw and gzip files alike. Data is read in
 * growing chunks, so a header that claims more data than the file contains
 * fails as truncated before much memory is allocated. Bytes that zlib finds
 * after the end of a gzip stream are ignored by zlib itself (as gunzip
 * does), so "trailing bytes" means decompressed data beyond the last
 * element.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "include/mrt_io.h"
#include "mrt_internal.h"

enum { IDX_MAX_DIMS = 8 };

/* First allocation for the data; it doubles up to the size the header states. */
static const int64_t IDX_FIRST_CHUNK = (int64_t)16 << 20;

/* ---- element types ------------------------------------------------------- */

int mrt_io_dtype_size(int dtype)
{
    switch (dtype) {
    case MRT_IO_U8:
    case MRT_IO_I8:
    case MRT_IO_BOOL:
        return 1;
    case MRT_IO_U16:
    case MRT_IO_I16:
    case MRT_IO_F16:
    case MRT_IO_BF16:
        return 2;
    case MRT_IO_U32:
    case MRT_IO_I32:
    case MRT_IO_F32:
        return 4;
    case MRT_IO_U64:
    case MRT_IO_I64:
    case MRT_IO_F64:
        return 8;
    default:
        return 0;
    }
}

const char *mrt_io_dtype_name(int dtype)
{
    static const char *const names[] = {"u8",  "i8",  "u16",  "i16", "u32", "i32", "u64",
                                        "i64", "f16", "bf16", "f32", "f64", "bool"};

    if (dtype < 0 || dtype >= (int)(sizeof names / sizeof names[0]))
        return "unknown";
    return names[dtype];
}

void mrt_io_free(void *ptr)
{
    free(ptr);
}

/* ---- IDX type codes and byte order ---------------------------------------- */

static int dtype_from_code(int code)
{
    switch (code) {
    case 0x08: return MRT_IO_U8;
    case 0x09: return MRT_IO_I8;
    case 0x0B: return MRT_IO_I16;
    case 0x0C: return MRT_IO_I32;
    case 0x0D: return MRT_IO_F32;
    case 0x0E: return MRT_IO_F64;
    default: return -1;
    }
}

static int code_from_dtype(int dtype)
{
    switch (dtype) {
    case MRT_IO_U8: return 0x08;
    case MRT_IO_I8: return 0x09;
    case MRT_IO_I16: return 0x0B;
    case MRT_IO_I32: return 0x0C;
    case MRT_IO_F32: return 0x0D;
    case MRT_IO_F64: return 0x0E;
    default: return -1;
    }
}

static int host_is_big_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;

    memcpy(&first, &one, 1);
    return first == 0;
}

/* Reverses the bytes of each of count elements of width bytes, in place. */
static void swap_bytes(unsigned char *p, int64_t count, int width)
{
    if (width == 1 || host_is_big_endian())
        return;
    for (int64_t i = 0; i < count; i++, p += width)
        for (int a = 0, b = width - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static void shape_string(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = 0;

    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ",%lld" : "%lld",
                                 (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* ---- reading -------------------------------------------------------------- */

/* Reads up to n bytes and returns the count read; sets *failed on a zlib error. */
static int64_t gz_read_full(gzFile f, void *buf, int64_t n, int *failed)
{
    int64_t done = 0;

    *failed = 0;
    while (done < n) {
        int64_t want = n - done;
        if (want > (1 << 30))
            want = 1 << 30;
        int got = gzread(f, (char *)buf + done, (unsigned)want);
        if (got < 0)
            *failed = 1;
        if (got <= 0)
            break;
        done += got;
    }
    return done;
}

/*
 * The zlib error text when the stream is corrupt, or NULL when it just
 * ended. zlib prefixes the text with "<path>: ", which is dropped.
 */
static const char *gz_corruption(gzFile f, const char *path)
{
    int code = Z_OK;
    const char *text = gzerror(f, &code);
    size_t n = strlen(path);

    if (code == Z_OK || code == Z_BUF_ERROR)
        return NULL;
    if (strncmp(text, path, n) == 0 && text[n] == ':' && text[n + 1] == ' ')
        text += n + 2;
    return text;
}

/* Reads n header bytes; what is missing is described by `expected`. */
static int read_header_bytes(gzFile f, const char *path, void *buf, int n, const char *expected)
{
    int failed;
    int64_t got = gz_read_full(f, buf, n, &failed);
    const char *corrupt = failed ? gz_corruption(f, path) : NULL;

    if (corrupt != NULL)
        return mrt_fail(MRT_EIO, "mrt_idx_read: '%s': corrupt gzip data (zlib: %s)", path,
                        corrupt);
    if (got < n)
        return mrt_fail(MRT_EIO, "mrt_idx_read: '%s': truncated header (expected %s)", path,
                        expected);
    return MRT_OK;
}

static int read_header(gzFile f, const char *path, mrt_idx_array *out)
{
    static const char *fn = "mrt_idx_read";
    unsigned char head[4], dims[4 * IDX_MAX_DIMS];
    char expected[64];

    MRT_TRY(read_header_bytes(f, path, head, 4, "4 bytes of magic number"));
    if (head[0] != 0 || head[1] != 0)
        return mrt_fail(MRT_EIO, "%s: '%s': invalid magic number 0x%02x%02x%02x%02x (expected "
                        "0x0000 then a type code and a dimension count)", fn, path, head[0],
                        head[1], head[2], head[3]);
    out->dtype = dtype_from_code(head[2]);
    if (out->dtype < 0)
        return mrt_fail(MRT_EIO, "%s: '%s': unknown type code 0x%02x (expected 0x08 u8, 0x09 i8, "
                        "0x0B i16, 0x0C i32, 0x0D f32 or 0x0E f64)", fn, path, head[2]);
    out->ndim = head[3];
    if (out->ndim < 1 || out->ndim > IDX_MAX_DIMS)
        return mrt_fail(MRT_EIO, "%s: '%s': %d dimensions (expected 1 to %d)", fn, path,
                        (int)out->ndim, IDX_MAX_DIMS);
    snprintf(expected, sizeof expected, "%d sizes of 4 bytes", (int)out->ndim);
    MRT_TRY(read_header_bytes(f, path, dims, 4 * out->ndim, expected));
    int64_t limit = INT64_MAX / mrt_io_dtype_size(out->dtype);
    out->numel = 1;
    for (int i = 0; i < out->ndim; i++) {
        const unsigned char *d = dims + 4 * i;
        out->shape[i] = ((int64_t)d[0] << 24) | ((int64_t)d[1] << 16) | (d[2] << 8) | d[3];
        if (out->shape[i] != 0 && out->numel > limit / out->shape[i]) {
            char buf[128];
            shape_string(out->shape, i + 1, buf, sizeof buf);
            return mrt_fail(MRT_EIO, "%s: '%s': sizes %s overflow (expected at most 2^63 bytes "
                            "of data)", fn, path, buf);
        }
        out->numel *= out->shape[i];
    }
    return MRT_OK;
}

/* Reads the elements in growing chunks so a lying header costs little memory. */
static int read_data(gzFile f, const char *path, mrt_idx_array *out)
{
    static const char *fn = "mrt_idx_read";
    const int width = mrt_io_dtype_size(out->dtype);
    const int64_t total = out->numel * width;
    int64_t capacity = total < IDX_FIRST_CHUNK ? total : IDX_FIRST_CHUNK;
    int64_t done = 0;
    char shape[128];

    shape_string(out->shape, out->ndim, shape, sizeof shape);
    out->data = malloc(capacity > 0 ? (size_t)capacity : 1);
    if (out->data == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: '%s': out of memory for %lld bytes", fn, path,
                        (long long)capacity);
    while (done < total) {
        if (done == capacity) {
            int64_t grown = capacity > total / 2 ? total : 2 * capacity;
            void *p = realloc(out->data, (size_t)grown);
            if (p == NULL)
                return mrt_fail(MRT_ENOMEM, "%s: '%s': out of memory for %lld bytes", fn, path,
                                (long long)grown);
            out->data = p;
            capacity = grown;
        }
        int failed;
        int64_t got = gz_read_full(f, (char *)out->data + done, capacity - done, &failed);
        done += got;
        const char *corrupt = failed ? gz_corruption(f, path) : NULL;
        if (corrupt != NULL)
            return mrt_fail(MRT_EIO, "%s: '%s': corrupt gzip data (zlib: %s)", fn, path, corrupt);
        if (done < capacity)
            return mrt_fail(MRT_EIO, "%s: '%s': truncated data (expected %lld bytes for %s %s, "
                            "got %lld)", fn, path, (long long)total, mrt_io_dtype_name(out->dtype),
                            shape, (long long)done);
    }
    swap_bytes(out->data, out->numel, width);
    return MRT_OK;
}

static int check_end(gzFile f, const char *path, const mrt_idx_array *out)
{
    unsigned char extra;
    char shape[128];
    int failed;
    int64_t got = gz_read_full(f, &extra, 1, &failed);
    const char *corrupt = failed ? gz_corruption(f, path) : NULL;

    if (corrupt != NULL)
        return mrt_fail(MRT_EIO, "mrt_idx_read: '%s': corrupt gzip data (zlib: %s)", path,
                        corrupt);
    if (got == 0)
        return MRT_OK;
    shape_string(out->shape, out->ndim, shape, sizeof shape);
    return mrt_fail(MRT_EIO, "mrt_idx_read: '%s': trailing bytes after the %lld bytes of %s %s "
                    "(expected the file to end there)", path,
                    (long long)(out->numel * mrt_io_dtype_size(out->dtype)),
                    mrt_io_dtype_name(out->dtype), shape);
}

int mrt_idx_read(const char *path, mrt_idx_array *out)
{
    gzFile f;
    int status;
    struct stat info;

    if (out == NULL || path == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_idx_read: missing path or output array");
    memset(out, 0, sizeof *out);
    /* gzopen opens a directory, and reading it then fails as corrupt gzip data. */
    if (stat(path, &info) == 0 && S_ISDIR(info.st_mode))
        return mrt_fail(MRT_EIO, "mrt_idx_read: '%s' is a directory (expected an IDX file)",
                        path);
    errno = 0;
    f = gzopen(path, "rb");
    if (f == NULL)
        return mrt_fail(MRT_EIO, "mrt_idx_read: cannot open '%s': %s", path,
                        errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1 << 17);
    status = read_header(f, path, out);
    if (status == MRT_OK)
        status = read_data(f, path, out);
    if (status == MRT_OK)
        status = check_end(f, path, out);
    gzclose_r(f);
    if (status != MRT_OK)
        mrt_idx_free(out);
    return status;
}

void mrt_idx_free(mrt_idx_array *a)
{
    if (a == NULL)
        return;
    free(a->data);
    a->data = NULL;
}

/* ---- writing -------------------------------------------------------------- */

static int check_array(const mrt_idx_array *a)
{
    static const char *fn = "mrt_idx_write";
    int64_t numel = 1;

    if (code_from_dtype(a->dtype) < 0)
        return mrt_fail(MRT_EINVAL, "%s: element type %s (expected u8, i8, i16, i32, f32 or f64)",
                        fn, mrt_io_dtype_name(a->dtype));
    if (a->ndim < 1 || a->ndim > IDX_MAX_DIMS)
        return mrt_fail(MRT_EINVAL, "%s: %d dimensions (expected 1 to %d)", fn, (int)a->ndim,
                        IDX_MAX_DIMS);
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] < 0 || a->shape[i] > UINT32_MAX)
            return mrt_fail(MRT_EINVAL, "%s: size %lld of dimension %d (expected 0 to 2^32-1)",
                            fn, (long long)a->shape[i], i + 1);
        numel *= a->shape[i];
    }
    if (numel != a->numel)
        return mrt_fail(MRT_EINVAL, "%s: numel %lld does not match the shape (%lld elements)", fn,
                        (long long)a->numel, (long long)numel);
    if (numel > 0 && a->data == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing data", fn);
    return MRT_OK;
}

static int write_all(gzFile f, const void *buf, int64_t n)
{
    return gzwrite(f, buf, (unsigned)n) == (int)n ? MRT_OK : MRT_EIO;
}

/* Writes header and big-endian data through a small conversion buffer. */
static int write_contents(gzFile f, const mrt_idx_array *a)
{
    unsigned char head[4 + 4 * IDX_MAX_DIMS], chunk[1 << 16];
    const int width = mrt_io_dtype_size(a->dtype);
    const int64_t per_chunk = (int64_t)sizeof chunk / width;

    head[0] = head[1] = 0;
    head[2] = (unsigned char)code_from_dtype(a->dtype);
    head[3] = (unsigned char)a->ndim;
    for (int i = 0; i < a->ndim; i++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * i + b] = (unsigned char)(a->shape[i] >> (24 - 8 * b));
    MRT_TRY(write_all(f, head, 4 + 4 * a->ndim));
    for (int64_t i = 0; i < a->numel; i += per_chunk) {
        int64_t count = a->numel - i < per_chunk ? a->numel - i : per_chunk;
        memcpy(chunk, (const unsigned char *)a->data + i * width, (size_t)(count * width));
        swap_bytes(chunk, count, width);
        MRT_TRY(write_all(f, chunk, count * width));
    }
    return MRT_OK;
}

int mrt_idx_write(const char *path, const mrt_idx_array *a, int gzip)
{
    char tmp[4096];
    gzFile f;
    int status, closed;

    if (path == NULL || a == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_idx_write: missing path or array");
    MRT_TRY(check_array(a));
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return mrt_fail(MRT_EINVAL, "mrt_idx_write: path too long: '%s'", path);
    errno = 0;
    /* "T" writes the stream uncompressed ("transparent"); "6" is gzip's default level. */
    f = gzopen(tmp, gzip ? "wb6" : "wbT");
    if (f == NULL)
        return mrt_fail(MRT_EIO, "mrt_idx_write: cannot create '%s': %s", tmp,
                        errno ? strerror(errno) : "out of memory");
    status = write_contents(f, a);
    int errnum = errno;
    closed = gzclose_w(f);
    if (status == MRT_OK && closed != Z_OK)
        status = MRT_EIO;
    if (status == MRT_OK && rename(tmp, path) != 0) {
        errnum = errno;
        status = MRT_EIO;
    }
    if (status != MRT_OK) {
        unlink(tmp);
        return mrt_fail(MRT_EIO, "mrt_idx_write: writing '%s' failed: %s", path,
                        errnum ? strerror(errnum) : "zlib error");
    }
    return MRT_OK;
}
