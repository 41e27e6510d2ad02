//! The vote service binary runs on jemalloc with the shared settings
//! (`votemesh::allocator`): on glibc's malloc it spent about 13 % more
//! CPU per CastVote.
#![cfg(feature = "jemalloc")]

#[tokio::test]
async fn the_binary_runs_on_jemalloc_with_the_shared_settings() {
    votemesh_testing::process::assert_runs_on_jemalloc(
        env!("CARGO_BIN_EXE_votemesh-vote"),
        votemesh::allocator::MALLOC_CONF,
    )
    .await;
}
