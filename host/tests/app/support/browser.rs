//! Real headless Chromium driven through chromedriver (WebDriver) by
//! fantoccini: what the dashboard tests click and read with. Screenshots are
//! kept as test artifacts in target/test-artifacts/.

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver on a free local port, killed on drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub(crate) async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Driver {
            child: Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await
                && r.status().is_success()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {}", driver.url);
    }

    pub(crate) async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,900"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

pub(crate) fn artifacts() -> PathBuf {
    let dir = super::root().join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

pub(crate) async fn screenshot(browser: &Client, name: &str) -> PathBuf {
    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

/// Waits (up to 20 s) for an element, then returns it.
pub(crate) async fn wait_for(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
}

pub(crate) async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in browser.find_all(Locator::Css(css)).await.expect("find") {
        out.push(e.text().await.expect("text"));
    }
    out
}

pub(crate) async fn click(browser: &Client, id: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click #{id}: {e}"));
}

pub(crate) async fn text_of(browser: &Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .text()
        .await
        .expect("text")
}

/// The text of `#id` once it reads `want`, or what it read last (10 s).
pub(crate) async fn wait_text(browser: &Client, id: &str, want: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = text_of(browser, id).await;
        if text == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text
}

pub(crate) async fn send(browser: &Client, text: &str) {
    let box_ = browser
        .find(Locator::Id("message"))
        .await
        .expect("message box");
    box_.send_keys(text).await.expect("type");
    click(browser, "send-btn").await;
}

/// Waits until `css` matches `n` elements (up to 20 s).
pub(crate) async fn wait_count(browser: &Client, css: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let found = texts(browser, css).await;
        if found.len() == n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "expected {n} `{css}`, found {:?}",
        texts(browser, css).await
    );
}

/// Waits (up to 20 s) for `n` more rounds of the page's polling clock.
pub(crate) async fn wait_ticks(browser: &Client, n: u32) {
    let ticks = || async {
        let link = browser.find(Locator::Id("link")).await.unwrap();
        link.attr("data-ticks")
            .await
            .unwrap()
            .and_then(|t| t.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let want = ticks().await + n;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ticks().await < want {
        assert!(
            std::time::Instant::now() < deadline,
            "the page stopped polling"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
