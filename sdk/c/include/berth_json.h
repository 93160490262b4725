/* berth_json.h: reads a plugin's JSON configuration in C, without
 * allocating. Header-only. A value is a span of the text; look members up
 * by key, walk arrays, and read numbers and strings.
 *
 *   bj_t cfg = bj_of(config->ptr, config->len), v;
 *   if (bj_get(cfg, "label", &v)) bj_str(v, buf, sizeof buf);
 *
 * Malformed input never reads past the text: lookups just fail.
 * Part of Berth's C SDK (Apache-2.0). */
#ifndef BERTH_JSON_H
#define BERTH_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *p; const char *end; } bj_t;

static inline bj_t bj_of(const void *text, size_t len) {
    bj_t v = { (const char *)text, (const char *)text + len };
    return v;
}

static inline const char *bj__ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* The end of the value starting at p (after whitespace), or NULL. */
static inline const char *bj__skip(const char *p, const char *end) {
    p = bj__ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\') { p++; continue; }
            if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') { p = bj__skip(p, end); if (!p) return NULL; p--; continue; }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') { if (--depth == 0) return p + 1; }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') p++;
    return p;
}

static inline bj_t bj__trim(bj_t v) {
    v.p = bj__ws(v.p, v.end);
    const char *e = bj__skip(v.p, v.end);
    if (e) v.end = e;
    return v;
}

/* The i-th value of an array or the value of each member of an object,
 * one by one: *it starts as the container; returns false at the end. */
static inline bool bj_next(bj_t *it, bj_t *out) {
    const char *p = bj__ws(it->p, it->end);
    if (p >= it->end) return false;
    if (*p == '[' || *p == '{' || *p == ',') p = bj__ws(p + 1, it->end);
    if (p >= it->end || *p == ']' || *p == '}') return false;
    const char *e = bj__skip(p, it->end);
    if (!e) return false;
    out->p = p;
    out->end = e;
    it->p = e;
    return true;
}

/* Whether a string value equals s. */
static inline bool bj_is(bj_t v, const char *s) {
    size_t n = strlen(s);
    return v.end - v.p == (ptrdiff_t)(n + 2) && v.p[0] == '"' && memcmp(v.p + 1, s, n) == 0;
}

/* The member `key` of an object. */
static inline bool bj_get(bj_t obj, const char *key, bj_t *out) {
    obj = bj__trim(obj);
    if (obj.p >= obj.end || *obj.p != '{') return false;
    bj_t it = obj, k;
    while (bj_next(&it, &k)) {
        const char *p = bj__ws(k.end, it.end);
        if (p >= it.end || *p != ':') return false;
        bj_t val = { p + 1, it.end };
        val = bj__trim(val);
        if (val.p >= val.end) return false;
        it.p = val.end;
        if (bj_is(k, key)) { *out = val; return true; }
    }
    return false;
}

/* A number (0 when it is not one). */
static inline double bj_num(bj_t v) {
    char buf[64];
    size_t n = (size_t)(v.end - v.p);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, v.p, n);
    buf[n] = 0;
    return strtod(buf, NULL);
}

/* Copies a string value (without quotes; \" and \\ unescaped) into buf,
 * NUL-terminated; returns its length, or -1 if it is not a string or does
 * not fit. */
static inline long bj_str(bj_t v, char *buf, size_t cap) {
    if (v.end - v.p < 2 || *v.p != '"') return -1;
    size_t n = 0;
    for (const char *p = v.p + 1; p < v.end - 1; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < v.end - 1) c = *++p;
        if (n + 1 >= cap) return -1;
        buf[n++] = c;
    }
    buf[n] = 0;
    return (long)n;
}

#endif
