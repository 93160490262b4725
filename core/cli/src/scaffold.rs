//! Templates for `berth plugin new`: a working plugin of each kind in C
//! (built with `berth plugin build`) or Rust (the `berth-sdk` crate).

/// The exported functions of a C plugin of `kind`, as stubs that accept
/// everything and score every node 50.
fn c_body(kind: &str) -> &'static str {
    match kind {
        "admission" => {
            "void exports_admission_admit(admission_task_t *app, berth_plugin_types_verdict_t *ret) {\n    \
             memset(ret, 0, sizeof *ret);\n    ret->tag = BERTH_PLUGIN_TYPES_VERDICT_ACCEPT;\n    \
             admission_task_free(app);\n}\n"
        }
        "filter" => {
            "void exports_filter_set_nodes(filter_list_node_info_t *nodes) { filter_list_node_info_free(nodes); }\n\n\
             void exports_filter_filter(filter_task_t *task, filter_nodes_t *nodes, berth_plugin_types_verdicts_t *ret) {\n    \
             size_t n = nodes->index.len;\n    ret->codes.ptr = calloc(n ? n : 1, 1);   /* 0: keep every node */\n    \
             ret->codes.len = n;\n    ret->reasons.ptr = NULL;\n    ret->reasons.len = 0;\n    \
             filter_task_free(task);\n    filter_nodes_free(nodes);\n}\n"
        }
        "allocate" => {
            "void exports_allocate_set_nodes(allocate_list_node_info_t *nodes) { allocate_list_node_info_free(nodes); }\n\n\
             bool exports_allocate_allocate(allocate_task_t *task, allocate_nodes_t *node, berth_plugin_types_choice_t *ret, allocate_string_t *err) {\n    \
             (void)err;\n    ret->gpus.ptr = NULL;   /* empty: let the host choose */\n    ret->gpus.len = 0;\n    \
             allocate_task_free(task);\n    allocate_nodes_free(node);\n    return true;\n}\n"
        }
        _ => {
            "void exports_score_set_nodes(score_list_node_info_t *nodes) { score_list_node_info_free(nodes); }\n\n\
             void exports_score_score(score_task_t *task, score_nodes_t *nodes, score_list_f64_t *ret) {\n    \
             size_t n = nodes->index.len;\n    ret->ptr = malloc(sizeof(double) * (n ? n : 1));\n    ret->len = n;\n    \
             for (size_t i = 0; i < n; i++) ret->ptr[i] = 50.0;   /* 0..100 per node */\n    \
             score_task_free(task);\n    score_nodes_free(nodes);\n}\n"
        }
    }
}

/// A C plugin: source and README.
pub fn c(name: &str, kind: &str) -> Vec<(String, String)> {
    let file = name.replace('-', "_");
    let source = format!(
        "/* {name}: a Berth {kind} plugin. Build: berth plugin build {file}.c --world {kind} -o {name}.wasm */\n\
         #include <stdlib.h>\n#include <string.h>\n#include \"{kind}.h\"\n#include \"berth_json.h\"\n\n\
         bool exports_{kind}_init({kind}_string_t *config, {kind}_string_t *err) {{\n    \
         (void)err;   /* set it (and return false) to refuse a configuration */\n    \
         {kind}_string_free(config);\n    return true;\n}}\n\n{}",
        c_body(kind)
    );
    let readme = format!(
        "# {name}\n\nA Berth {kind} plugin in C.\n\n```sh\n\
         berth plugin build {file}.c --world {kind} -o {name}.wasm\n\
         berth plugin test {name}.wasm --kind {kind} --task app.yaml\n\
         berth plugin install {name}.wasm --name {name} --kind {kind}\n```\n\n\
         See docs/plugins.md in the Berth repository for the contract and the limits.\n"
    );
    vec![(format!("{file}.c"), source), ("README.md".into(), readme)]
}

/// A Rust plugin on `berth-sdk`.
pub fn rust(name: &str, kind: &str) -> Vec<(String, String)> {
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/rust");
    let cargo = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\n\n\
         [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n\
         berth-sdk = {{ path = \"{sdk}\" }}\n"
    );
    let body = match kind {
        "filter" => {
            "impl berth_sdk::Filter for Plugin {\n    fn filter(task: &Task, nodes: &Nodes) -> Verdicts {\n        \
                     berth_sdk::keep_all(nodes)\n    }\n}\n\nberth_sdk::export_filter!(Plugin);\n"
        }
        "admission" => {
            "impl berth_sdk::Admission for Plugin {\n    fn admit(app: &Task) -> Verdict {\n        \
                        Verdict::Accept\n    }\n}\n\nberth_sdk::export_admission!(Plugin);\n"
        }
        "allocate" => {
            "impl berth_sdk::Allocate for Plugin {\n    fn allocate(task: &Task, node: &Nodes) -> Result<Choice, String> {\n        \
                       Ok(Choice { gpus: Vec::new() })\n    }\n}\n\nberth_sdk::export_allocate!(Plugin);\n"
        }
        _ => {
            "impl berth_sdk::Score for Plugin {\n    fn score(task: &Task, nodes: &Nodes) -> Vec<f64> {\n        \
              nodes.index.iter().map(|_| 50.0).collect()\n    }\n}\n\nberth_sdk::export_score!(Plugin);\n"
        }
    };
    let lib = format!(
        "//! {name}: a Berth {kind} plugin.\n\n#[allow(unused_imports)]\nuse berth_sdk::types::*;\n\n\
         /// The plugin.\npub struct Plugin;\n\nimpl berth_sdk::Setup for Plugin {{}}\n\n{body}\n\
         #[cfg(test)]\nmod tests {{\n    #[test]\n    fn decides_natively() {{\n        \
         // Plugin logic runs natively in tests: see berth_sdk::testing.\n        \
         let _ = berth_sdk::testing::nodes(3);\n    }}\n}}\n"
    );
    let readme = format!(
        "# {name}\n\nA Berth {kind} plugin in Rust. Test natively with `cargo test`; build the\n\
         component with a Rust that has the wasm32-unknown-unknown target:\n\n```sh\n\
         cargo build --release --target wasm32-unknown-unknown\n\
         berth plugin componentize target/wasm32-unknown-unknown/release/{m}.wasm -o {name}.wasm\n\
         berth plugin install {name}.wasm --name {name} --kind {kind}\n```\n",
        m = name.replace('-', "_")
    );
    vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), lib),
        ("README.md".into(), readme),
    ]
}
