/*
 * safetensors.c: reading and writing safetensors files (the format of
 * Hugging Face and timm checkpoints).
 *
 * Opening parses and validates the whole header; tensors are read one at a
 * time with buffered stdio (no mmap), converted to float32. Headers longer
 * than 100 MB or with more than MRT_JSON_MAX_ITEMS (1000000) entries are
 * rejected as corrupt. The writer stores float32 only and pads the header
 * with spaces to a multiple of 8 bytes, so the data buffer starts 8-byte
 * aligned.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "include/mrt_io.h"
#include "json.h"
#include "mrt_internal.h"

static const int64_t MAX_HEADER_BYTES = 100000000;

typedef struct st_tensor {
    char *name;
    int dtype;
    int ndim;
    int64_t shape[8];
    int64_t numel;
    int64_t begin, end;    /* byte range in the data buffer */
} st_tensor;

struct mrt_safetensors {
    char *path;
    FILE *file;
    int64_t data_start;    /* file offset of the data buffer */
    int64_t data_size;
    st_tensor *tensors;
    int64_t count;
    char **meta_keys;
    char **meta_values;
    int64_t meta_count;
};

static const struct {
    const char *name;
    int dtype;
} DTYPES[] = {
    {"BOOL", MRT_IO_BOOL}, {"U8", MRT_IO_U8},    {"I8", MRT_IO_I8},     {"U16", MRT_IO_U16},
    {"I16", MRT_IO_I16},   {"U32", MRT_IO_U32},  {"I32", MRT_IO_I32},   {"U64", MRT_IO_U64},
    {"I64", MRT_IO_I64},   {"F16", MRT_IO_F16},  {"BF16", MRT_IO_BF16}, {"F32", MRT_IO_F32},
    {"F64", MRT_IO_F64},
};

static const char *dtype_label(int dtype)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].dtype == dtype)
            return DTYPES[i].name;
    return "unknown";
}

static void shape_string(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");

    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ",%lld" : "%lld",
                                 (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *out = malloc(n);

    if (out != NULL)
        memcpy(out, s, n);
    return out;
}

void mrt_safetensors_close(mrt_safetensors *st)
{
    if (st == NULL)
        return;
    if (st->file != NULL)
        fclose(st->file);
    for (int64_t i = 0; i < st->count; i++)
        free(st->tensors[i].name);
    for (int64_t i = 0; i < st->meta_count; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->path);
    free(st);
}

/* ---- header validation ---------------------------------------------------- */

static int parse_dtype(const mrt_safetensors *st, const char *tensor, const mrt_json *v,
                       int *dtype)
{
    static const char *fn = "mrt_safetensors_open";

    if (v == NULL || v->type != MRT_JSON_STRING)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s' has no \"dtype\" string", fn, st->path,
                        tensor);
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(v->string, DTYPES[i].name) == 0) {
            *dtype = DTYPES[i].dtype;
            return MRT_OK;
        }
    if (strncmp(v->string, "F8_", 3) == 0)
        return mrt_fail(MRT_ENYI, "NYI: %s: '%s': tensor '%s' has dtype %s (8-bit floats are "
                        "not supported)", fn, st->path, tensor, v->string);
    return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s' has unknown dtype '%s' (expected BOOL, U8, "
                    "I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32 or F64)", fn, st->path,
                    tensor, v->string);
}

/* Fails unless v is an array of n non-negative integers (n < 0: any count up to max). */
static int check_int_list(const mrt_safetensors *st, const char *tensor, const char *field,
                          const mrt_json *v, int64_t n, int64_t max)
{
    static const char *fn = "mrt_safetensors_open";

    if (v == NULL || v->type != MRT_JSON_ARRAY)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s' has no \"%s\" array", fn, st->path,
                        tensor, field);
    if (n >= 0 && v->count != n)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s' has %lld entries in \"%s\" (expected "
                        "%lld)", fn, st->path, tensor, (long long)v->count, field, (long long)n);
    if (v->count > max)
        return mrt_fail(MRT_ENYI, "NYI: %s: '%s': tensor '%s' has %lld dimensions (at most "
                        "%lld are supported)", fn, st->path, tensor, (long long)v->count,
                        (long long)max);
    for (int64_t i = 0; i < v->count; i++)
        if (v->items[i].type != MRT_JSON_INTEGER || v->items[i].integer < 0)
            return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': entry %lld of \"%s\" is not a "
                            "non-negative integer", fn, st->path, tensor, (long long)i + 1, field);
    return MRT_OK;
}

/* Fills t from its header entry and checks its byte range against the buffer. */
static int parse_tensor(const mrt_safetensors *st, const mrt_json *entry, st_tensor *t)
{
    static const char *fn = "mrt_safetensors_open";
    const mrt_json *shape = mrt_json_get(entry, "shape");
    const mrt_json *offsets = mrt_json_get(entry, "data_offsets");
    char buf[200];

    if (entry->type != MRT_JSON_OBJECT)
        return mrt_fail(MRT_EIO, "%s: '%s': entry '%s' is not an object", fn, st->path,
                        entry->key);
    MRT_TRY(parse_dtype(st, entry->key, mrt_json_get(entry, "dtype"), &t->dtype));
    MRT_TRY(check_int_list(st, entry->key, "shape", shape, -1, 8));
    MRT_TRY(check_int_list(st, entry->key, "data_offsets", offsets, 2, 2));
    t->ndim = (int)shape->count;
    t->numel = 1;
    const int64_t width = mrt_io_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        t->shape[i] = shape->items[i].integer;
        if (t->shape[i] != 0 && t->numel > INT64_MAX / width / t->shape[i])
            return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': shape overflows int64", fn, st->path,
                            entry->key);
        t->numel *= t->shape[i];
    }
    t->begin = offsets->items[0].integer;
    t->end = offsets->items[1].integer;
    shape_string(t->shape, t->ndim, buf, sizeof buf);
    if (t->end < t->begin || t->end - t->begin != t->numel * width)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': data_offsets [%lld,%lld] (expected a "
                        "range of %lld bytes for %s %s)", fn, st->path, entry->key,
                        (long long)t->begin, (long long)t->end, (long long)(t->numel * width),
                        dtype_label(t->dtype), buf);
    if (t->end > st->data_size)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': data_offsets [%lld,%lld] exceed the "
                        "data buffer of %lld bytes (file truncated?)", fn, st->path, entry->key,
                        (long long)t->begin, (long long)t->end, (long long)st->data_size);
    t->name = copy_string(entry->key);
    if (t->name == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    return MRT_OK;
}

static int parse_metadata(mrt_safetensors *st, const mrt_json *meta)
{
    static const char *fn = "mrt_safetensors_open";

    if (meta->type != MRT_JSON_OBJECT)
        return mrt_fail(MRT_EIO, "%s: '%s': \"__metadata__\" is not an object", fn, st->path);
    st->meta_keys = calloc((size_t)meta->count + 1, sizeof *st->meta_keys);
    st->meta_values = calloc((size_t)meta->count + 1, sizeof *st->meta_values);
    if (st->meta_keys == NULL || st->meta_values == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    for (int64_t i = 0; i < meta->count; i++) {
        const mrt_json *item = &meta->items[i];
        if (item->type != MRT_JSON_STRING)
            return mrt_fail(MRT_EIO, "%s: '%s': metadata '%s' is not a string", fn, st->path,
                            item->key);
        st->meta_keys[i] = copy_string(item->key);
        st->meta_values[i] = copy_string(item->string);
        st->meta_count = i + 1;
        if (st->meta_keys[i] == NULL || st->meta_values[i] == NULL)
            return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    }
    return MRT_OK;
}

static int compare_begin(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;

    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Fails when two non-empty byte ranges overlap. */
static int check_overlaps(const mrt_safetensors *st)
{
    st_tensor **sorted = malloc((size_t)(st->count > 0 ? st->count : 1) * sizeof *sorted);
    const st_tensor *last = NULL;
    int status = MRT_OK;

    if (sorted == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_safetensors_open: out of memory");
    for (int64_t i = 0; i < st->count; i++)
        sorted[i] = &st->tensors[i];
    qsort(sorted, (size_t)st->count, sizeof *sorted, compare_begin);
    for (int64_t i = 0; i < st->count && status == MRT_OK; i++) {
        const st_tensor *t = sorted[i];
        if (t->begin == t->end)
            continue;
        if (last != NULL && t->begin < last->end)
            status = mrt_fail(MRT_EIO, "mrt_safetensors_open: '%s': tensors '%s' [%lld,%lld] and "
                              "'%s' [%lld,%lld] overlap", st->path, last->name,
                              (long long)last->begin, (long long)last->end, t->name,
                              (long long)t->begin, (long long)t->end);
        last = t;
    }
    free(sorted);
    return status;
}

static int parse_header(mrt_safetensors *st, const mrt_json *root)
{
    if (root->type != MRT_JSON_OBJECT)
        return mrt_fail(MRT_EIO, "mrt_safetensors_open: '%s': header is not a JSON object",
                        st->path);
    st->tensors = calloc((size_t)root->count + 1, sizeof *st->tensors);
    if (st->tensors == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_safetensors_open: out of memory");
    for (int64_t i = 0; i < root->count; i++) {
        const mrt_json *entry = &root->items[i];
        if (strcmp(entry->key, "__metadata__") == 0) {
            MRT_TRY(parse_metadata(st, entry));
            continue;
        }
        MRT_TRY(parse_tensor(st, entry, &st->tensors[st->count]));
        st->count++;
    }
    return check_overlaps(st);
}

/* ---- opening -------------------------------------------------------------- */

static int read_exact(FILE *f, void *buf, int64_t n)
{
    return fread(buf, 1, (size_t)n, f) == (size_t)n ? MRT_OK : MRT_EIO;
}

/* Reads the length field and the JSON header, then validates it. */
static int read_header(mrt_safetensors *st, int64_t file_size)
{
    static const char *fn = "mrt_safetensors_open";
    unsigned char field[8];
    uint64_t length = 0;
    char error[256];

    if (file_size < 8 || read_exact(st->file, field, 8) != MRT_OK)
        return mrt_fail(MRT_EIO, "%s: '%s': truncated file of %lld bytes (expected at least the "
                        "8-byte header length)", fn, st->path, (long long)file_size);
    for (int i = 7; i >= 0; i--)
        length = (length << 8) | field[i];
    if (length < 2 || length > (uint64_t)MAX_HEADER_BYTES || (int64_t)length > file_size - 8)
        return mrt_fail(MRT_EIO, "%s: '%s': header length %llu is invalid (expected 2 to %lld "
                        "bytes and at most the %lld bytes after the length field)", fn, st->path,
                        (unsigned long long)length, (long long)MAX_HEADER_BYTES,
                        (long long)(file_size - 8));
    char *text = malloc((size_t)length);
    if (text == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory for a %llu-byte header", fn,
                        (unsigned long long)length);
    if (read_exact(st->file, text, (int64_t)length) != MRT_OK) {
        free(text);
        return mrt_fail(MRT_EIO, "%s: '%s': reading the header failed", fn, st->path);
    }
    mrt_json *root = mrt_json_parse(text, (size_t)length, error, sizeof error);
    free(text);
    if (root == NULL)
        return mrt_fail(MRT_EIO, "%s: '%s': cannot parse the JSON header (%s)", fn, st->path,
                        error);
    st->data_start = 8 + (int64_t)length;
    st->data_size = file_size - st->data_start;
    int status = parse_header(st, root);
    mrt_json_free(root);
    return status;
}

int mrt_safetensors_open(const char *path, mrt_safetensors **out)
{
    mrt_safetensors *st;
    int status;

    if (path == NULL || out == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_safetensors_open: missing path or output handle");
    *out = NULL;
    st = calloc(1, sizeof *st);
    if (st == NULL || (st->path = copy_string(path)) == NULL) {
        mrt_safetensors_close(st);
        return mrt_fail(MRT_ENOMEM, "mrt_safetensors_open: out of memory");
    }
    st->file = fopen(path, "rb");
    if (st->file == NULL) {
        status = mrt_fail(MRT_EIO, "mrt_safetensors_open: cannot open '%s': %s", path,
                          strerror(errno));
        mrt_safetensors_close(st);
        return status;
    }
    /* fopen opens a directory for reading on Linux, and its size reads as INT64_MAX. */
    struct stat info;
    if (fstat(fileno(st->file), &info) == 0 && S_ISDIR(info.st_mode)) {
        status = mrt_fail(MRT_EIO, "mrt_safetensors_open: '%s' is a directory (expected a "
                          "safetensors file)", path);
        mrt_safetensors_close(st);
        return status;
    }
    if (fseeko(st->file, 0, SEEK_END) != 0) {
        status = mrt_fail(MRT_EIO, "mrt_safetensors_open: '%s' is not a seekable file", path);
        mrt_safetensors_close(st);
        return status;
    }
    int64_t size = (int64_t)ftello(st->file);
    rewind(st->file);
    status = read_header(st, size);
    if (status != MRT_OK) {
        mrt_safetensors_close(st);
        return status;
    }
    *out = st;
    return MRT_OK;
}

/* ---- queries and reading --------------------------------------------------- */

int64_t mrt_safetensors_count(const mrt_safetensors *st)
{
    return st != NULL ? st->count : 0;
}

int64_t mrt_safetensors_find(const mrt_safetensors *st, const char *name)
{
    if (st == NULL || name == NULL)
        return -1;
    for (int64_t i = 0; i < st->count; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return i;
    return -1;
}

static int check_index(const mrt_safetensors *st, const char *fn, int64_t index)
{
    if (st == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing handle", fn);
    if (index < 0 || index >= st->count)
        return mrt_fail(MRT_EINVAL, "%s: '%s': tensor index %lld out of range 0..%lld", fn,
                        st->path, (long long)index, (long long)st->count - 1);
    return MRT_OK;
}

int mrt_safetensors_info(const mrt_safetensors *st, int64_t index, const char **name, int *dtype,
                         int *ndim, int64_t *shape)
{
    MRT_TRY(check_index(st, "mrt_safetensors_info", index));
    const st_tensor *t = &st->tensors[index];
    *name = t->name;
    *dtype = t->dtype;
    *ndim = t->ndim;
    for (int i = 0; i < 8; i++)
        shape[i] = i < t->ndim ? t->shape[i] : 0;
    return MRT_OK;
}

static uint64_t load_le(const unsigned char *p, int width)
{
    uint64_t v = 0;

    for (int i = width - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static float half_to_float(uint16_t h)
{
    int exponent = (h >> 10) & 0x1F;
    int mantissa = h & 0x3FF;
    float v;

    if (exponent == 0)
        v = ldexpf((float)mantissa, -24); /* zero or subnormal */
    else if (exponent == 31)
        v = mantissa != 0 ? NAN : INFINITY;
    else
        v = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return (h & 0x8000) ? -v : v;
}

/* Converts count little-endian elements of dtype at src to float32. */
static void convert_to_f32(int dtype, const unsigned char *src, int64_t count, float *out)
{
    const int width = mrt_io_dtype_size(dtype);

    for (int64_t i = 0; i < count; i++, src += width) {
        uint64_t bits = load_le(src, width);
        uint32_t u32;
        double f64;
        switch (dtype) {
        case MRT_IO_BOOL: out[i] = bits != 0; break;
        case MRT_IO_U8: case MRT_IO_U16: case MRT_IO_U32: case MRT_IO_U64:
            out[i] = (float)bits; break;
        case MRT_IO_I8: out[i] = (float)(int8_t)bits; break;
        case MRT_IO_I16: out[i] = (float)(int16_t)bits; break;
        case MRT_IO_I32: out[i] = (float)(int32_t)bits; break;
        case MRT_IO_I64: out[i] = (float)(int64_t)bits; break;
        case MRT_IO_F16: out[i] = half_to_float((uint16_t)bits); break;
        case MRT_IO_BF16:
            u32 = (uint32_t)bits << 16;
            memcpy(&out[i], &u32, 4);
            break;
        case MRT_IO_F32:
            u32 = (uint32_t)bits;
            memcpy(&out[i], &u32, 4);
            break;
        default: /* MRT_IO_F64 */
            memcpy(&f64, &bits, 8);
            out[i] = (float)f64;
            break;
        }
    }
}

int mrt_safetensors_read_f32(mrt_safetensors *st, int64_t index, float *out, int64_t numel)
{
    static const char *fn = "mrt_safetensors_read_f32";
    unsigned char chunk[1 << 16];

    MRT_TRY(check_index(st, fn, index));
    const st_tensor *t = &st->tensors[index];
    const int width = mrt_io_dtype_size(t->dtype);
    if (numel != t->numel)
        return mrt_fail(MRT_EINVAL, "%s: '%s': tensor '%s' has %lld elements but the output has "
                        "%lld", fn, st->path, t->name, (long long)t->numel, (long long)numel);
    if (fseeko(st->file, (off_t)(st->data_start + t->begin), SEEK_SET) != 0)
        return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': seek failed: %s", fn, st->path, t->name,
                        strerror(errno));
    const uint16_t one = 1;
    if (t->dtype == MRT_IO_F32 && *(const unsigned char *)&one == 1) {
        /* Little-endian host: the file's bytes are already the output. */
        if (read_exact(st->file, out, 4 * t->numel) != MRT_OK)
            return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': file ended within its data "
                            "(truncated since it was opened?)", fn, st->path, t->name);
        return MRT_OK;
    }
    const int64_t per_chunk = (int64_t)sizeof chunk / width;
    for (int64_t i = 0; i < t->numel; i += per_chunk) {
        int64_t count = t->numel - i < per_chunk ? t->numel - i : per_chunk;
        if (read_exact(st->file, chunk, count * width) != MRT_OK)
            return mrt_fail(MRT_EIO, "%s: '%s': tensor '%s': file ended within its data "
                            "(truncated since it was opened?)", fn, st->path, t->name);
        convert_to_f32(t->dtype, chunk, count, out + i);
    }
    return MRT_OK;
}

int64_t mrt_safetensors_metadata_count(const mrt_safetensors *st)
{
    return st != NULL ? st->meta_count : 0;
}

int mrt_safetensors_metadata(const mrt_safetensors *st, int64_t index, const char **key,
                             const char **value)
{
    if (st == NULL || index < 0 || index >= st->meta_count)
        return mrt_fail(MRT_EINVAL, "mrt_safetensors_metadata: index %lld out of range 0..%lld",
                        (long long)index, (long long)(st != NULL ? st->meta_count : 0) - 1);
    *key = st->meta_keys[index];
    *value = st->meta_values[index];
    return MRT_OK;
}

/* ---- writing -------------------------------------------------------------- */

typedef struct text {
    char *data;
    size_t len, cap;
    int failed;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *data = realloc(t->data, cap);
        if (data == NULL) {
            t->failed = 1;
            return;
        }
        t->data = data;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void put_str(text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* Appends s as a JSON string literal. */
static void put_quoted(text *t, const char *s)
{
    char esc[8];

    put(t, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(t, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(t, esc, 6);
        } else {
            put(t, s, 1);
        }
    }
    put(t, "\"", 1);
}

static int check_name(const char *what, int64_t i, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return mrt_fail(MRT_EINVAL, "mrt_safetensors_write: %s %lld is missing or empty", what,
                        (long long)i + 1);
    if (!mrt_json_valid_utf8(s))
        return mrt_fail(MRT_EINVAL, "mrt_safetensors_write: %s %lld is not valid UTF-8", what,
                        (long long)i + 1);
    return MRT_OK;
}

typedef struct named_index {
    const char *name;
    int64_t index;
} named_index;

static int compare_named(const void *a, const void *b)
{
    const named_index *x = a, *y = b;
    int order = strcmp(x->name, y->name);

    if (order != 0)
        return order;
    return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Finds the first name, in list order, that an earlier name repeats, in
 * O(n log n) by sorting. Returns its index, -1 when all names differ, or -2
 * when out of memory. The names must not be NULL.
 */
static int64_t first_repeat(const char *const *names, int64_t count)
{
    int64_t repeat = -1;

    if (count < 2)
        return -1;
    named_index *sorted = malloc((size_t)count * sizeof *sorted);
    if (sorted == NULL)
        return -2;
    for (int64_t i = 0; i < count; i++)
        sorted[i] = (named_index){names[i], i};
    qsort(sorted, (size_t)count, sizeof *sorted, compare_named);
    for (int64_t i = 1; i < count; i++)
        if (strcmp(sorted[i].name, sorted[i - 1].name) == 0 &&
            (repeat < 0 || sorted[i].index < repeat))
            repeat = sorted[i].index;
    free(sorted);
    return repeat;
}

/* Fails when a name repeats; what names the list in the message. */
static int check_unique(const char *what, const char *const *names, int64_t count)
{
    int64_t repeat = first_repeat(names, count);

    if (repeat == -2)
        return mrt_fail(MRT_ENOMEM, "mrt_safetensors_write: out of memory");
    if (repeat >= 0)
        return mrt_fail(MRT_EINVAL, "mrt_safetensors_write: duplicate %s '%s'", what,
                        names[repeat]);
    return MRT_OK;
}

/* Checks names, shapes, data and metadata keys before anything is written. */
static int check_inputs(int64_t count, const char *const *names, const int32_t *ndims,
                        const int64_t *shapes, const float *const *data, int64_t meta_count,
                        const char *const *keys, const char *const *values)
{
    static const char *fn = "mrt_safetensors_write";

    for (int64_t i = 0; i < count; i++) {
        MRT_TRY(check_name("tensor name", i, names[i]));
        if (strcmp(names[i], "__metadata__") == 0)
            return mrt_fail(MRT_EINVAL, "%s: tensor name '__metadata__' is reserved", fn);
        if (ndims[i] < 0 || ndims[i] > 8)
            return mrt_fail(MRT_EINVAL, "%s: tensor '%s' has %d dimensions (expected 0 to 8)",
                            fn, names[i], (int)ndims[i]);
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) {
            if (shapes[8 * i + d] < 0)
                return mrt_fail(MRT_EINVAL, "%s: tensor '%s' has negative size %lld", fn,
                                names[i], (long long)shapes[8 * i + d]);
            numel *= shapes[8 * i + d];
        }
        if (numel > 0 && data[i] == NULL)
            return mrt_fail(MRT_EINVAL, "%s: tensor '%s' has no data", fn, names[i]);
    }
    for (int64_t i = 0; i < meta_count; i++) {
        MRT_TRY(check_name("metadata key", i, keys[i]));
        if (values[i] == NULL || !mrt_json_valid_utf8(values[i]))
            return mrt_fail(MRT_EINVAL, "%s: metadata '%s' has a missing or non-UTF-8 value", fn,
                            keys[i]);
    }
    MRT_TRY(check_unique("tensor name", names, count));
    return check_unique("metadata key", keys, meta_count);
}

/* Builds the JSON header, padded with spaces to a multiple of 8 bytes. */
static void build_header(text *h, int64_t count, const char *const *names, const int32_t *ndims,
                         const int64_t *shapes, int64_t meta_count, const char *const *keys,
                         const char *const *values)
{
    char num[64];
    int64_t offset = 0;
    int first = 1;

    put_str(h, "{");
    if (meta_count > 0) {
        put_str(h, "\"__metadata__\":{");
        for (int64_t i = 0; i < meta_count; i++) {
            put_str(h, i ? "," : "");
            put_quoted(h, keys[i]);
            put_str(h, ":");
            put_quoted(h, values[i]);
        }
        put_str(h, "}");
        first = 0;
    }
    for (int64_t i = 0; i < count; i++) {
        int64_t numel = 1;
        put_str(h, first ? "" : ",");
        first = 0;
        put_quoted(h, names[i]);
        put_str(h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < ndims[i]; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)shapes[8 * i + d]);
            put_str(h, num);
            numel *= shapes[8 * i + d];
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%lld,%lld]}", (long long)offset,
                 (long long)(offset + 4 * numel));
        put_str(h, num);
        offset += 4 * numel;
    }
    put_str(h, "}");
    while (h->len % 8 != 0)
        put_str(h, " ");
}

static int write_file(FILE *f, const text *h, int64_t count, const int32_t *ndims,
                      const int64_t *shapes, const float *const *data)
{
    unsigned char field[8], chunk[1 << 16];
    const int64_t per_chunk = (int64_t)sizeof chunk / 4;

    for (int i = 0; i < 8; i++)
        field[i] = (unsigned char)((uint64_t)h->len >> (8 * i));
    MRT_TRY(fwrite(field, 1, 8, f) == 8 ? MRT_OK : MRT_EIO);
    MRT_TRY(fwrite(h->data, 1, h->len, f) == h->len ? MRT_OK : MRT_EIO);
    for (int64_t i = 0; i < count; i++) {
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++)
            numel *= shapes[8 * i + d];
        for (int64_t j = 0; j < numel; j += per_chunk) {
            int64_t n = numel - j < per_chunk ? numel - j : per_chunk;
            for (int64_t k = 0; k < n; k++) {
                uint32_t bits;
                memcpy(&bits, &data[i][j + k], 4);
                for (int b = 0; b < 4; b++)
                    chunk[4 * k + b] = (unsigned char)(bits >> (8 * b));
            }
            MRT_TRY(fwrite(chunk, 1, (size_t)(4 * n), f) == (size_t)(4 * n) ? MRT_OK : MRT_EIO);
        }
    }
    return MRT_OK;
}

int mrt_safetensors_write(const char *path, int64_t count, const char *const *names,
                          const int32_t *ndims, const int64_t *shapes, const float *const *data,
                          int64_t meta_count, const char *const *meta_keys,
                          const char *const *meta_values)
{
    static const char *fn = "mrt_safetensors_write";
    char tmp[4096];
    text header = {NULL, 0, 0, 0};

    if (path == NULL || count < 0 || meta_count < 0)
        return mrt_fail(MRT_EINVAL, "%s: missing path or negative count", fn);
    MRT_TRY(check_inputs(count, names, ndims, shapes, data, meta_count, meta_keys, meta_values));
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return mrt_fail(MRT_EINVAL, "%s: path too long: '%s'", fn, path);
    build_header(&header, count, names, ndims, shapes, meta_count, meta_keys, meta_values);
    if (header.failed) {
        free(header.data);
        return mrt_fail(MRT_ENOMEM, "%s: out of memory for the header", fn);
    }
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        free(header.data);
        return mrt_fail(MRT_EIO, "%s: cannot create '%s': %s", fn, tmp, strerror(errno));
    }
    errno = 0;
    int status = write_file(f, &header, count, ndims, shapes, data);
    free(header.data);
    if (fclose(f) != 0)
        status = MRT_EIO;
    if (status == MRT_OK && rename(tmp, path) != 0)
        status = MRT_EIO;
    if (status != MRT_OK) {
        int errnum = errno;
        unlink(tmp);
        return mrt_fail(MRT_EIO, "%s: writing '%s' failed: %s", fn, path,
                        errnum ? strerror(errnum) : "I/O error");
    }
    return MRT_OK;
}
