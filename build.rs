//! Compiles the gRPC contracts in `proto/` into Rust (prost + tonic) and
//! writes their file descriptor set to `OUT_DIR` for server reflection.
//!
//! protox is a protobuf compiler written in Rust, so no system `protoc` is
//! needed; it also supplies the Google well-known types.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// Where the `.proto` files live; imports are resolved relative to it.
const PROTO_ROOT: &str = "proto";
/// The package directory whose every `.proto` file is compiled.
const PROTO_PACKAGE_DIR: &str = "proto/votemesh/v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut protos: Vec<PathBuf> = fs::read_dir(PROTO_PACKAGE_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let descriptors = protox::compile(&protos, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("votemesh_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
