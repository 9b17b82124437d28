/*
 * json.c: the strict JSON parser of json.h, recursive descent over a byte
 * buffer that need not be NUL-terminated.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

enum { JSON_MAX_DEPTH = 64 };

typedef struct parser {
    const char *text;
    size_t len;
    size_t pos;
    char *error;
    size_t error_size;
    int failed;
} parser;

/* Records the first error only; later ones are consequences of it. */
static int fail_at(parser *p, size_t pos, const char *fmt, ...)
{
    if (!p->failed) {
        int n = snprintf(p->error, p->error_size, "byte %zu: ", pos);
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < p->error_size)
            vsnprintf(p->error + n, p->error_size - (size_t)n, fmt, ap);
        va_end(ap);
        p->failed = 1;
    }
    return -1;
}

static void skip_space(parser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* The byte at the cursor, or -1 at the end. */
static int peek(const parser *p)
{
    return p->pos < p->len ? (unsigned char)p->text[p->pos] : -1;
}

static void free_contents(mrt_json *v)
{
    for (int64_t i = 0; i < v->count; i++)
        free_contents(&v->items[i]);
    free(v->items);
    free(v->key);
    free(v->string);
}

void mrt_json_free(mrt_json *value)
{
    if (value == NULL)
        return;
    free_contents(value);
    free(value);
}

/* ---- strings ---------------------------------------------------------------- */

typedef struct buffer {
    char *data;
    size_t len, cap;
} buffer;

static int buffer_put(buffer *b, const char *bytes, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 32;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid. */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static int put_code_point(buffer *b, uint32_t cp)
{
    char out[4];
    size_t n;

    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buffer_put(b, out, n);
}

/* Reads the 4 hex digits after "\u"; returns the value or -1. */
static long read_hex4(parser *p)
{
    long value = 0;

    if (p->len - p->pos < 4)
        return fail_at(p, p->pos, "expected 4 hex digits after \\u");
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos + (size_t)i];
        int digit = c >= '0' && c <= '9' ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
        if (digit < 0)
            return fail_at(p, p->pos + (size_t)i, "expected a hex digit after \\u");
        value = value * 16 + digit;
    }
    p->pos += 4;
    return value;
}

/* Decodes "\uXXXX", joining a UTF-16 surrogate pair into one code point. */
static int read_unicode_escape(parser *p, buffer *b)
{
    size_t start = p->pos - 2;
    long cp = read_hex4(p);

    if (cp < 0)
        return -1;
    if (cp == 0)
        return fail_at(p, start, "the escape \\u0000 is not supported");
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail_at(p, start, "unpaired low surrogate \\u%04lX", cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return fail_at(p, start, "high surrogate \\u%04lX without a low surrogate", cp);
        p->pos += 2;
        long low = read_hex4(p);
        if (low < 0)
            return -1;
        if (low < 0xDC00 || low > 0xDFFF)
            return fail_at(p, start, "high surrogate \\u%04lX followed by \\u%04lX", cp, low);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (put_code_point(b, (uint32_t)cp) != 0)
        return fail_at(p, start, "out of memory");
    return 0;
}

static int read_escape(parser *p, buffer *b)
{
    static const char from[] = "\"\\/bfnrt";
    static const char to[] = "\"\\/\b\f\n\r\t";
    size_t start = p->pos;

    p->pos++; /* the backslash */
    if (p->pos >= p->len)
        return fail_at(p, start, "unterminated string");
    char c = p->text[p->pos++];
    if (c == 'u')
        return read_unicode_escape(p, b);
    const char *hit = c != '\0' ? strchr(from, c) : NULL;
    if (hit == NULL)
        return fail_at(p, start, "invalid escape \\%c", c);
    if (buffer_put(b, &to[hit - from], 1) != 0)
        return fail_at(p, start, "out of memory");
    return 0;
}

/* Parses a string at the cursor (an opening quote) into a new NUL-terminated copy. */
static char *read_string(parser *p)
{
    buffer b = {NULL, 0, 0};
    size_t start = p->pos;

    p->pos++; /* the opening quote */
    if (buffer_put(&b, "", 0) != 0) {
        fail_at(p, start, "out of memory");
        return NULL;
    }
    for (;;) {
        if (p->pos >= p->len) {
            fail_at(p, start, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '"') {
            p->pos++;
            return b.data;
        }
        if (c == '\\') {
            if (read_escape(p, &b) != 0)
                break;
            continue;
        }
        if (c < 0x20) {
            fail_at(p, p->pos, "control character 0x%02x in a string (expected it escaped)", c);
            break;
        }
        size_t n = utf8_length((const unsigned char *)p->text + p->pos, p->len - p->pos);
        if (n == 0) {
            fail_at(p, p->pos, "invalid UTF-8 byte 0x%02x in a string", c);
            break;
        }
        if (buffer_put(&b, p->text + p->pos, n) != 0) {
            fail_at(p, p->pos, "out of memory");
            break;
        }
        p->pos += n;
    }
    free(b.data);
    return NULL;
}

/* ---- numbers, arrays and objects ------------------------------------------- */

static int read_integer(parser *p, mrt_json *v)
{
    size_t start = p->pos;
    int negative = peek(p) == '-';
    uint64_t magnitude = 0;
    const uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;

    if (negative)
        p->pos++;
    if (peek(p) < '0' || peek(p) > '9')
        return fail_at(p, start, "expected a digit");
    if (peek(p) == '0' && p->pos + 1 < p->len && p->text[p->pos + 1] >= '0' &&
        p->text[p->pos + 1] <= '9')
        return fail_at(p, start, "leading zero in a number");
    while (peek(p) >= '0' && peek(p) <= '9') {
        unsigned digit = (unsigned)(peek(p) - '0');
        if (magnitude > (limit - digit) / 10)
            return fail_at(p, start, "integer out of the int64 range");
        magnitude = magnitude * 10 + digit;
        p->pos++;
    }
    if (peek(p) == '.' || peek(p) == 'e' || peek(p) == 'E')
        return fail_at(p, start, "fractions and exponents are not supported (expected an integer)");
    v->type = MRT_JSON_INTEGER;
    v->integer = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
    return 0;
}

static int read_value(parser *p, mrt_json *v, int depth);

/* Appends a zeroed item to a container and returns it, or NULL when out of memory. */
static mrt_json *add_item(mrt_json *container, int64_t *capacity)
{
    if (container->count == *capacity) {
        int64_t grown = *capacity ? 2 * *capacity : 4;
        mrt_json *items = realloc(container->items, (size_t)grown * sizeof *items);
        if (items == NULL)
            return NULL;
        container->items = items;
        *capacity = grown;
    }
    mrt_json *item = &container->items[container->count++];
    memset(item, 0, sizeof *item);
    return item;
}

static int read_array(parser *p, mrt_json *v, int depth)
{
    int64_t capacity = 0;

    v->type = MRT_JSON_ARRAY;
    p->pos++; /* [ */
    skip_space(p);
    if (peek(p) == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (v->count == MRT_JSON_MAX_ITEMS)
            return fail_at(p, p->pos, "more than %d items in an array", MRT_JSON_MAX_ITEMS);
        mrt_json *item = add_item(v, &capacity);
        if (item == NULL)
            return fail_at(p, p->pos, "out of memory");
        if (read_value(p, item, depth + 1) != 0)
            return -1;
        skip_space(p);
        if (peek(p) == ']') {
            p->pos++;
            return 0;
        }
        if (peek(p) != ',')
            return fail_at(p, p->pos, "expected ',' or ']' in an array");
        p->pos++;
    }
}

/* Reads `"key": value` into a new member of the object v. */
static int read_member(parser *p, mrt_json *v, int64_t *capacity, int depth)
{
    size_t key_pos;

    skip_space(p);
    if (peek(p) != '"')
        return fail_at(p, p->pos, "expected a string key in an object");
    key_pos = p->pos;
    char *key = read_string(p);
    if (key == NULL)
        return -1;
    mrt_json *item = add_item(v, capacity);
    if (item == NULL) {
        free(key);
        return fail_at(p, p->pos, "out of memory");
    }
    item->key = key;
    item->key_offset = (int64_t)key_pos;
    skip_space(p);
    if (peek(p) != ':')
        return fail_at(p, p->pos, "expected ':' after an object key");
    p->pos++;
    return read_value(p, item, depth + 1);
}

/* Orders members by key, then by position in the text. */
static int compare_members(const void *a, const void *b)
{
    const mrt_json *x = *(const mrt_json *const *)a, *y = *(const mrt_json *const *)b;
    int order = strcmp(x->key, y->key);

    if (order != 0)
        return order;
    return x->key_offset < y->key_offset ? -1 : x->key_offset > y->key_offset;
}

/*
 * Fails on the first member, in document order, whose key an earlier member
 * of the object already has. Sorting the members by key makes this
 * O(n log n), where comparing each key with all earlier ones is O(n^2).
 */
static int check_duplicates(parser *p, const mrt_json *v)
{
    const mrt_json *first_repeat = NULL;

    if (v->count < 2)
        return 0;
    const mrt_json **sorted = malloc((size_t)v->count * sizeof *sorted);
    if (sorted == NULL)
        return fail_at(p, (size_t)v->offset, "out of memory");
    for (int64_t i = 0; i < v->count; i++)
        sorted[i] = &v->items[i];
    qsort(sorted, (size_t)v->count, sizeof *sorted, compare_members);
    for (int64_t i = 1; i < v->count; i++) {
        const mrt_json *repeat = sorted[i];
        if (strcmp(repeat->key, sorted[i - 1]->key) == 0 &&
            (first_repeat == NULL || repeat->key_offset < first_repeat->key_offset))
            first_repeat = repeat;
    }
    free(sorted);
    if (first_repeat != NULL)
        return fail_at(p, (size_t)first_repeat->key_offset, "duplicate key \"%s\"",
                       first_repeat->key);
    return 0;
}

static int read_object(parser *p, mrt_json *v, int depth)
{
    int64_t capacity = 0;

    v->type = MRT_JSON_OBJECT;
    p->pos++; /* { */
    skip_space(p);
    if (peek(p) == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (v->count == MRT_JSON_MAX_ITEMS)
            return fail_at(p, p->pos, "more than %d members in an object", MRT_JSON_MAX_ITEMS);
        if (read_member(p, v, &capacity, depth) != 0)
            return -1;
        skip_space(p);
        if (peek(p) == '}') {
            p->pos++;
            return check_duplicates(p, v);
        }
        if (peek(p) != ',')
            return fail_at(p, p->pos, "expected ',' or '}' in an object");
        p->pos++;
    }
}

static int read_value(parser *p, mrt_json *v, int depth)
{
    int c;

    if (depth > JSON_MAX_DEPTH)
        return fail_at(p, p->pos, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    skip_space(p);
    v->offset = (int64_t)p->pos;
    c = peek(p);
    if (c == '{')
        return read_object(p, v, depth);
    if (c == '[')
        return read_array(p, v, depth);
    if (c == '"') {
        v->type = MRT_JSON_STRING;
        v->string = read_string(p);
        return v->string != NULL ? 0 : -1;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return read_integer(p, v);
    if (c == -1)
        return fail_at(p, p->pos, "unexpected end of text (expected a value)");
    if (c == 't' || c == 'f' || c == 'n')
        return fail_at(p, p->pos, "true, false and null are not supported (expected an object, "
                       "array, string or integer)");
    return fail_at(p, p->pos, "unexpected character 0x%02x (expected a value)", c);
}

mrt_json *mrt_json_parse(const char *text, size_t len, char *error, size_t error_size)
{
    parser p = {text, len, 0, error, error_size, 0};
    mrt_json *root = calloc(1, sizeof *root);

    if (error_size > 0)
        error[0] = '\0';
    if (root == NULL) {
        fail_at(&p, 0, "out of memory");
        return NULL;
    }
    if (read_value(&p, root, 0) == 0) {
        skip_space(&p);
        if (p.pos < p.len)
            fail_at(&p, p.pos, "unexpected text after the value");
    }
    if (p.failed) {
        mrt_json_free(root);
        return NULL;
    }
    return root;
}

const mrt_json *mrt_json_get(const mrt_json *object, const char *key)
{
    if (object == NULL || object->type != MRT_JSON_OBJECT)
        return NULL;
    for (int64_t i = 0; i < object->count; i++)
        if (object->items[i].key != NULL && strcmp(object->items[i].key, key) == 0)
            return &object->items[i];
    return NULL;
}

int mrt_json_valid_utf8(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);

    while (n > 0) {
        size_t len = utf8_length(u, n);
        if (len == 0)
            return 0;
        u += len;
        n -= len;
    }
    return 1;
}
