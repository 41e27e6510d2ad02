//! A real browser (headless Chromium, driven through chromedriver with the
//! thirtyfour WebDriver client) votes on
//! the voting page and watches the results page update live, against the
//! whole system on real Redis and PostgreSQL. Screenshots of each page are
//! kept in `target/tmp/browser/` as artifacts.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use support::System;
use thirtyfour::{ChromiumLikeCapabilities, DesiredCapabilities, WebDriver, prelude::By};
use tokio::process::{Child, Command};
use votemesh::proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient};
use votemesh_testing::{
    free_port, probe,
    process::{port_open, wait_until},
};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// A chromedriver process on a free port, killed when dropped.
struct ChromeDriver {
    port: u16,
    _child: Child,
    _profile: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start() -> Self {
        for binary in ["chromedriver", "chromium"] {
            assert!(
                which(binary).is_some(),
                "{binary} not found on PATH: the browser test needs Debian's Chromium; install it with `{INSTALL}`"
            );
        }
        let port = free_port().await.unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_until("chromedriver", || port_open(port))
            .await
            .unwrap();
        Self {
            port,
            _child: child,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    async fn browser(&self) -> WebDriver {
        let mut capabilities = DesiredCapabilities::chrome();
        capabilities
            .set_binary(&which("chromium").unwrap().display().to_string())
            .unwrap();
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        for argument in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,900",
            &profile,
        ] {
            capabilities.add_arg(argument).unwrap();
        }
        WebDriver::new(format!("http://127.0.0.1:{}", self.port), capabilities)
            .await
            .expect("a Chromium session")
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

async fn screenshot(browser: &WebDriver, name: &str) {
    let png = browser.screenshot_as_png().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(name), png).unwrap();
}

async fn text(browser: &WebDriver, css: &str) -> String {
    browser
        .find(By::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Runs `script` in the page and returns its value as JSON.
async fn script(browser: &WebDriver, script: &str) -> serde_json::Value {
    browser
        .execute(script, Vec::new())
        .await
        .unwrap()
        .json()
        .clone()
}

#[tokio::test]
async fn a_browser_votes_with_one_click_and_sees_results_change_live() {
    let system = System::start(true).await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    // Voting page: one click is a vote, and the page says which.
    browser.goto(system.url("/")).await.unwrap();
    assert_eq!(text(&browser, "h1").await, "Cats vs Dogs!");
    screenshot(&browser, "1-voting-page.png").await;
    browser
        .find(By::Css("#vote-a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    probe::wait_for("the confirmation", support::WAIT, || async {
        browser.find(By::Css("#confirmation")).await.is_ok()
    })
    .await;
    let confirmation = text(&browser, "#confirmation").await;
    assert!(
        confirmation.contains("You voted for Cats"),
        "{confirmation}"
    );
    assert!(confirmation.contains("vote-under-test"), "{confirmation}");
    screenshot(&browser, "2-voted.png").await;

    // Results page in a second tab: live, without a reload.
    let tab = browser.new_tab().await.unwrap();
    browser.switch_to_window(tab).await.unwrap();
    browser.goto(system.url("/results")).await.unwrap();
    probe::wait_for("the browser's vote counted", support::WAIT, || async {
        text(&browser, "#total").await == "1 vote"
    })
    .await;
    probe::wait_for("the live stream connected", support::WAIT, || async {
        text(&browser, "#live").await.starts_with("Live")
    })
    .await;
    script(
        &browser,
        "window.votemeshMarker = 'same page'; return true;",
    )
    .await;

    let mut votes =
        VoteServiceClient::new(votemesh::client::connect(system.vote_addr).await.unwrap());
    for voter in 0..3 {
        let request = CastVoteRequest {
            voter_id: format!("grpc-{voter}"),
            option: "b".into(),
        };
        votes.cast_vote(request).await.unwrap();
    }
    probe::wait_for("the page shows the new tally", support::WAIT, || async {
        text(&browser, "#total").await == "4 votes"
    })
    .await;
    assert_eq!(text(&browser, "li[data-option='b'] .count").await, "3");
    assert_eq!(text(&browser, "li[data-option='b'] .percent").await, "75.0");
    let bar = script(
        &browser,
        "return document.querySelector(\"li[data-option='b'] progress\").value;",
    )
    .await;
    assert_eq!(bar, 75.0, "the bar follows the percentage");
    let marker = script(&browser, "return window.votemeshMarker || null;").await;
    assert_eq!(marker, "same page", "updated in place, not reloaded");
    // Let the bars' 0.4 s transition finish so the artifact shows them settled.
    tokio::time::sleep(Duration::from_millis(600)).await;
    screenshot(&browser, "3-results-live.png").await;

    // The same page on a phone-sized screen.
    browser.set_window_rect(0, 0, 390, 844).await.unwrap();
    let fits = script(
        &browser,
        "return document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await;
    assert_eq!(fits, true, "no sideways scrolling on a phone");
    screenshot(&browser, "4-results-phone.png").await;

    browser.quit().await.unwrap();
    system.stop().await;
}
