/* allowed-registries: an admission-review plugin that refuses images from
 * registries outside a list, naming the image's registry and the list.
 *
 *   config: {"registries": ["registry.example.com", "localhost:5000"],
 *            "allow_local": true}
 *
 * An image is `host[:port]/repo[:tag][@digest]` when its first path
 * component has a '.' or a ':' or is `localhost` (Berth's reference
 * grammar); anything else is a name in the nodes' own stores, allowed
 * unless "allow_local" is false. */
#include <stdlib.h>
#include <string.h>
#include "admission_review.h"
#include "berth_json.h"

#define MAX_REGISTRIES 64
static char registries[MAX_REGISTRIES][256];
static size_t n_registries;
static bool allow_local = true;

bool exports_admission_review_init(admission_review_string_t *config,
                                   admission_review_string_t *err) {
    bj_t cfg = bj_of(config->ptr, config->len), v, it, e;
    bool good = true;
    n_registries = 0;
    if (!bj_get(cfg, "registries", &v)) {
        admission_review_string_dup(err, "config.registries: a list of registry hosts is required");
        good = false;
    } else {
        it = v;
        while (bj_next(&it, &e)) {
            if (n_registries == MAX_REGISTRIES ||
                bj_str(e, registries[n_registries], sizeof registries[0]) <= 0) {
                admission_review_string_dup(err,
                    "config.registries: at most 64 non-empty strings of under 256 bytes");
                good = false;
                break;
            }
            n_registries++;
        }
    }
    if (good && bj_get(cfg, "allow_local", &v)) allow_local = v.p[0] != 'f';
    admission_review_string_free(config);
    return good;
}

/* Appends len bytes of s to buf (of cap bytes, one kept for the NUL). */
static void put(char *buf, size_t *at, size_t cap, const char *s, size_t len) {
    if (*at + len >= cap) len = cap - 1 - *at;
    memcpy(buf + *at, s, len);
    *at += len;
}

/* The registry part of an image reference (length 0: a local name). */
static size_t registry_of(const uint8_t *img, size_t len) {
    size_t slash = 0;
    while (slash < len && img[slash] != '/') slash++;
    if (slash == len) return 0;
    if (slash == 9 && memcmp(img, "localhost", 9) == 0) return slash;
    for (size_t i = 0; i < slash; i++)
        if (img[i] == '.' || img[i] == ':') return slash;
    return 0;
}

void exports_admission_review_review(admission_review_review_request_t *req,
                                     berth_plugin_types_verdict_t *ret) {
    memset(ret, 0, sizeof *ret);
    const uint8_t *img = req->image.ptr;
    size_t n = registry_of(img, req->image.len);
    bool ok = false;
    if (n == 0) {
        ok = allow_local;
    } else {
        for (size_t i = 0; i < n_registries && !ok; i++)
            ok = strlen(registries[i]) == n && memcmp(registries[i], img, n) == 0;
    }
    if (ok) {
        ret->tag = BERTH_PLUGIN_TYPES_VERDICT_ACCEPT;
    } else {
        /* No stdio in a plugin: the message is put together by hand. */
        char msg[1024];
        size_t m = 0;
        if (n == 0) {
            put(msg, &m, sizeof msg, "image: ", 7);
            put(msg, &m, sizeof msg, (const char *)img, req->image.len > 200 ? 200 : req->image.len);
            const char *t = " is a node-local image; only these registries are allowed: ";
            put(msg, &m, sizeof msg, t, strlen(t));
        } else {
            put(msg, &m, sizeof msg, "image: registry ", 16);
            put(msg, &m, sizeof msg, (const char *)img, n > 200 ? 200 : n);
            const char *t = " is not allowed (allowed: ";
            put(msg, &m, sizeof msg, t, strlen(t));
        }
        for (size_t i = 0; i < n_registries; i++) {
            if (i) put(msg, &m, sizeof msg, ", ", 2);
            put(msg, &m, sizeof msg, registries[i], strlen(registries[i]));
        }
        if (n != 0) put(msg, &m, sizeof msg, ")", 1);
        msg[m] = 0;
        ret->tag = BERTH_PLUGIN_TYPES_VERDICT_REJECT;
        admission_review_string_dup(&ret->val.reject, msg);
    }
    admission_review_review_request_free(req);
}
