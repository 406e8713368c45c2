//! Compiles proto/resource.proto with protox (a pure-Rust protobuf compiler),
//! so building the crate needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/resource.proto");
    let descriptors = protox::compile(["proto/resource.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
