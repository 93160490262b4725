/* last-gpu: an allocate plugin that gives a task the highest-numbered free
 * GPUs of the chosen node (the host's default takes the lowest), e.g. to
 * keep GPU 0, which drives a display or runs system daemons, free for
 * last. Requests the plugin does not handle (MIG) defer to the host. */
#include <stdlib.h>
#include "allocate.h"

bool exports_allocate_init(allocate_string_t *c, allocate_string_t *e) { (void)e; allocate_string_free(c); return true; }
void exports_allocate_set_nodes(allocate_list_node_info_t *n) { allocate_list_node_info_free(n); }

bool exports_allocate_allocate(allocate_task_t *t, allocate_nodes_t *n, berth_plugin_types_choice_t *ret, allocate_string_t *err) {
    bool ok = true;
    ret->gpus.ptr = NULL;
    ret->gpus.len = 0;
    berth_plugin_types_gpu_request_t *r = &t->gpu.val;
    if (t->gpu.is_some && r->mig_profile.len == 0 && n->index.len == 1) {
        uint32_t start = n->gpu_start.ptr[0], count = n->gpu_start.ptr[1] - start;
        uint32_t want = r->milli < 1000 ? 1 : r->count, need = r->milli < 1000 ? r->milli : 1000;
        ret->gpus.ptr = malloc(sizeof(uint32_t) * (want ? want : 1));
        for (uint32_t g = count; g-- > 0 && ret->gpus.len < want;)
            if (n->gpu_free.ptr[start + g] >= need) ret->gpus.ptr[ret->gpus.len++] = g;
        if (ret->gpus.len < want) {
            allocate_string_dup(err, "not enough free GPUs");
            ok = false;
        }
    }
    allocate_task_free(t);
    allocate_nodes_free(n);
    return ok;
}
