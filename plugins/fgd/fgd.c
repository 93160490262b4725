/* fgd: FGD (fragmentation gradient descent, Weng et al., USENIX ATC'23)
 * as a Wasm policy: scores nodes by how much a placement lowers the GPU
 * capacity the typical tasks could not use, and picks the GPU of a shared
 * request the same way. A port of Berth's native `fgd` (core/sched/src/
 * policy/frag.rs), number for number, so both make the same decisions.
 *
 *   config: {"typical": [[cpu_millis, milli, count, weight, "models"], ...]}
 *
 * `models` is FGD's allowed-model string (`A|B`, empty: any); weights sum
 * to 1 (Berth's `typical_pods` computes them from a workload).
 * Whole-GPU and other requests defer their GPU choice to the host (an
 * empty choice), as the native policy does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"
#include "berth_json.h"

#define GPU_MILLI 1000
#define MAX_CLASSES 512
#define MAX_GPUS 64

typedef struct {
    uint64_t cpu;
    uint32_t milli, count;
    double weight;
    char models[128];
    size_t cpu_rank;
} class_t;

static class_t classes[MAX_CLASSES];
static size_t n_classes;
static uint64_t levels[MAX_CLASSES];
static size_t n_levels;

/* Small, so the table of 10,000 nodes stays in cache: each GPU's memory
 * and model live in flat arrays from `gpu`. */
typedef struct {
    int model;          /* index into models[] */
    uint32_t gpus;
    uint32_t gpu;       /* the node's first entry in gpu_memory/gpu_model */
} node_t;

static node_t *nodes;
static size_t n_nodes;
static uint64_t *gpu_memory;
static int *gpu_model;
static char (*model_names)[128];
static size_t n_models;
static uint8_t *allowed; /* [model][class] */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

bool exports_policy_init(policy_string_t *config, policy_string_t *err) {
    bj_t cfg = bj_of(config->ptr, config->len), list, it, row, f;
    bool good = bj_get(cfg, "typical", &list);
    n_classes = 0;
    it = list;
    while (good && bj_next(&it, &row)) {
        class_t *c = &classes[n_classes];
        bj_t r = row;
        double v[4];
        for (int k = 0; k < 4; k++) {
            if (!bj_next(&r, &f)) { good = false; break; }
            v[k] = bj_num(f);
        }
        if (!good || !bj_next(&r, &f) || bj_str(f, c->models, sizeof c->models) < 0 || n_classes == MAX_CLASSES) {
            good = false;
            break;
        }
        c->cpu = (uint64_t)v[0];
        c->milli = (uint32_t)v[1];
        c->count = (uint32_t)v[2];
        c->weight = v[3];
        if (c->milli == 0 || c->count == 0) { c->milli = 0; c->count = 0; c->models[0] = 0; }
        levels[n_classes] = c->cpu;
        n_classes++;
    }
    if (!good) {
        policy_string_dup(err, "config.typical: a list of [cpu_millis, milli, count, weight, \"models\"] (at most 512)");
    } else {
        qsort(levels, n_classes, sizeof levels[0], cmp_u64);
        n_levels = 0;
        for (size_t i = 0; i < n_classes; i++)
            if (n_levels == 0 || levels[n_levels - 1] != levels[i]) levels[n_levels++] = levels[i];
        for (size_t i = 0; i < n_classes; i++) {
            size_t r = 0;
            while (r < n_levels && levels[r] < classes[i].cpu) r++;
            classes[i].cpu_rank = r;
        }
    }
    policy_string_free(config);
    return good;
}

/* FGD's exact-token model match: `A|B` allows A and B; empty allows any. */
static bool shape_allows(const char *spec, const char *model) {
    bool any = false;
    size_t mlen = strlen(model);
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0) {
            any = true;
            if (len == mlen && memcmp(p, model, len) == 0) return true;
        }
        if (!e) break;
        p = e + 1;
    }
    return !any;
}

static int intern_model(policy_string_t *s) {
    char name[128];
    size_t n = s->len < sizeof name - 1 ? s->len : sizeof name - 1;
    memcpy(name, s->ptr, n);
    name[n] = 0;
    for (size_t i = 0; i < n_models; i++)
        if (strcmp(model_names[i], name) == 0) return (int)i;
    model_names = realloc(model_names, sizeof *model_names * (n_models + 1));
    allowed = realloc(allowed, MAX_CLASSES * (n_models + 1));
    strcpy(model_names[n_models], name);
    for (size_t c = 0; c < n_classes; c++) allowed[n_models * MAX_CLASSES + c] = shape_allows(classes[c].models, name);
    return (int)n_models++;
}

void exports_policy_set_nodes(policy_list_node_info_t *list) {
    free(nodes);
    free(gpu_memory);
    free(gpu_model);
    n_nodes = list->len;
    size_t total = 0;
    for (size_t i = 0; i < n_nodes; i++)
        total += list->ptr[i].gpus.len < MAX_GPUS ? list->ptr[i].gpus.len : MAX_GPUS;
    nodes = calloc(n_nodes + 1, sizeof *nodes);
    gpu_memory = calloc(total + 1, sizeof *gpu_memory);
    gpu_model = calloc(total + 1, sizeof *gpu_model);
    uint32_t next = 0;
    for (size_t i = 0; i < n_nodes; i++) {
        berth_plugin_types_node_info_t *in = &list->ptr[i];
        node_t *n = &nodes[i];
        n->gpus = in->gpus.len < MAX_GPUS ? (uint32_t)in->gpus.len : MAX_GPUS;
        n->gpu = next;
        for (uint32_t g = 0; g < n->gpus; g++) {
            gpu_memory[next + g] = in->gpus.ptr[g].memory;
            gpu_model[next + g] = intern_model(&in->gpus.ptr[g].model);
        }
        n->model = n->gpus ? gpu_model[next] : -1;
        next += n->gpus;
    }
    policy_list_node_info_free(list);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* F depends only on the model, the CPU level and the sorted free GPUs:
 * memoised on that key (as the native model is), for nodes of up to 8
 * GPUs, in an open-addressing table (2 MiB) cleared when 3/4 full. A
 * slot is free while its k[0] is 0 (a key's k[0] holds n >= 1). */
#define MEMO_BITS 16
#define MEMO_GPUS 8
typedef struct { uint64_t k[3]; double v; } memo_t;
static memo_t memo[1 << MEMO_BITS];
static size_t memo_len;

static void sort_small(uint32_t *a, uint32_t n) {
    for (uint32_t i = 1; i < n; i++) {
        uint32_t x = a[i], j = i;
        while (j > 0 && a[j - 1] > x) { a[j] = a[j - 1]; j--; }
        a[j] = x;
    }
}

static double compute(int model, size_t level, const uint32_t *sorted, uint32_t n);

/* The CPU level of a node with `cpu_free`: how many of the typical tasks'
 * distinct CPU requests it covers. */
static size_t level_of(uint64_t cpu_free) {
    size_t lo = 0, hi = n_levels; /* levels[] ascends: binary search */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (levels[mid] <= cpu_free) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* F(n): the GPU capacity the typical tasks could not use. */
static double frag(int model, size_t level, const uint32_t *frees, uint32_t n) {
    if (n == 0) return 0.0;
    uint32_t sorted[MAX_GPUS];
    memcpy(sorted, frees, n * sizeof *frees);
    if (n > MEMO_GPUS || model < 0) {
        qsort(sorted, n, sizeof *sorted, cmp_u32);
        return compute(model, level, sorted, n);
    }
    sort_small(sorted, n);
    uint64_t k[3] = { (uint64_t)model << 48 | (uint64_t)n << 40 | level, 0, 0 };
    for (uint32_t i = 0; i < n; i++) k[1 + i / 4] |= (uint64_t)(sorted[i] & 0xFFFF) << (16 * (i % 4));
    uint64_t h = (k[0] * 0x9E3779B97F4A7C15ull) ^ (k[1] * 0xC2B2AE3D27D4EB4Full) ^ (k[2] * 0x165667B19E3779F9ull);
    size_t mask = (1 << MEMO_BITS) - 1, at = (size_t)(h >> 20) & mask;
    while (memo[at].k[0]) {
        if (memo[at].k[0] == k[0] && memo[at].k[1] == k[1] && memo[at].k[2] == k[2]) return memo[at].v;
        at = (at + 1) & mask;
    }
    double v = compute(model, level, sorted, n);
    if (memo_len * 4 >= (size_t)3 << MEMO_BITS) {
        memset(memo, 0, sizeof memo);
        memo_len = 0;
        at = (size_t)(h >> 20) & mask;
    }
    memo[at].k[0] = k[0]; memo[at].k[1] = k[1]; memo[at].k[2] = k[2];
    memo[at].v = v;
    memo_len++;
    return v;
}

/* FGD's buckets, summed in FGD's order, for sorted free GPUs. */
static double compute(int model, size_t level, const uint32_t *sorted, uint32_t n) {
    uint32_t total = 0;
    for (uint32_t i = 0; i < n; i++) total += sorted[i];
    double s = (double)total;
    double q1 = 0, q2 = 0, q4 = 0, xl = 0, xr = 0, na = 0;
    for (size_t c = 0; c < n_classes; c++) {
        const class_t *k = &classes[c];
        double w = k->weight;
        bool cpu_ok = k->cpu_rank < level;
        if (k->milli == 0) {
            if (cpu_ok) xl += w * s; else xr += w * s;
            continue;
        }
        if (model < 0 || !allowed[(size_t)model * MAX_CLASSES + c]) { na += w * s; continue; }
        uint32_t small = 0;
        while (small < n && sorted[small] < k->milli) small++;
        bool fits = n - small >= k->count;
        if (fits && cpu_ok) {
            uint32_t part = 0;
            for (uint32_t i = 0; i < small; i++) part += sorted[i];
            q2 += w * (double)part;
        } else if (fits) {
            q4 += w * s;
        } else if (cpu_ok) {
            q2 += w * s;
        } else {
            q1 += w * s;
        }
    }
    return q1 + q2 + q4 + xl + xr + na;
}

/* fgd_score(0.0): trunc(100 * sigmoid(0)). */
#define FGD_SCORE_0 50

static int64_t fgd_score(double delta) {
    return (int64_t)(1.0 / (1.0 + exp(-(delta / 1000.0))) * 100.0);
}

static bool model_ok(policy_task_t *t, int model) {
    berth_plugin_types_gpu_request_t *r = &t->gpu.val;
    if (r->models.len == 0) return true;
    if (model < 0) return false;
    const char *name = model_names[model];
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->models.len; i++) {
        policy_string_t *m = &r->models.ptr[i];
        if (m->len <= nl) {
            for (size_t off = 0; off + m->len <= nl; off++)
                if (memcmp(name + off, m->ptr, m->len) == 0) return true;
        }
    }
    return false;
}

/* FGD's verdict for the task on candidate row i: the score (or -1 when
 * its GPUs cannot hold it) and, for a share, the GPU it takes. */
static int64_t choose(policy_task_t *t, policy_nodes_t *ns, size_t i, int *gpu) {
    uint32_t k = ns->index.ptr[i];
    if (k >= n_nodes) return -1;
    node_t *n = &nodes[k];
    uint32_t start = ns->gpu_start.ptr[i], count = ns->gpu_start.ptr[i + 1] - start;
    if (count > n->gpus) count = n->gpus; /* never past the node's table */
    uint32_t frees[MAX_GPUS];
    for (uint32_t g = 0; g < count; g++) frees[g] = ns->gpu_free.ptr[start + g];
    uint64_t cpu = ns->cpu_free.ptr[i];
    size_t level0 = level_of(cpu);
    double f0 = frag(n->model, level0, frees, count);
    uint64_t demand = t->cpu + 1000ull * t->cores;
    size_t level1 = level_of(cpu > demand ? cpu - demand : 0);
    *gpu = -1;
    berth_plugin_types_gpu_request_t *r = &t->gpu.val;
    bool gpu_task = t->gpu.is_some && r->mig_profile.len == 0 && r->milli > 0 && r->count > 0;
    if (gpu_task && r->milli < GPU_MILLI) {
        /* GPUs with the same free thousandths leave the same multiset:
         * each free value is scored once. */
        int64_t best = -1, seen_score[MEMO_GPUS];
        uint32_t seen_free[MEMO_GPUS], n_seen = 0;
        for (uint32_t g = 0; g < count; g++) {
            uint32_t free = frees[g];
            if (free < r->milli || !model_ok(t, gpu_model[n->gpu + g]) || gpu_memory[n->gpu + g] < r->min_memory) continue;
            int64_t s = -1;
            for (uint32_t j = 0; j < n_seen; j++)
                if (seen_free[j] == free) { s = seen_score[j]; break; }
            if (s < 0) {
                frees[g] = free - r->milli;
                s = fgd_score(f0 - frag(n->model, level1, frees, count));
                frees[g] = free;
                if (n_seen < MEMO_GPUS) { seen_free[n_seen] = free; seen_score[n_seen++] = s; }
            }
            if (best < 0 || s > best) { best = s; *gpu = (int)g; }
        }
        return best;
    }
    if (gpu_task) {
        uint32_t need = r->count;
        for (uint32_t g = 0; g < count && need > 0; g++) {
            if (frees[g] >= GPU_MILLI && model_ok(t, gpu_model[n->gpu + g]) && gpu_memory[n->gpu + g] >= r->min_memory) {
                frees[g] = 0;
                need--;
            }
        }
        if (need) return -1;
    } else if (level1 == level0) {
        /* Nothing on the node's GPUs or CPU level changes: F stays. */
        return FGD_SCORE_0;
    }
    return fgd_score(f0 - frag(n->model, level1, frees, count));
}

void exports_policy_score(policy_task_t *task, policy_nodes_t *ns, policy_list_f64_t *ret) {
    size_t n = ns->index.len;
    ret->ptr = malloc(sizeof(double) * (n ? n : 1));
    ret->len = n;
    for (size_t i = 0; i < n; i++) {
        int gpu;
        int64_t s = choose(task, ns, i, &gpu);
        ret->ptr[i] = s < 0 ? 0.0 : (double)(s > 100 ? 100 : s);
    }
    policy_task_free(task);
    policy_nodes_free(ns);
}

bool exports_policy_allocate(policy_task_t *task, policy_nodes_t *ns, berth_plugin_types_choice_t *ret, policy_string_t *err) {
    bool ok = true;
    ret->gpus.ptr = NULL;
    ret->gpus.len = 0;
    berth_plugin_types_gpu_request_t *r = &task->gpu.val;
    if (task->gpu.is_some && r->milli < GPU_MILLI && r->mig_profile.len == 0 && ns->index.len == 1) {
        int gpu;
        if (choose(task, ns, 0, &gpu) < 0 || gpu < 0) {
            policy_string_dup(err, "no GPU with enough free thousandths");
            ok = false;
        } else {
            ret->gpus.ptr = malloc(sizeof(uint32_t));
            ret->gpus.ptr[0] = (uint32_t)gpu;
            ret->gpus.len = 1;
        }
    }
    policy_task_free(task);
    policy_nodes_free(ns);
    return ok;
}
