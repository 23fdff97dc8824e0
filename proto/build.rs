//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the file descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let protos = [
        "taskmesh/tasks/v1/tasks.proto",
        "taskmesh/tasks/v1/lists.proto",
        "taskmesh/notifications/v1/notifications.proto",
        "taskmesh/analytics/v1/analytics.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("taskmesh_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .compile_well_known_types(false)
        .compile_fds(descriptors)?;

    // Dapr's AppCallback services, for the subscribers' reflection only: their Rust types
    // come from the dapr crate, which ships no descriptor set (see proto/dapr/README.md).
    let app_callback = "dapr/proto/runtime/v1/appcallback.proto";
    println!("cargo:rerun-if-changed={app_callback}");
    println!("cargo:rerun-if-changed=dapr/proto/common/v1/common.proto");
    std::fs::write(
        out_dir.join("dapr_app_callback_descriptor.bin"),
        prost::Message::encode_to_vec(&protox::compile([app_callback], ["."])?),
    )?;
    Ok(())
}
