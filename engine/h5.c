/*
 * h5.c: HDF5 files for results and checkpoints, through the HDF5 C library
 * (written against Debian's serial HDF5 1.10).
 *
 * Every entry point turns off HDF5's automatic error printing, and a failed
 * HDF5 call becomes an mrt message ending in "(HDF5: ...)" with the
 * descriptions of HDF5's error stack, outermost first. Object kinds are
 * found with H5Oopen and H5Iget_type, which behave the same in HDF5 1.8 to
 * 1.14, rather than the versioned H5Oget_info family.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "include/mrt_io.h"
#include "mrt_internal.h"

enum { H5_MAX_DIMS = 8 };

struct mrt_h5 {
    hid_t file;
    int writable;
    char *path;            /* the final path */
    char *tmp;             /* writers: the file being written, renamed on commit */
};

/* ---- errors --------------------------------------------------------------- */

typedef struct stack_text {
    char text[640];
    size_t len;
} stack_text;

static herr_t collect_error(unsigned n, const H5E_error2_t *err, void *data)
{
    stack_text *s = data;

    if (err->desc == NULL || err->desc[0] == '\0' || s->len + 4 >= sizeof s->text)
        return 0;
    int used = snprintf(s->text + s->len, sizeof s->text - s->len, "%s%s", n ? ": " : "",
                        err->desc);
    if (used > 0)
        s->len += (size_t)used < sizeof s->text - s->len ? (size_t)used
                                                          : sizeof s->text - s->len - 1;
    return 0;
}

/*
 * Stores a message built from fmt, followed by HDF5's error stack when it
 * is not empty, clears the stack and returns status.
 */
static int h5_fail(int status, const char *fmt, ...) MRT_PRINTF(2, 3);

static int h5_fail(int status, const char *fmt, ...)
{
    char head[512];
    stack_text stack = {{0}, 0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &stack);
    H5Eclear2(H5E_DEFAULT);
    if (stack.len == 0)
        return mrt_fail(status, "%s", head);
    return mrt_fail(status, "%s (HDF5: %s)", head, stack.text);
}

/* Turns off HDF5's printing of its error stack to stderr. */
static void quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void close_id(hid_t id)
{
    if (id < 0)
        return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: H5Fclose(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

static int check_handle(const mrt_h5 *h, const char *fn, int write)
{
    quiet();
    if (h == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing file handle", fn);
    if (write && !h->writable)
        return mrt_fail(MRT_EINVAL, "%s: '%s' is open read-only (create it with mrt_h5_create "
                        "to write)", fn, h->path);
    return MRT_OK;
}

/* ---- element types ---------------------------------------------------------- */

/* The native (memory) HDF5 type of a dtype, or -1 when there is none. */
static hid_t native_type(int dtype)
{
    switch (dtype) {
    case MRT_IO_U8: return H5T_NATIVE_UINT8;
    case MRT_IO_I8: return H5T_NATIVE_INT8;
    case MRT_IO_U16: return H5T_NATIVE_UINT16;
    case MRT_IO_I16: return H5T_NATIVE_INT16;
    case MRT_IO_U32: return H5T_NATIVE_UINT32;
    case MRT_IO_I32: return H5T_NATIVE_INT32;
    case MRT_IO_U64: return H5T_NATIVE_UINT64;
    case MRT_IO_I64: return H5T_NATIVE_INT64;
    case MRT_IO_F32: return H5T_NATIVE_FLOAT;
    case MRT_IO_F64: return H5T_NATIVE_DOUBLE;
    default: return -1;
    }
}

/* The little-endian file type of a dtype, or -1 when there is none. */
static hid_t file_type(int dtype)
{
    switch (dtype) {
    case MRT_IO_U8: return H5T_STD_U8LE;
    case MRT_IO_I8: return H5T_STD_I8LE;
    case MRT_IO_U16: return H5T_STD_U16LE;
    case MRT_IO_I16: return H5T_STD_I16LE;
    case MRT_IO_U32: return H5T_STD_U32LE;
    case MRT_IO_I32: return H5T_STD_I32LE;
    case MRT_IO_U64: return H5T_STD_U64LE;
    case MRT_IO_I64: return H5T_STD_I64LE;
    case MRT_IO_F32: return H5T_IEEE_F32LE;
    case MRT_IO_F64: return H5T_IEEE_F64LE;
    default: return -1;
    }
}

/* The big-endian file type of a dtype, or -1 when there is none. */
static hid_t file_type_be(int dtype)
{
    switch (dtype) {
    case MRT_IO_U8: return H5T_STD_U8BE;
    case MRT_IO_I8: return H5T_STD_I8BE;
    case MRT_IO_U16: return H5T_STD_U16BE;
    case MRT_IO_I16: return H5T_STD_I16BE;
    case MRT_IO_U32: return H5T_STD_U32BE;
    case MRT_IO_I32: return H5T_STD_I32BE;
    case MRT_IO_U64: return H5T_STD_U64BE;
    case MRT_IO_I64: return H5T_STD_I64BE;
    case MRT_IO_F32: return H5T_IEEE_F32BE;
    case MRT_IO_F64: return H5T_IEEE_F64BE;
    default: return -1;
    }
}

/* The dtype that an HDF5 integer or float type has by class, size and sign, or -1. */
static int dtype_by_size(hid_t type)
{
    size_t size = H5Tget_size(type);
    H5T_class_t cls = H5Tget_class(type);

    if (cls == H5T_FLOAT && size == 4)
        return MRT_IO_F32;
    if (cls == H5T_FLOAT && size == 8)
        return MRT_IO_F64;
    if (cls != H5T_INTEGER)
        return -1;
    int is_signed = H5Tget_sign(type) == H5T_SGN_2;
    switch (size) {
    case 1: return is_signed ? MRT_IO_I8 : MRT_IO_U8;
    case 2: return is_signed ? MRT_IO_I16 : MRT_IO_U16;
    case 4: return is_signed ? MRT_IO_I32 : MRT_IO_U32;
    case 8: return is_signed ? MRT_IO_I64 : MRT_IO_U64;
    default: return -1;
    }
}

/*
 * The dtype of an HDF5 integer or float type, or -1 for other types. That
 * includes integers and floats whose bit layout (precision, offset, sign,
 * exponent and mantissa fields) is not the standard one of their size, in
 * either byte order. HDF5 1.10 converts such types bit by bit as the file
 * describes them, and reads past its buffers when a corrupt file describes
 * fields larger than the type.
 */
static int dtype_of(hid_t type)
{
    int dtype = dtype_by_size(type);

    if (dtype < 0)
        return -1;
    if (H5Tequal(type, file_type(dtype)) > 0 || H5Tequal(type, file_type_be(dtype)) > 0)
        return dtype;
    H5Eclear2(H5E_DEFAULT);
    return -1;
}

/* Fails unless an open dataset's or attribute's type passes dtype_of. */
static int check_stored_type(hid_t type, const char *fn, const char *what)
{
    if (type < 0)
        return h5_fail(MRT_EIO, "%s: cannot read the element type of %s", fn, what);
    if (dtype_of(type) >= 0)
        return MRT_OK;
    return mrt_fail(MRT_ENYI, "NYI: %s: %s has HDF5 type class %d of %zu bytes (expected an "
                    "integer of 1 to 8 bytes or an IEEE float of 4 or 8 bytes, in the standard "
                    "layout)", fn, what, (int)H5Tget_class(type), H5Tget_size(type));
}

static int check_mem_dtype(const char *fn, const char *what, int dtype)
{
    if (native_type(dtype) >= 0)
        return MRT_OK;
    return mrt_fail(MRT_EINVAL, "%s: %s %s (expected u8, i8, u16, i16, u32, i32, u64, i64, f32 or "
                    "f64)", fn, what, mrt_io_dtype_name(dtype));
}

/* ---- files ------------------------------------------------------------------ */

static mrt_h5 *new_handle(const char *path, int writable)
{
    mrt_h5 *h = calloc(1, sizeof *h);
    size_t n = strlen(path);

    if (h == NULL)
        return NULL;
    h->file = -1;
    h->writable = writable;
    h->path = malloc(n + 1);
    h->tmp = malloc(n + 32);
    if (h->path == NULL || h->tmp == NULL) {
        free(h->path);
        free(h->tmp);
        free(h);
        return NULL;
    }
    memcpy(h->path, path, n + 1);
    snprintf(h->tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    return h;
}

static void free_handle(mrt_h5 *h)
{
    free(h->path);
    free(h->tmp);
    free(h);
}

/* File access properties: closing the file closes every object still open in it. */
static hid_t access_plist(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    if (fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

int mrt_h5_create(const char *path, mrt_h5 **out)
{
    quiet();
    if (path == NULL || out == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_h5_create: missing path or output handle");
    *out = NULL;
    mrt_h5 *h = new_handle(path, 1);
    if (h == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_h5_create: out of memory");
    /*
     * Creating the file first gives the system's reason for a missing
     * folder or a denied permission in one line; HDF5's message for it
     * spans several lines of its internal flags.
     */
    FILE *probe = fopen(h->tmp, "wb");
    if (probe == NULL) {
        int status = mrt_fail(MRT_EIO, "mrt_h5_create: cannot create '%s': %s", path,
                              strerror(errno));
        free_handle(h);
        return status;
    }
    fclose(probe);
    /* Any HDF5 call clears the error stack, so the failure is recorded before closing fapl. */
    hid_t fapl = access_plist();
    h->file = fapl >= 0 ? H5Fcreate(h->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : -1;
    int status = h->file < 0 ? h5_fail(MRT_EIO, "mrt_h5_create: cannot create '%s'", h->tmp)
                             : MRT_OK;
    close_id(fapl);
    if (status != MRT_OK) {
        unlink(h->tmp);
        free_handle(h);
        return status;
    }
    *out = h;
    return MRT_OK;
}

int mrt_h5_open(const char *path, mrt_h5 **out)
{
    struct stat st;

    quiet();
    if (path == NULL || out == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_h5_open: missing path or output handle");
    *out = NULL;
    if (stat(path, &st) != 0)
        return mrt_fail(MRT_EIO, "mrt_h5_open: cannot open '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return mrt_fail(MRT_EIO, "mrt_h5_open: '%s' is a directory (expected an HDF5 file)",
                        path);
    mrt_h5 *h = new_handle(path, 0);
    if (h == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_h5_open: out of memory");
    hid_t fapl = access_plist();
    h->file = fapl >= 0 ? H5Fopen(path, H5F_ACC_RDONLY, fapl) : -1;
    int status = h->file < 0
                     ? h5_fail(MRT_EIO, "mrt_h5_open: '%s' is not a readable HDF5 file", path)
                     : MRT_OK;
    close_id(fapl);
    if (status != MRT_OK) {
        free_handle(h);
        return status;
    }
    *out = h;
    return MRT_OK;
}

int mrt_h5_commit(mrt_h5 *h)
{
    int status = MRT_OK;

    MRT_TRY(check_handle(h, "mrt_h5_commit", 1));
    if (H5Fclose(h->file) < 0)
        status = h5_fail(MRT_EIO, "mrt_h5_commit: closing '%s' failed", h->tmp);
    else if (rename(h->tmp, h->path) != 0)
        status = mrt_fail(MRT_EIO, "mrt_h5_commit: renaming '%s' to '%s' failed: %s", h->tmp,
                          h->path, strerror(errno));
    if (status != MRT_OK)
        unlink(h->tmp);
    free_handle(h);
    return status;
}

void mrt_h5_abort(mrt_h5 *h)
{
    quiet();
    if (h == NULL)
        return;
    H5Fclose(h->file);
    H5Eclear2(H5E_DEFAULT);
    if (h->writable)
        unlink(h->tmp);
    free_handle(h);
}

int mrt_h5_close(mrt_h5 *h)
{
    quiet();
    if (h == NULL)
        return MRT_OK;
    if (h->writable) {
        mrt_h5_abort(h);
        return MRT_OK;
    }
    int status = H5Fclose(h->file) < 0
                     ? h5_fail(MRT_EIO, "mrt_h5_close: closing '%s' failed", h->path)
                     : MRT_OK;
    free_handle(h);
    return status;
}

/* ---- objects ------------------------------------------------------------------ */

static int kind_of(hid_t id)
{
    switch (H5Iget_type(id)) {
    case H5I_GROUP: return MRT_H5_GROUP;
    case H5I_DATASET: return MRT_H5_DATASET;
    default: return MRT_H5_OTHER;
    }
}

/*
 * Finds the kind of object at path, checking each link on the way because
 * H5Lexists fails (rather than returning 0) when a parent group is missing.
 */
static int object_kind(const mrt_h5 *h, const char *path)
{
    char prefix[4096];
    size_t n = strlen(path);

    if (n >= sizeof prefix)
        return MRT_H5_ABSENT;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        if (prefix[i - 1] == '/' || strspn(prefix, "/") == i)
            continue;
        if (H5Lexists(h->file, prefix, H5P_DEFAULT) <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return MRT_H5_ABSENT;
        }
    }
    hid_t id = H5Oopen(h->file, path[0] != '\0' ? path : "/", H5P_DEFAULT);
    if (id < 0) {
        H5Eclear2(H5E_DEFAULT);
        return MRT_H5_OTHER; /* a link to a missing target */
    }
    int kind = kind_of(id);
    H5Oclose(id);
    return kind;
}

int mrt_h5_exists(mrt_h5 *h, const char *path, int *kind)
{
    MRT_TRY(check_handle(h, "mrt_h5_exists", 0));
    if (path == NULL || kind == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_h5_exists: missing path or output");
    *kind = object_kind(h, path);
    return MRT_OK;
}

/* Opens an object that must be of the given kind (0: group or dataset). */
static int open_object(const mrt_h5 *h, const char *fn, const char *path, int want, hid_t *id)
{
    *id = -1;
    if (object_kind(h, path) == MRT_H5_ABSENT)
        return mrt_fail(MRT_EINVAL, "%s: '%s' not found in '%s'", fn, path, h->path);
    *id = H5Oopen(h->file, path[0] != '\0' ? path : "/", H5P_DEFAULT);
    if (*id < 0)
        return h5_fail(MRT_EIO, "%s: cannot open '%s' in '%s'", fn, path, h->path);
    int kind = kind_of(*id);
    if ((want == 0 && kind != MRT_H5_OTHER) || kind == want)
        return MRT_OK;
    H5Oclose(*id);
    *id = -1;
    return mrt_fail(MRT_EINVAL, "%s: '%s' in '%s' is not a %s", fn, path, h->path,
                    want == MRT_H5_DATASET ? "dataset"
                    : want == MRT_H5_GROUP ? "group"
                                           : "group or dataset");
}

/* ---- datasets ----------------------------------------------------------------- */

static int check_shape(const char *fn, int ndim, const int64_t *shape, hsize_t *dims,
                       int64_t *numel)
{
    *numel = 1;
    if (ndim < 0 || ndim > H5_MAX_DIMS)
        return mrt_fail(MRT_EINVAL, "%s: %d dimensions (expected 0 to %d)", fn, ndim,
                        H5_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return mrt_fail(MRT_EINVAL, "%s: size %lld of dimension %d is negative", fn,
                            (long long)shape[i], i + 1);
        dims[i] = (hsize_t)shape[i];
        *numel *= shape[i];
    }
    return MRT_OK;
}

int mrt_h5_write(mrt_h5 *h, const char *path, int file_dtype, int ndim, const int64_t *shape,
                 int mem_dtype, const void *data)
{
    static const char *fn = "mrt_h5_write";
    hsize_t dims[H5_MAX_DIMS];
    int64_t numel;

    MRT_TRY(check_handle(h, fn, 1));
    MRT_TRY(check_mem_dtype(fn, "file element type", file_dtype));
    MRT_TRY(check_mem_dtype(fn, "memory element type", mem_dtype));
    MRT_TRY(check_shape(fn, ndim, shape, dims, &numel));
    if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0)
        return mrt_fail(MRT_EINVAL, "%s: invalid dataset path '%s'", fn, path ? path : "");
    if (numel > 0 && data == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing data for '%s'", fn, path);
    if (object_kind(h, path) != MRT_H5_ABSENT)
        return mrt_fail(MRT_EINVAL, "%s: '%s' already exists in '%s'", fn, path, h->tmp);

    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dset = -1;
    herr_t written = -1;
    if (space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        dset = H5Dcreate2(h->file, path, file_type(file_dtype), space, lcpl, H5P_DEFAULT,
                          H5P_DEFAULT);
    if (dset >= 0)
        written = numel > 0 ? H5Dwrite(dset, native_type(mem_dtype), H5S_ALL, H5S_ALL,
                                       H5P_DEFAULT, data)
                            : 0;
    int status = written < 0 ? h5_fail(MRT_EIO, "%s: writing dataset '%s' to '%s' failed", fn,
                                       path, h->tmp)
                             : MRT_OK;
    close_id(dset);
    close_id(lcpl);
    close_id(space);
    if (status != MRT_OK && dset >= 0)
        H5Ldelete(h->file, path, H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    return status;
}

int mrt_h5_dataset_info(mrt_h5 *h, const char *path, int *dtype, int *ndim, int64_t *shape)
{
    static const char *fn = "mrt_h5_dataset_info";
    hsize_t dims[H5_MAX_DIMS];
    hid_t dset, type = -1, space = -1;

    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, path, MRT_H5_DATASET, &dset));
    type = H5Dget_type(dset);
    space = H5Dget_space(dset);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int status = MRT_OK;
    char what[4200];
    snprintf(what, sizeof what, "'%s' in '%s'", path, h->path);
    *dtype = type >= 0 ? dtype_of(type) : -1;
    if (type < 0 || rank < 0)
        status = h5_fail(MRT_EIO, "%s: cannot read the type and shape of '%s' in '%s'", fn, path,
                         h->path);
    else if (*dtype < 0)
        status = check_stored_type(type, fn, what);
    else if (rank > H5_MAX_DIMS)
        status = mrt_fail(MRT_ENYI, "NYI: %s: '%s' in '%s' has %d dimensions (at most %d are "
                          "supported)", fn, path, h->path, rank, H5_MAX_DIMS);
    else if (H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        status = h5_fail(MRT_EIO, "%s: cannot read the shape of '%s' in '%s'", fn, path, h->path);
    if (status == MRT_OK) {
        *ndim = rank;
        for (int i = 0; i < H5_MAX_DIMS; i++)
            shape[i] = i < rank ? (int64_t)dims[i] : 0;
    }
    close_id(space);
    close_id(type);
    close_id(dset);
    return status;
}

int mrt_h5_read(mrt_h5 *h, const char *path, int mem_dtype, void *out, int64_t numel)
{
    static const char *fn = "mrt_h5_read";
    hid_t dset;
    char what[4200];

    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(check_mem_dtype(fn, "memory element type", mem_dtype));
    MRT_TRY(open_object(h, fn, path, MRT_H5_DATASET, &dset));
    snprintf(what, sizeof what, "'%s' in '%s'", path, h->path);
    hid_t type = H5Dget_type(dset);
    hid_t space = H5Dget_space(dset);
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    int status = check_stored_type(type, fn, what);
    if (status == MRT_OK && points < 0)
        status = h5_fail(MRT_EIO, "%s: cannot read the shape of %s", fn, what);
    else if (status == MRT_OK && points != numel)
        status = mrt_fail(MRT_EINVAL, "%s: %s has %lld elements but the output has %lld", fn,
                          what, (long long)points, (long long)numel);
    else if (status == MRT_OK && numel > 0 &&
             H5Dread(dset, native_type(mem_dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        status = h5_fail(MRT_EIO, "%s: reading '%s' from '%s' as %s failed", fn, path, h->path,
                         mrt_io_dtype_name(mem_dtype));
    close_id(type);
    close_id(space);
    close_id(dset);
    return status;
}

/* ---- groups ------------------------------------------------------------------- */

int mrt_h5_child_count(mrt_h5 *h, const char *group, int64_t *count)
{
    static const char *fn = "mrt_h5_child_count";
    H5G_info_t info;
    hid_t id;

    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, group, MRT_H5_GROUP, &id));
    int status = H5Gget_info(id, &info) < 0
                     ? h5_fail(MRT_EIO, "%s: cannot list group '%s' in '%s'", fn, group, h->path)
                     : MRT_OK;
    close_id(id);
    *count = status == MRT_OK ? (int64_t)info.nlinks : 0;
    return status;
}

int mrt_h5_child(mrt_h5 *h, const char *group, int64_t index, char *name, int64_t name_size,
                 int *kind)
{
    static const char *fn = "mrt_h5_child";
    hid_t id;

    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, group, MRT_H5_GROUP, &id));
    ssize_t len = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)index, name,
                                     (size_t)name_size, H5P_DEFAULT);
    int status = MRT_OK;
    if (len < 0)
        status = h5_fail(MRT_EINVAL, "%s: no link number %lld in group '%s' of '%s'", fn,
                         (long long)index, group, h->path);
    else if (len >= name_size)
        status = mrt_fail(MRT_EINVAL, "%s: link name of %zd bytes in '%s' exceeds the buffer of "
                          "%lld", fn, len, group, (long long)name_size);
    if (status == MRT_OK) {
        hid_t child = H5Oopen_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)index,
                                     H5P_DEFAULT);
        *kind = child >= 0 ? kind_of(child) : MRT_H5_OTHER;
        close_id(child);
        H5Eclear2(H5E_DEFAULT);
    }
    close_id(id);
    return status;
}

/* ---- attributes --------------------------------------------------------------- */

/* Creates attribute name on object (replacing one of that name) and writes it. */
static int write_attr(mrt_h5 *h, const char *fn, const char *object, const char *name,
                      hid_t ftype, hid_t mtype, hid_t space, const void *values)
{
    hid_t obj, attr = -1;

    if (name == NULL || name[0] == '\0')
        return mrt_fail(MRT_EINVAL, "%s: missing attribute name", fn);
    MRT_TRY(open_object(h, fn, object, 0, &obj));
    int status = MRT_OK;
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0 || (exists > 0 && H5Adelete(obj, name) < 0))
        status = h5_fail(MRT_EIO, "%s: cannot replace attribute '%s' of '%s'", fn, name, object);
    if (status == MRT_OK) {
        attr = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr < 0 || H5Awrite(attr, mtype, values) < 0)
            status = h5_fail(MRT_EIO, "%s: writing attribute '%s' of '%s' failed", fn, name,
                             object);
    }
    close_id(attr);
    close_id(obj);
    return status;
}

static int write_numeric_attr(mrt_h5 *h, const char *fn, const char *object, const char *name,
                              int ndim, int64_t count, hid_t ftype, hid_t mtype,
                              const void *values)
{
    hsize_t dims[1];

    MRT_TRY(check_handle(h, fn, 1));
    if (ndim != 0 && ndim != 1)
        return mrt_fail(MRT_EINVAL, "%s: attribute '%s' has %d dimensions (expected 0 or 1)", fn,
                        name ? name : "", ndim);
    if ((ndim == 0 && count != 1) || count < 0 || (count > 0 && values == NULL))
        return mrt_fail(MRT_EINVAL, "%s: attribute '%s' has %lld values (expected 1 for a scalar, "
                        "a list otherwise)", fn, name ? name : "", (long long)count);
    dims[0] = (hsize_t)count;
    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    if (space < 0)
        return h5_fail(MRT_EIO, "%s: cannot create a dataspace", fn);
    int status = write_attr(h, fn, object, name, ftype, mtype, space, values);
    close_id(space);
    return status;
}

int mrt_h5_attr_write_f64(mrt_h5 *h, const char *object, const char *name, int ndim,
                          int64_t count, const double *values)
{
    return write_numeric_attr(h, "mrt_h5_attr_write_f64", object, name, ndim, count,
                              H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values);
}

int mrt_h5_attr_write_i64(mrt_h5 *h, const char *object, const char *name, int ndim,
                          int64_t count, const int64_t *values)
{
    return write_numeric_attr(h, "mrt_h5_attr_write_i64", object, name, ndim, count,
                              H5T_STD_I64LE, H5T_NATIVE_INT64, values);
}

/* Strings are fixed-length UTF-8, padded with NULs (an empty string takes one byte). */
int mrt_h5_attr_write_string(mrt_h5 *h, const char *object, const char *name, const char *value)
{
    static const char *fn = "mrt_h5_attr_write_string";
    char empty[1] = {0};

    MRT_TRY(check_handle(h, fn, 1));
    if (value == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing value for attribute '%s'", fn, name ? name : "");
    size_t len = strlen(value);
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    if (type < 0 || space < 0 || H5Tset_size(type, len > 0 ? len : 1) < 0 ||
        H5Tset_strpad(type, H5T_STR_NULLPAD) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
        close_id(type);
        close_id(space);
        return h5_fail(MRT_EIO, "%s: cannot create a string type of %zu bytes", fn, len);
    }
    int status = write_attr(h, fn, object, name, type, type, space, len > 0 ? value : empty);
    close_id(type);
    close_id(space);
    return status;
}

/*
 * Decodes every attribute message of an object without building HDF5's
 * sorted attribute table, and fails on the first one that does not decode.
 *
 * HDF5 1.10.8 builds that table for every by-index or iterating access to
 * attributes kept in the object header (H5Aiterate2, H5Aget_name_by_idx,
 * H5Aopen_by_idx). When a message fails to decode there, its cleanup frees
 * table slots it never filled, and the process crashes on a corrupt file.
 * H5Aexists walks the same messages without a table and stops only at a
 * name match. So it is asked for a name that no attribute can have: the
 * file format stores a name's length with its NUL in 16 bits, which limits
 * names to 65534 bytes. A message that decoded stays cached in the open
 * object header, so the later by-index calls do not decode it again.
 *
 * NOTE: HDF5 1.10.8 decodes an attribute message without checking its
 * size fields against the message, so a flipped name, datatype or
 * dataspace size makes the decode read up to 192 KiB past it. No API call
 * reads attributes without that decode. Valgrind saw such reads for 2 of
 * 474 single-byte corruptions of a results file, and it misses reads that
 * land in other heap blocks. None of 6447 corrupted files crashed here.
 */
static int check_attr_messages(hid_t obj, const char *fn, const char *object)
{
    enum { UNUSED_NAME_LEN = 65536 };
    char *unused_name = malloc(UNUSED_NAME_LEN + 1);

    if (unused_name == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    memset(unused_name, 'x', UNUSED_NAME_LEN);
    unused_name[UNUSED_NAME_LEN] = '\0';
    htri_t exists = H5Aexists(obj, unused_name);
    free(unused_name);
    if (exists < 0)
        return h5_fail(MRT_EIO, "%s: cannot read the attributes of '%s'", fn, object);
    return MRT_OK;
}

static herr_t count_attr(hid_t id, const char *name, const H5A_info_t *info, void *data)
{
    (*(int64_t *)data)++;
    return 0;
}

int mrt_h5_attr_count(mrt_h5 *h, const char *object, int64_t *count)
{
    static const char *fn = "mrt_h5_attr_count";
    hid_t obj;

    *count = 0;
    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, object, 0, &obj));
    int status = check_attr_messages(obj, fn, object);
    if (status == MRT_OK &&
        H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, NULL, count_attr, count) < 0)
        status = h5_fail(MRT_EIO, "%s: cannot list the attributes of '%s'", fn, object);
    close_id(obj);
    return status;
}

/* Reads a scalar string attribute, fixed- or variable-length, into a new buffer. */
static int read_string_attr(hid_t attr, hid_t type, char **out)
{
    *out = NULL;
    if (H5Tis_variable_str(type) > 0) {
        char *value = NULL;
        hid_t mtype = H5Tcopy(H5T_C_S1);
        if (mtype < 0 || H5Tset_size(mtype, H5T_VARIABLE) < 0 ||
            H5Aread(attr, mtype, &value) < 0) {
            close_id(mtype);
            return MRT_EIO;
        }
        close_id(mtype);
        size_t len = value != NULL ? strlen(value) : 0;
        *out = malloc(len + 1);
        if (*out != NULL) {
            memcpy(*out, value != NULL ? value : "", len);
            (*out)[len] = '\0';
        }
        H5free_memory(value);
        return *out != NULL ? MRT_OK : MRT_ENOMEM;
    }
    size_t size = H5Tget_size(type);
    *out = calloc(size + 1, 1);
    if (*out == NULL)
        return MRT_ENOMEM;
    if (size > 0 && H5Aread(attr, type, *out) < 0) {
        free(*out);
        *out = NULL;
        return MRT_EIO;
    }
    return MRT_OK;
}

/* Classifies an open attribute: kind, dimensions and size as in mrt_h5_attr_info. */
static int describe_attr(hid_t attr, const char *fn, const char *object, const char *name,
                         int *kind, int *ndim, int64_t *size)
{
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    int status = MRT_OK;

    *kind = cls == H5T_FLOAT ? MRT_H5_ATTR_F64 : cls == H5T_INTEGER ? MRT_H5_ATTR_I64
            : cls == H5T_STRING ? MRT_H5_ATTR_STRING : 0;
    /* An empty list (zero-size or null dataspace) reads as a 1-D list of 0 values. */
    *ndim = points == 0 ? 1 : rank;
    *size = points;
    char what[600];
    snprintf(what, sizeof what, "attribute '%s' of '%s'", name, object);
    if (type < 0 || rank < 0 || points < 0)
        status = h5_fail(MRT_EIO, "%s: cannot read attribute '%s' of '%s'", fn, name, object);
    else if (*kind == 0 || (*kind == MRT_H5_ATTR_STRING && rank != 0))
        status = mrt_fail(MRT_ENYI, "NYI: %s: attribute '%s' of '%s' has HDF5 type class %d "
                          "with %d dimensions (expected a number, a list of numbers or a scalar "
                          "string)", fn, name, object, (int)cls, rank);
    else if (*kind != MRT_H5_ATTR_STRING)
        status = check_stored_type(type, fn, what);
    else {
        char *value;
        status = read_string_attr(attr, type, &value);
        if (status != MRT_OK)
            status = h5_fail(status, "%s: cannot read string attribute '%s' of '%s'", fn, name,
                             object);
        else
            *size = (int64_t)strlen(value);
        free(value);
    }
    close_id(space);
    close_id(type);
    return status;
}

int mrt_h5_attr_info(mrt_h5 *h, const char *object, int64_t index, char *name, int64_t name_size,
                     int *kind, int *ndim, int64_t *size)
{
    static const char *fn = "mrt_h5_attr_info";
    hid_t obj, attr = -1;

    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, object, 0, &obj));
    if (check_attr_messages(obj, fn, object) != MRT_OK) {
        close_id(obj);
        return MRT_EIO;
    }
    ssize_t len = H5Aget_name_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)index, name,
                                     (size_t)name_size, H5P_DEFAULT);
    int status = MRT_OK;
    if (len < 0)
        status = h5_fail(MRT_EINVAL, "%s: no attribute number %lld on '%s'", fn, (long long)index,
                         object);
    else if (len >= name_size)
        status = mrt_fail(MRT_EINVAL, "%s: attribute name of %zd bytes on '%s' exceeds the "
                          "buffer of %lld", fn, len, object, (long long)name_size);
    if (status == MRT_OK) {
        attr = H5Aopen(obj, name, H5P_DEFAULT);
        status = attr < 0 ? h5_fail(MRT_EIO, "%s: cannot open attribute '%s' of '%s'", fn, name,
                                    object)
                          : describe_attr(attr, fn, object, name, kind, ndim, size);
    }
    close_id(attr);
    close_id(obj);
    return status;
}

/* Opens attribute name of object, or fails naming both. */
static int open_attr(mrt_h5 *h, const char *fn, const char *object, const char *name,
                     hid_t *attr)
{
    hid_t obj;

    *attr = -1;
    MRT_TRY(check_handle(h, fn, 0));
    MRT_TRY(open_object(h, fn, object, 0, &obj));
    htri_t exists = name != NULL ? H5Aexists(obj, name) : 0;
    int status = MRT_OK;
    if (exists <= 0)
        status = h5_fail(MRT_EINVAL, "%s: attribute '%s' not found on '%s' in '%s'", fn,
                         name ? name : "", object, h->path);
    else if ((*attr = H5Aopen(obj, name, H5P_DEFAULT)) < 0)
        status = h5_fail(MRT_EIO, "%s: cannot open attribute '%s' of '%s'", fn, name, object);
    close_id(obj);
    return status;
}

static int read_numeric_attr(mrt_h5 *h, const char *fn, const char *object, const char *name,
                             hid_t mtype, void *out, int64_t count)
{
    hid_t attr;

    MRT_TRY(open_attr(h, fn, object, name, &attr));
    char what[600];
    snprintf(what, sizeof what, "attribute '%s' of '%s'", name, object);
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    int status = check_stored_type(type, fn, what);
    if (status == MRT_OK && points != count)
        status = h5_fail(MRT_EINVAL, "%s: attribute '%s' of '%s' has %lld values but the output "
                         "has %lld", fn, name, object, (long long)points, (long long)count);
    else if (status == MRT_OK && count > 0 && H5Aread(attr, mtype, out) < 0)
        status = h5_fail(MRT_EIO, "%s: reading attribute '%s' of '%s' failed", fn, name, object);
    close_id(space);
    close_id(type);
    close_id(attr);
    return status;
}

int mrt_h5_attr_read_f64(mrt_h5 *h, const char *object, const char *name, double *out,
                         int64_t count)
{
    return read_numeric_attr(h, "mrt_h5_attr_read_f64", object, name, H5T_NATIVE_DOUBLE, out,
                             count);
}

int mrt_h5_attr_read_i64(mrt_h5 *h, const char *object, const char *name, int64_t *out,
                         int64_t count)
{
    return read_numeric_attr(h, "mrt_h5_attr_read_i64", object, name, H5T_NATIVE_INT64, out,
                             count);
}

int mrt_h5_attr_read_string(mrt_h5 *h, const char *object, const char *name, char *out,
                            int64_t out_size)
{
    static const char *fn = "mrt_h5_attr_read_string";
    hid_t attr;
    char *value = NULL;

    MRT_TRY(open_attr(h, fn, object, name, &attr));
    hid_t type = H5Aget_type(attr);
    int status = MRT_OK;
    if (type < 0 || H5Tget_class(type) != H5T_STRING)
        status = h5_fail(MRT_EINVAL, "%s: attribute '%s' of '%s' is not a string", fn, name,
                         object);
    else if ((status = read_string_attr(attr, type, &value)) != MRT_OK)
        status = h5_fail(status, "%s: reading attribute '%s' of '%s' failed", fn, name, object);
    else if ((int64_t)strlen(value) >= out_size)
        status = mrt_fail(MRT_EINVAL, "%s: attribute '%s' of '%s' has %zu bytes, more than the "
                          "output holds (%lld with the NUL)", fn, name, object, strlen(value),
                          (long long)out_size);
    else
        memcpy(out, value, strlen(value) + 1);
    free(value);
    close_id(type);
    close_id(attr);
    return status;
}
