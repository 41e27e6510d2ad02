//! The gRPC contracts, generated at build time from `proto/votemesh/v1` by
//! `build.rs`. The `.proto` files are the documentation of record.

/// Package `votemesh.v1`: messages, clients and servers.
pub mod v1 {
    tonic::include_proto!("votemesh.v1");
}

/// The encoded `FileDescriptorSet` of every votemesh `.proto` file (with the
/// well-known types they import), served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("votemesh_descriptor");
