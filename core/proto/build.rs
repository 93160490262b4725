//! Compiles proto/berth.proto with protox (pure Rust; no protoc needed).
//!
//! Every message also derives serde and `utoipa::ToSchema`: the HTTP/JSON
//! API serves the very messages the gRPC API does (field names as in the
//! proto, enums as their numbers, absent fields their defaults), and its
//! OpenAPI document describes them from the same definitions.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth.proto");
    let fds = protox::compile(["proto/berth.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .type_attribute(
            ".berth.v1",
            "#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]",
        )
        .message_attribute(".berth.v1", "#[serde(default)]")
        .enum_attribute(".berth.v1", "#[serde(rename_all = \"snake_case\")]")
        .field_attribute(".berth.v1.Deployment.rollback", "#[schema(no_recursion)]")
        .field_attribute(
            ".berth.v1.RunAppRequest.spec",
            "#[schema(required = true, min_length = 1)]",
        )
        .compile_fds(fds)?;
    omit_defaults()
}

/// As proto3's JSON mapping does, a message's fields at their default are
/// left out of its JSON: each struct field (a `pub` field after its
/// `#[prost(...)]`; oneof variants are not `pub`) gets a
/// `skip_serializing_if`. Done on the generated text because prost-build
/// would also put a field attribute on oneof variants, where serde refuses
/// it.
fn omit_defaults() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(&std::env::var("OUT_DIR")?).join("berth.v1.rs");
    let text = std::fs::read_to_string(&path)?;
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut prev_prost = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if prev_prost && trimmed.starts_with("pub ") && trimmed.contains(':') {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("#[serde(skip_serializing_if = \"crate::is_default\")]\n");
        }
        prev_prost = trimmed.starts_with("#[prost(");
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(&path, out)?;
    Ok(())
}
