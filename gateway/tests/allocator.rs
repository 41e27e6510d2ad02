//! The gateway binary runs on jemalloc with the shared settings
//! (`votemesh::allocator`): on glibc's malloc it kept the memory of every
//! burst of connections, and spent about 12 % more CPU per vote.
#![cfg(feature = "jemalloc")]

#[tokio::test]
async fn the_binary_runs_on_jemalloc_with_the_shared_settings() {
    votemesh_testing::process::assert_runs_on_jemalloc(
        env!("CARGO_BIN_EXE_votemesh-gateway"),
        votemesh::allocator::MALLOC_CONF,
    )
    .await;
}
