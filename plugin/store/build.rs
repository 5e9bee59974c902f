//! Compiles the store's gRPC API with protox (a protobuf compiler in Rust): no `protoc`,
//! so the simulation (and the demo) build with Rust alone.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/store.proto");
    let fds = protox::compile(["proto/store.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
