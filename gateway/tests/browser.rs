//! A real browser (headless Chromium, driven through chromedriver) votes on
//! the voting page and watches the results page update live, against the
//! whole system on real Redis and PostgreSQL. Screenshots of each page are
//! kept in `target/tmp/browser/` as artifacts.

mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use support::System;
use votemesh::{
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    testing::{free_port, probe},
};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// A chromedriver process on a free port, killed when dropped.
struct ChromeDriver {
    port: u16,
    child: Child,
    _profile: tempfile::TempDir,
}

impl ChromeDriver {
    #[expect(
        clippy::zombie_processes,
        reason = "Drop kills and waits for the process"
    )]
    fn start() -> Self {
        for binary in ["chromedriver", "chromium"] {
            assert!(
                which(binary).is_some(),
                "{binary} not found on PATH: the browser test needs Debian's Chromium; install it with `{INSTALL}`"
            );
        }
        let port = free_port().unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let profile = tempfile::tempdir().unwrap();
                return Self {
                    port,
                    child,
                    _profile: profile,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not start");
    }

    async fn browser(&self) -> Client {
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": which("chromium").unwrap(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1000,900",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(name), png).unwrap();
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_browser_votes_with_one_click_and_sees_results_change_live() {
    let system = System::start(true).await;
    let driver = ChromeDriver::start();
    let browser = driver.browser().await;

    // Voting page: one click is a vote, and the page says which.
    browser.goto(&system.url("/")).await.unwrap();
    assert_eq!(text(&browser, "h1").await, "Cats vs Dogs!");
    screenshot(&browser, "1-voting-page.png").await;
    browser
        .find(Locator::Css("#vote-a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let confirmation = browser
        .wait()
        .at_most(support::WAIT)
        .for_element(Locator::Css("#confirmation"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        confirmation.contains("You voted for Cats"),
        "{confirmation}"
    );
    assert!(confirmation.contains("vote-under-test"), "{confirmation}");
    screenshot(&browser, "2-voted.png").await;

    // Results page in a second tab: live, without a reload.
    let tab = browser.new_window(true).await.unwrap();
    browser.switch_to_window(tab.handle).await.unwrap();
    browser.goto(&system.url("/results")).await.unwrap();
    probe::wait_for("the browser's vote counted", support::WAIT, || async {
        text(&browser, "#total").await == "1 vote"
    })
    .await;
    probe::wait_for("the live stream connected", support::WAIT, || async {
        text(&browser, "#live").await.starts_with("Live")
    })
    .await;
    browser
        .execute("window.votemeshMarker = 'same page'; return true;", vec![])
        .await
        .unwrap();

    let mut votes = VoteServiceClient::new(probe::channel(system.vote_addr).await.unwrap());
    for voter in 0..3 {
        votes
            .cast_vote(CastVoteRequest {
                voter_id: format!("grpc-{voter}"),
                option: "b".into(),
            })
            .await
            .unwrap();
    }
    probe::wait_for("the page shows the new tally", support::WAIT, || async {
        text(&browser, "#total").await == "4 votes"
    })
    .await;
    assert_eq!(text(&browser, "li[data-option='b'] .count").await, "3");
    assert_eq!(text(&browser, "li[data-option='b'] .percent").await, "75.0");
    let bar = browser
        .execute(
            "return document.querySelector(\"li[data-option='b'] progress\").value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bar, 75.0, "the bar follows the percentage");
    let marker = browser
        .execute("return window.votemeshMarker || null;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, "same page", "updated in place, not reloaded");
    // Let the bars' 0.4 s transition finish so the artifact shows them settled.
    tokio::time::sleep(Duration::from_millis(600)).await;
    screenshot(&browser, "3-results-live.png").await;

    // The same page on a phone-sized screen.
    browser.set_window_size(390, 844).await.unwrap();
    let width = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(width, true, "no sideways scrolling on a phone");
    screenshot(&browser, "4-results-phone.png").await;

    browser.close().await.unwrap();
    system.stop().await;
}
