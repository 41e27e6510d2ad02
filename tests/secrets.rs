//! The database password never shows: not in configuration dumps, not in
//! connection errors.

use votemesh::{
    config::{DatabaseArgs, Secret},
    store,
};

const PASSWORD: &str = "s3cret-Pa55word";

#[tokio::test]
async fn a_failed_connection_does_not_print_the_password() {
    let port = votemesh_testing::free_port().await.unwrap();
    let args = DatabaseArgs {
        db_host: Some("127.0.0.1".into()),
        db_port: port,
        db_password: Some(Secret::new(PASSWORD)),
        ..DatabaseArgs::default()
    };
    let url = args.configured().unwrap();
    assert!(!format!("{args:?} {url} {url:?}").contains(PASSWORD));

    let failure = match store::connect(&url).await {
        Err(error) => error.to_string(),
        Ok(db) => store::migrate(&db).await.unwrap_err().to_string(),
    };
    assert!(!failure.is_empty());
    assert!(!failure.contains(PASSWORD), "{failure}");
}
