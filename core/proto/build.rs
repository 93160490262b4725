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
    Ok(())
}
