/* hostile/loop: a score plugin that never returns. The host's time budget
 * must stop it. */
#include "score.h"
bool exports_score_init(score_string_t *c, score_string_t *e) { (void)e; score_string_free(c); return true; }
void exports_score_set_nodes(score_list_node_info_t *n) { score_list_node_info_free(n); }
void exports_score_score(score_task_t *t, score_nodes_t *n, score_list_f64_t *ret) {
    volatile uint64_t i = 0;
    for (;;) i++;
    (void)t; (void)n; (void)ret;
}
