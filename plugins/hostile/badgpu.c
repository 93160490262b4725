/* hostile/badgpu: an allocate plugin that names a GPU the node does not
 * have. The host must refuse the choice. */
#include <stdlib.h>
#include "allocate.h"
bool exports_allocate_init(allocate_string_t *c, allocate_string_t *e) { (void)e; allocate_string_free(c); return true; }
void exports_allocate_set_nodes(allocate_list_node_info_t *n) { allocate_list_node_info_free(n); }
bool exports_allocate_allocate(allocate_task_t *t, allocate_nodes_t *n, berth_plugin_types_choice_t *ret, allocate_string_t *err) {
    (void)err;
    ret->gpus.ptr = malloc(sizeof(uint32_t));
    ret->gpus.ptr[0] = 99;
    ret->gpus.len = 1;
    allocate_task_free(t);
    allocate_nodes_free(n);
    return true;
}
