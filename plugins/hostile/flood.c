/* hostile/flood: a score plugin that logs a hundred thousand lines per
 * call, then answers correctly. The host's log budget must drop the flood
 * and keep the plugin's answer. */
#include <stdlib.h>
#include "score.h"
bool exports_score_init(score_string_t *c, score_string_t *e) { (void)e; score_string_free(c); return true; }
void exports_score_set_nodes(score_list_node_info_t *n) { score_list_node_info_free(n); }
void exports_score_score(score_task_t *t, score_nodes_t *n, score_list_f64_t *ret) {
    score_string_t msg;
    score_string_set(&msg, "flood flood flood flood flood flood flood flood flood flood");
    for (int i = 0; i < 100000; i++) berth_plugin_host_log(BERTH_PLUGIN_HOST_LEVEL_INFO, &msg);
    size_t len = n->index.len;
    ret->ptr = malloc(sizeof(double) * (len ? len : 1));
    ret->len = len;
    for (size_t i = 0; i < len; i++) ret->ptr[i] = 50.0;
    score_task_free(t);
    score_nodes_free(n);
}
