/*
 * mrt_io.h: the file formats the engine reads and writes: IDX arrays
 * (MNIST-style datasets), HDF5 files (results and checkpoints) and
 * safetensors files (pretrained weights).
 *
 * Every function that can fail returns an int status and leaves a message
 * naming the function, the file and what was expected. A corrupt or
 * truncated file fails with MRT_EIO, without printing. Writers write to
 * "<path>.tmp.<pid>" and rename it into place, so a failed write leaves no
 * file at the path (and an older file there untouched).
 */
#ifndef MRT_IO_H
#define MRT_IO_H

#include "mrt_core.h"

/* Element types of arrays in files. In memory they are in host byte order. */
enum mrt_io_dtype {
    MRT_IO_U8 = 0,
    MRT_IO_I8 = 1,
    MRT_IO_U16 = 2,
    MRT_IO_I16 = 3,
    MRT_IO_U32 = 4,
    MRT_IO_I32 = 5,
    MRT_IO_U64 = 6,
    MRT_IO_I64 = 7,
    MRT_IO_F16 = 8,     /* IEEE half precision */
    MRT_IO_BF16 = 9,    /* bfloat16: the upper 16 bits of a float32 */
    MRT_IO_F32 = 10,
    MRT_IO_F64 = 11,
    MRT_IO_BOOL = 12    /* one byte, 0 or 1 */
};

/* Bytes per element, or 0 for an unknown code. */
int mrt_io_dtype_size(int dtype);
/* Short name: "u8", "i32", "f32", ...; "unknown" for an unknown code. */
const char *mrt_io_dtype_name(int dtype);
/* Frees memory that an mrt_io function allocated (such as mrt_idx_array.data). */
void mrt_io_free(void *ptr);

/* ---- IDX ------------------------------------------------------------------
 * The format of the MNIST and Fashion-MNIST files: two zero bytes, a type
 * code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64), the
 * number of dimensions, one big-endian uint32 size per dimension, then the
 * elements in row-major order, big-endian. Files may be gzip-compressed.
 */
typedef struct mrt_idx_array {
    void *data;            /* numel elements of dtype, host byte order */
    int64_t shape[8];      /* sizes of the first ndim dimensions */
    int64_t numel;         /* product of the sizes */
    int32_t ndim;          /* 1 to 8 */
    int32_t dtype;         /* MRT_IO_U8, I8, I16, I32, F32 or F64 */
} mrt_idx_array;

/*
 * Reads an IDX file, raw or gzip-compressed. On success out->data is newly
 * allocated (release it with mrt_idx_free or mrt_io_free); on failure it is
 * NULL. Fails with MRT_EIO on a bad magic number, a dimension count outside
 * 1..8, sizes whose product overflows, data shorter than the header states
 * (truncated) or data left over after the last element (trailing bytes).
 */
int mrt_idx_read(const char *path, mrt_idx_array *out /* out */);
/* Frees a->data and sets it to NULL. */
void mrt_idx_free(mrt_idx_array *a);
/* Writes a as an IDX file, gzip-compressed when gzip is nonzero. */
int mrt_idx_write(const char *path, const mrt_idx_array *a, int gzip);

/* ---- HDF5 -----------------------------------------------------------------
 * A handle on one HDF5 file, opened read-only or created for writing. Paths
 * inside the file are slash-separated ("/train/loss"); "/" is the root group.
 * HDF5's own error printing is turned off: its error stack becomes the
 * message of the failed call.
 */
typedef struct mrt_h5 mrt_h5;

enum mrt_h5_kind {
    MRT_H5_ABSENT = 0,
    MRT_H5_GROUP = 1,
    MRT_H5_DATASET = 2,
    MRT_H5_OTHER = 3       /* named datatype, or a link whose target is missing */
};

enum mrt_h5_attr_kind {
    MRT_H5_ATTR_F64 = 1,   /* any floating-point attribute, read as float64 */
    MRT_H5_ATTR_I64 = 2,   /* any integer attribute, read as int64 */
    MRT_H5_ATTR_STRING = 3 /* fixed- or variable-length string */
};

/* Creates a file written to "<path>.tmp.<pid>" until mrt_h5_commit. */
int mrt_h5_create(const char *path, mrt_h5 **out /* out */);
/* Opens an existing file read-only. */
int mrt_h5_open(const char *path, mrt_h5 **out /* out */);
/*
 * Closes a created file and renames it to its path. Frees h, also on
 * failure, in which case the temporary file is deleted.
 */
int mrt_h5_commit(mrt_h5 *h);
/* Closes a created file and deletes it. Frees h. */
void mrt_h5_abort(mrt_h5 *h);
/* Closes a file opened read-only, or aborts a created one. Frees h. */
int mrt_h5_close(mrt_h5 *h);

/*
 * Writes a dataset of file_dtype with the given shape (ndim 0 is a scalar),
 * creating missing intermediate groups, from data of mem_dtype (HDF5
 * converts). Fails when the path already exists. Both dtypes are integer
 * types, F32 or F64 (not F16, BF16 or BOOL).
 */
int mrt_h5_write(mrt_h5 *h, const char *path, int file_dtype, int ndim, const int64_t *shape,
                 int mem_dtype, const void *data);
/* Stores the kind of object at path in *kind, MRT_H5_ABSENT when there is none. */
int mrt_h5_exists(mrt_h5 *h, const char *path, int *kind /* out */);
/* Element type (an integer type, F32 or F64) and shape (room for 8 sizes) of a dataset. */
int mrt_h5_dataset_info(mrt_h5 *h, const char *path, int *dtype /* out */, int *ndim /* out */,
                        int64_t *shape /* out [8] */);
/* Reads a whole dataset of numel elements into out, converted to mem_dtype. */
int mrt_h5_read(mrt_h5 *h, const char *path, int mem_dtype, void *out /* out */, int64_t numel);

/* Number of links in a group, and the name and kind of one, in name order. */
int mrt_h5_child_count(mrt_h5 *h, const char *group, int64_t *count /* out */);
int mrt_h5_child(mrt_h5 *h, const char *group, int64_t index, char *name /* out */,
                 int64_t name_size, int *kind /* out */);

/*
 * Attributes on a group or dataset, replaced when they exist. ndim 0 writes
 * a scalar (count must be 1), ndim 1 a list of count values.
 */
int mrt_h5_attr_write_f64(mrt_h5 *h, const char *object, const char *name, int ndim,
                          int64_t count, const double *values);
int mrt_h5_attr_write_i64(mrt_h5 *h, const char *object, const char *name, int ndim,
                          int64_t count, const int64_t *values);
int mrt_h5_attr_write_string(mrt_h5 *h, const char *object, const char *name, const char *value);

/* Number of attributes on an object. */
int mrt_h5_attr_count(mrt_h5 *h, const char *object, int64_t *count /* out */);
/*
 * Name, kind (enum mrt_h5_attr_kind), dimensions and size of attribute
 * number index, in name order. size is the number of elements, or for a
 * string the length in bytes without the terminating NUL.
 */
int mrt_h5_attr_info(mrt_h5 *h, const char *object, int64_t index, char *name /* out */,
                     int64_t name_size, int *kind /* out */, int *ndim /* out */,
                     int64_t *size /* out */);
int mrt_h5_attr_read_f64(mrt_h5 *h, const char *object, const char *name, double *out /* out */,
                         int64_t count);
int mrt_h5_attr_read_i64(mrt_h5 *h, const char *object, const char *name,
                         int64_t *out /* out */, int64_t count);
/* Copies a string attribute with its NUL; out_size must exceed its length. */
int mrt_h5_attr_read_string(mrt_h5 *h, const char *object, const char *name, char *out /* out */,
                            int64_t out_size);

/* ---- safetensors ----------------------------------------------------------
 * The Hugging Face format: a little-endian uint64 header length N, N bytes
 * of JSON mapping each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (plus an optional "__metadata__" object of strings), then
 * the data buffer, little-endian, offsets relative to its start.
 */
typedef struct mrt_safetensors mrt_safetensors;

/*
 * Opens a file and validates its header: the header length against the
 * file size, known dtypes, every tensor's byte range inside the data buffer
 * and equal to numel * element size, and no two ranges overlapping. Bytes
 * of the buffer that no tensor covers are allowed.
 */
int mrt_safetensors_open(const char *path, mrt_safetensors **out /* out */);
void mrt_safetensors_close(mrt_safetensors *st);
/* Number of tensors; they are numbered in header order from 0. */
int64_t mrt_safetensors_count(const mrt_safetensors *st);
/* Index of the tensor with this name, or -1. */
int64_t mrt_safetensors_find(const mrt_safetensors *st, const char *name);
/* Name (valid until close), dtype and shape (room for 8 sizes) of one tensor. */
int mrt_safetensors_info(const mrt_safetensors *st, int64_t index, const char **name /* out */,
                         int *dtype /* out */, int *ndim /* out */, int64_t *shape /* out [8] */);
/*
 * Reads one tensor of numel elements converted to float32. Integer values
 * beyond 2^24 lose precision in the conversion.
 */
int mrt_safetensors_read_f32(mrt_safetensors *st, int64_t index, float *out /* out */,
                             int64_t numel);
/* Entries of "__metadata__", in header order; strings valid until close. */
int64_t mrt_safetensors_metadata_count(const mrt_safetensors *st);
int mrt_safetensors_metadata(const mrt_safetensors *st, int64_t index,
                             const char **key /* out */, const char **value /* out */);
/*
 * Writes float32 tensors in the given order: names[i], ndims[i] sizes at
 * shapes[8*i], data[i], plus meta_count string pairs as "__metadata__".
 */
int mrt_safetensors_write(const char *path, int64_t count, const char *const *names,
                          const int32_t *ndims, const int64_t *shapes, const float *const *data,
                          int64_t meta_count, const char *const *meta_keys,
                          const char *const *meta_values);

#endif
