/*
 * json.h: a small strict JSON parser for file headers (safetensors), private
 * to the engine.
 *
 * It accepts objects, arrays, strings (all escapes, \u surrogate pairs,
 * UTF-8 checked) and integers that fit in int64. It rejects what such
 * headers never contain: fractions and exponents, true/false/null, the
 * escape \u0000, duplicate keys, nesting deeper than 64 levels, and more
 * than MRT_JSON_MAX_ITEMS members in one object or items in one array.
 * Parsing takes O(n log n) time for n values.
 */
#ifndef MRT_JSON_H
#define MRT_JSON_H

#include <stddef.h>
#include <stdint.h>

/*
 * The maximum number of members of one object or items of one array. A
 * safetensors header has one member per tensor (320 for torchvision's
 * ResNet50), so the limit only stops corrupt or hostile headers. A header
 * of a million empty tensors (59 MB) parses in 2 s of CPU time and peaks
 * at 1.25 GB of memory (measured through mrt_safetensors_open on a 2-core
 * x86-64 VM).
 */
enum { MRT_JSON_MAX_ITEMS = 1000000 };

enum mrt_json_type {
    MRT_JSON_OBJECT = 1,
    MRT_JSON_ARRAY = 2,
    MRT_JSON_STRING = 3,
    MRT_JSON_INTEGER = 4
};

typedef struct mrt_json mrt_json;

struct mrt_json {
    int type;              /* enum mrt_json_type */
    char *key;             /* member name when this value is inside an object */
    char *string;          /* MRT_JSON_STRING: NUL-terminated UTF-8 */
    int64_t integer;       /* MRT_JSON_INTEGER */
    mrt_json *items;       /* MRT_JSON_OBJECT and ARRAY: members in document order */
    int64_t count;
    int64_t offset;        /* byte offset of the value in the text, for messages */
    int64_t key_offset;    /* byte offset of the key inside an object, for messages */
};

/*
 * Parses len bytes of text, which may be followed by whitespace only. On
 * failure returns NULL and writes "byte N: what was expected" into error.
 */
mrt_json *mrt_json_parse(const char *text, size_t len, char *error, size_t error_size);
void mrt_json_free(mrt_json *value);
/* The member named key of an object, or NULL; a linear search over the members. */
const mrt_json *mrt_json_get(const mrt_json *object, const char *key);
/* 1 when the NUL-terminated string s is valid UTF-8, else 0. */
int mrt_json_valid_utf8(const char *s);

#endif
