//! The dashboard in a real browser (SPEC §13): headless Chromium driven over WebDriver
//! (chromedriver, fantoccini) signs in with a key, reads the overview's chart, creates a key and
//! an app (each shown once), opens every page, fits a phone's width, and signs in again with a
//! browser wallet (an injected provider whose signatures the test makes). Screenshots of each
//! page go to `target/dashboard-screenshots/` for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (installed by `.ci/run`). Without them the
//! test says so on stderr and stops; under CI (`CI` or `ELIZA_CLOUD_REQUIRE_TEST_TOOLS` set) it
//! fails instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::support::{TestServer, free_port, required_tool};

/// Chromium and chromedriver, or `None` after saying loudly that they are missing.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = required_tool(&["chromium", "chromium-browser"], "chromium");
    let driver = required_tool(&["chromedriver"], "chromium-driver");
    chromium.zip(driver)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits for an element of the page a click leads to (the browser's navigation, not a rule of
/// time), bounded.
async fn arrive(client: &fantoccini::Client, search: Locator<'_>) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(std::time::Duration::from_secs(30))
        .for_element(search)
        .await
        .unwrap()
}

async fn shot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

#[tokio::test]
async fn chromium_signs_in_creates_a_key_and_an_app_and_reads_the_chart() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    // The browser's origin must be the public URL's, for the CSRF rule.
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let server = TestServer::start_with({
        let origin = origin.clone();
        move |c| {
            c.listen = SocketAddr::from(([127, 0, 0, 1], port));
            c.public_url = eliza_cloud::config::PublicUrl {
                url: origin.clone(),
                origin: origin.clone(),
                host: format!("127.0.0.1:{port}"),
                https: false,
            };
        }
    })
    .await;
    let key = server.operator_key.clone();

    let driver_port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let webdriver = format!("http://127.0.0.1:{driver_port}");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    // chromedriver is ready when it accepts a session (a process starting, not a rule of time).
    let mut client = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        if let Ok(c) = ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
        {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let client = client.expect("chromedriver did not start");

    // `/` leads a browser without a session to the sign-in page.
    client.goto(&format!("{origin}/")).await.unwrap();
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/dashboard/sign-in"
    );
    shot(&client, "1-sign-in").await;
    client
        .find(Locator::Css("#api_key"))
        .await
        .unwrap()
        .send_keys(&key)
        .await
        .unwrap();
    client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&client, Locator::Css("figure.chart")).await;
    assert_eq!(client.current_url().await.unwrap().path(), "/dashboard");
    // The key is not kept in the browser: only the HttpOnly cookie, which scripts cannot read.
    let visible = client
        .execute("return document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage);", vec![])
        .await
        .unwrap();
    assert!(!visible.to_string().contains(&key), "{visible}");

    // The overview's chart: one bar per day of the month, its caption, and its table.
    let bars = client
        .find_all(Locator::Css("figure.chart svg rect.bar"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2 * 31, "two charts of January's 31 days");
    let caption = client
        .find(Locator::Css("figure.chart figcaption"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(caption, "Metered calls per day, this month");
    let rows = client
        .find_all(Locator::Css("figure.chart table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2 * 31);
    shot(&client, "2-overview").await;

    // A key, created with the form and shown once.
    client
        .goto(&format!("{origin}/dashboard/keys"))
        .await
        .unwrap();
    client
        .find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("Browser key")
        .await
        .unwrap();
    client
        .find(Locator::XPath("//button[text()='Create key']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let secret = arrive(&client, Locator::Css("#secret"))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("ek_live_"), "{secret}");
    let copy = client
        .find(Locator::Css("button[data-copy=secret]"))
        .await
        .unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the copy button shows with script on"
    );
    let notice = client
        .find(Locator::Css(".notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.contains("It will not be shown again."), "{notice}");
    shot(&client, "3-keys-created").await;
    assert_eq!(server.whoami_status(&secret).await, 200);
    client
        .goto(&format!("{origin}/dashboard/keys"))
        .await
        .unwrap();
    let source = client.source().await.unwrap();
    assert!(source.contains("Browser key") && !source.contains(&secret));

    // An app, its key shown once, then its page.
    client
        .goto(&format!("{origin}/dashboard/apps"))
        .await
        .unwrap();
    client
        .find(Locator::Css("#app-name"))
        .await
        .unwrap()
        .send_keys("Browser shop")
        .await
        .unwrap();
    client
        .find(Locator::Css("#app-url"))
        .await
        .unwrap()
        .send_keys("https://shop.example")
        .await
        .unwrap();
    client
        .find(Locator::XPath("//button[text()='Create app']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let app_key = arrive(
        &client,
        Locator::XPath("//input[@id='secret'][starts-with(@value,'ek_')]"),
    )
    .await
    .prop("value")
    .await
    .unwrap()
    .unwrap();
    assert!(app_key.starts_with("ek_live_"), "{app_key}");
    shot(&client, "4-apps-created").await;
    client
        .find(Locator::LinkText("Browser shop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&client, Locator::XPath("//h2[text()='Analytics']")).await;
    let heading = client
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Browser shop");
    shot(&client, "5-app").await;

    for (path, name) in [
        ("/dashboard/credits", "6-credits"),
        ("/dashboard/usage", "7-usage"),
    ] {
        client.goto(&format!("{origin}{path}")).await.unwrap();
        let h1 = client.find(Locator::Css("h1")).await.unwrap();
        assert!(!h1.text().await.unwrap().is_empty());
        shot(&client, name).await;
    }

    // A phone's width: nothing wider than the screen.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{origin}/dashboard")).await.unwrap();
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "overflows by {overflow}"
    );
    shot(&client, "8-overview-phone").await;
    // Keyboard: the first Tab reaches a link of the navigation.
    client
        .execute("document.activeElement.blur();", vec![])
        .await
        .unwrap();
    client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("\u{e004}")
        .await
        .unwrap();
    let focused = client
        .execute(
            "return document.activeElement.tagName + ' ' + document.activeElement.textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        focused.as_str().is_some_and(|f| f.starts_with("A ")),
        "{focused}"
    );

    // Signing out ends the session: the next page is the sign-in page.
    client.set_window_size(1280, 1000).await.unwrap();
    client
        .find(Locator::XPath("//button[text()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form's POST and its redirect are a navigation the click does not wait for.
    arrive(&client, Locator::Css("#api_key")).await;
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/dashboard/sign-in"
    );
    client
        .goto(&format!("{origin}/dashboard/keys"))
        .await
        .unwrap();
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/dashboard/sign-in"
    );

    // A browser wallet: a provider injected late (announced by `ethereum#initialized`, as
    // MetaMask does) whose `personal_sign` hands the message to this test, which signs it with
    // a secp256k1 key and hands the signature back.
    let wallet = crate::signin::EvmWallet::new();
    let provider = r#"
        const address = arguments[0];
        window.__toSign = null;
        window.ethereum = { request: ({ method, params }) => {
            if (method === 'eth_requestAccounts') return Promise.resolve([address]);
            if (method === 'eth_chainId') return Promise.resolve('0x1');
            if (method === 'personal_sign') return new Promise((resolve) => {
                window.__toSign = params[0];
                window.__signed = resolve;
            });
            return Promise.reject(new Error('unsupported'));
        } };
        window.dispatchEvent(new Event('ethereum#initialized'));
    "#;
    client
        .execute(provider, vec![json!(wallet.address.to_checksum())])
        .await
        .unwrap();
    let button = arrive(&client, Locator::Css("#wallet")).await;
    assert!(
        button.is_displayed().await.unwrap(),
        "the wallet button shows"
    );
    button.click().await.unwrap();
    let mut to_sign = None;
    for _ in 0..300 {
        let pending = client
            .execute("return window.__toSign;", vec![])
            .await
            .unwrap();
        if let Some(hex) = pending.as_str() {
            to_sign = Some(hex.to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let to_sign = to_sign.expect("the page asked the wallet to sign");
    let bytes: Vec<u8> = (2..to_sign.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&to_sign[i..i + 2], 16).unwrap())
        .collect();
    let message = String::from_utf8(bytes).unwrap();
    assert!(message.contains(&wallet.address.to_checksum()), "{message}");
    assert!(
        message.starts_with(&format!("127.0.0.1:{port} wants you to sign in")),
        "{message}"
    );
    client
        .execute(
            "window.__signed(arguments[0]);",
            vec![json!(wallet.sign(&message))],
        )
        .await
        .unwrap();
    arrive(&client, Locator::Css("figure.chart")).await;
    assert_eq!(client.current_url().await.unwrap().path(), "/dashboard");
    let header = client
        .find(Locator::Css("header"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(header.contains("Sign out"), "{header}");
    shot(&client, "9-wallet-signed-in").await;
    client.close().await.unwrap();
}
