/* hostile/trap: a filter plugin that traps (like a crash in C). */
#include "filter.h"
bool exports_filter_init(filter_string_t *c, filter_string_t *e) { (void)e; filter_string_free(c); return true; }
void exports_filter_set_nodes(filter_list_node_info_t *n) { filter_list_node_info_free(n); }
void exports_filter_filter(filter_task_t *t, filter_nodes_t *n, berth_plugin_types_verdicts_t *ret) {
    (void)t; (void)n; (void)ret;
    __builtin_trap();
}
