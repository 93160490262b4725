/* label-filter: a filter plugin that keeps the nodes whose label `key`
 * has one of the allowed values.
 *
 *   config: {"key": "pool", "allow": ["gpu", "batch"]}
 *
 * The node table (with labels) comes once per epoch, so each decision only
 * looks up one precomputed flag per node. */
#include <stdlib.h>
#include <string.h>
#include "filter.h"
#include "berth_json.h"

#define MAX_ALLOW 16
static char key[64];
static char allow[MAX_ALLOW][64];
static size_t n_allow;
static uint8_t *ok;        /* per epoch node: 1 when it passes */
static size_t ok_len;
static char reason[256];

static void fail(filter_string_t *err, const char *msg) { filter_string_dup(err, msg); }

bool exports_filter_init(filter_string_t *config, filter_string_t *err) {
    bj_t cfg = bj_of(config->ptr, config->len), v, it, e;
    bool good = false;
    if (!bj_get(cfg, "key", &v) || bj_str(v, key, sizeof key) <= 0) {
        fail(err, "config.key: a label name is required");
    } else if (!bj_get(cfg, "allow", &v)) {
        fail(err, "config.allow: a list of values is required");
    } else {
        it = v;
        n_allow = 0;
        good = true;
        while (bj_next(&it, &e)) {
            if (n_allow == MAX_ALLOW || bj_str(e, allow[n_allow], sizeof allow[0]) < 0) {
                fail(err, "config.allow: at most 16 strings of under 64 bytes");
                good = false;
                break;
            }
            n_allow++;
        }
    }
    if (good) {
        /* "label KEY not in [A, B]": every part is under 64 bytes and at
         * most 16 values, so it fits (no snprintf: stdio is not linked). */
        strcpy(reason, "label ");
        strcat(reason, key);
        strcat(reason, " not in [");
        for (size_t i = 0; i < n_allow && strlen(reason) + strlen(allow[i]) + 4 < sizeof reason; i++) {
            if (i) strcat(reason, ", ");
            strcat(reason, allow[i]);
        }
        strcat(reason, "]");
    }
    filter_string_free(config);
    return good;
}

static bool eq(filter_string_t *s, const char *c) {
    size_t n = strlen(c);
    return s->len == n && memcmp(s->ptr, c, n) == 0;
}

void exports_filter_set_nodes(filter_list_node_info_t *nodes) {
    free(ok);
    ok_len = nodes->len;
    ok = calloc(ok_len + 1, 1);
    for (size_t i = 0; i < ok_len; i++) {
        filter_list_tuple2_string_string_t *labels = &nodes->ptr[i].labels;
        for (size_t l = 0; l < labels->len; l++) {
            if (!eq(&labels->ptr[l].f0, key)) continue;
            for (size_t a = 0; a < n_allow; a++)
                if (eq(&labels->ptr[l].f1, allow[a])) ok[i] = 1;
        }
    }
    filter_list_node_info_free(nodes);
}

void exports_filter_filter(filter_task_t *task, filter_nodes_t *nodes, berth_plugin_types_verdicts_t *ret) {
    size_t n = nodes->index.len;
    ret->codes.ptr = malloc(n ? n : 1);
    ret->codes.len = n;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = nodes->index.ptr[i];
        ret->codes.ptr[i] = (k < ok_len && ok[k]) ? 0 : 1;
    }
    ret->reasons.ptr = malloc(sizeof(filter_string_t));
    ret->reasons.len = 1;
    filter_string_dup(&ret->reasons.ptr[0], reason);
    filter_task_free(task);
    filter_nodes_free(nodes);
}
