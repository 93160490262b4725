/* binpack: a score plugin that prefers the fullest node that fits, the
 * same rule as Berth's native `binpack` scorer (used to compare native and
 * Wasm costs): 100 x the mean of CPU and memory utilisation after placing
 * the task. */
#include <stdlib.h>
#include "score.h"

static uint64_t *cpu_cap, *mem_cap;
static size_t nodes_len;

bool exports_score_init(score_string_t *config, score_string_t *err) {
    (void)err;
    score_string_free(config);
    return true;
}

void exports_score_set_nodes(score_list_node_info_t *nodes) {
    free(cpu_cap);
    free(mem_cap);
    nodes_len = nodes->len;
    cpu_cap = malloc(sizeof(uint64_t) * (nodes_len + 1));
    mem_cap = malloc(sizeof(uint64_t) * (nodes_len + 1));
    for (size_t i = 0; i < nodes_len; i++) {
        cpu_cap[i] = nodes->ptr[i].cpu_capacity;
        mem_cap[i] = nodes->ptr[i].mem_capacity;
    }
    score_list_node_info_free(nodes);
}

static double frac(uint64_t used, uint64_t add, uint64_t cap) {
    if (cap == 0) return 1.0;
    double f = (double)(used + add) / (double)cap;
    return f < 1.0 ? f : 1.0;
}

void exports_score_score(score_task_t *task, score_nodes_t *nodes, score_list_f64_t *ret) {
    size_t n = nodes->index.len;
    ret->ptr = malloc(sizeof(double) * (n ? n : 1));
    ret->len = n;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = nodes->index.ptr[i];
        uint64_t cc = k < nodes_len ? cpu_cap[k] : 0, mc = k < nodes_len ? mem_cap[k] : 0;
        uint64_t cu = cc - nodes->cpu_free.ptr[i], mu = mc - nodes->mem_free.ptr[i];
        ret->ptr[i] = 100.0 * (frac(cu, task->cpu, cc) + frac(mu, task->memory, mc)) / 2.0;
    }
    score_task_free(task);
    score_nodes_free(nodes);
}
