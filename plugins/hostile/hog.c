/* hostile/hog: a score plugin that takes memory until it gets no more,
 * then aborts, as most programs do. The host's memory cap must stop it. */
#include <stdlib.h>
#include <string.h>
#include "score.h"
bool exports_score_init(score_string_t *c, score_string_t *e) { (void)e; score_string_free(c); return true; }
void exports_score_set_nodes(score_list_node_info_t *n) { score_list_node_info_free(n); }
/* Keeps every block, so the compiler cannot elide the allocations. */
static void *volatile held[1 << 16];

void exports_score_score(score_task_t *t, score_nodes_t *n, score_list_f64_t *ret) {
    for (unsigned i = 0;; i = (i + 1) & 0xFFFF) {
        char *p = malloc(1 << 20);
        if (!p) abort();
        memset(p, 1, 1 << 20);
        held[i] = p;
    }
    (void)t; (void)n; (void)ret;
}
