//! Compiles the agent's gRPC API with protox (a protobuf compiler in Rust), so that no
//! build of this workspace needs `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cni.proto");
    let fds = protox::compile(["proto/cni.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
