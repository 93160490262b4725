/* hostile/badlen: a score plugin whose output is wrong: one score too many
 * ({"mode": "length"}, the default), scores out of range ("range") or NaN
 * ("nan"). The host must refuse the output. */
#include <math.h>
#include <stdlib.h>
#include "score.h"
#include "berth_json.h"
static int mode;
bool exports_score_init(score_string_t *c, score_string_t *e) {
    bj_t cfg = bj_of(c->ptr, c->len), v;
    (void)e;
    if (bj_get(cfg, "mode", &v)) mode = bj_is(v, "range") ? 1 : bj_is(v, "nan") ? 2 : 0;
    score_string_free(c);
    return true;
}
void exports_score_set_nodes(score_list_node_info_t *n) { score_list_node_info_free(n); }
void exports_score_score(score_task_t *t, score_nodes_t *n, score_list_f64_t *ret) {
    size_t len = n->index.len + (mode == 0);
    ret->ptr = malloc(sizeof(double) * len);
    ret->len = len;
    for (size_t i = 0; i < len; i++) ret->ptr[i] = mode == 1 ? 1000.0 : mode == 2 ? NAN : 50.0;
    score_task_free(t);
    score_nodes_free(n);
}
