/* team-admission: an admission plugin for a platform team's rules.
 *
 * - An app that asks for GPUs must carry a `team` label (so GPU time can
 *   be charged): rejected otherwise, saying so.
 * - An app asking for less than the minimum CPU or memory is raised to it,
 *   and labelled `admitted-by: team-admission`.
 *
 *   config: {"min_cpu": 250, "min_memory": 134217728}   (millicores, bytes)
 */
#include <stdlib.h>
#include <string.h>
#include "admission.h"
#include "berth_json.h"

static uint64_t min_cpu = 250, min_memory = 128ull << 20;

bool exports_admission_init(admission_string_t *config, admission_string_t *err) {
    bj_t cfg = bj_of(config->ptr, config->len), v;
    bool good = true;
    if (bj_get(cfg, "min_cpu", &v)) min_cpu = (uint64_t)bj_num(v);
    if (bj_get(cfg, "min_memory", &v)) min_memory = (uint64_t)bj_num(v);
    if (min_cpu == 0 || min_memory == 0) {
        admission_string_dup(err, "config.min_cpu and config.min_memory must be positive numbers");
        good = false;
    }
    admission_string_free(config);
    return good;
}

static bool has_label(admission_task_t *app, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < app->labels.len; i++) {
        admission_string_t *k = &app->labels.ptr[i].f0;
        if (k->len == n && memcmp(k->ptr, key, n) == 0 && app->labels.ptr[i].f1.len > 0) return true;
    }
    return false;
}

void exports_admission_admit(admission_task_t *app, berth_plugin_types_verdict_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (app->gpu.is_some && !has_label(app, "team")) {
        ret->tag = BERTH_PLUGIN_TYPES_VERDICT_REJECT;
        admission_string_dup(&ret->val.reject, "apps that ask for GPUs need a team label (labels: {team: NAME})");
    } else if ((app->cores == 0 && app->cpu < min_cpu) || app->memory < min_memory) {
        berth_plugin_types_patch_t *p = &ret->val.mutate;
        ret->tag = BERTH_PLUGIN_TYPES_VERDICT_MUTATE;
        if (app->cores == 0 && app->cpu < min_cpu) { p->cpu.is_some = true; p->cpu.val = min_cpu; }
        if (app->memory < min_memory) { p->memory.is_some = true; p->memory.val = min_memory; }
        p->labels.ptr = malloc(sizeof *p->labels.ptr);
        p->labels.len = 1;
        admission_string_dup(&p->labels.ptr[0].f0, "admitted-by");
        admission_string_dup(&p->labels.ptr[0].f1, "team-admission");
    } else {
        ret->tag = BERTH_PLUGIN_TYPES_VERDICT_ACCEPT;
    }
    admission_task_free(app);
}
