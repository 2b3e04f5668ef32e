//! A real browser for the dashboard test: Debian's headless chromium, driven over the Chrome
//! DevTools protocol by the `headless_chrome` crate.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use headless_chrome::{Browser as Chrome, LaunchOptions, Tab, protocol::cdp::Page};

use crate::skip_or_fail;

/// Where `cargo xtask setup` installs chromium (Debian's package).
const CHROMIUM: &str = "/usr/bin/chromium";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The chromium to drive, or `None` when it is missing (a failure in CI: see [`skip_or_fail`]).
pub fn require_chromium() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Some(path);
    }
    skip_or_fail(&format!(
        "{CHROMIUM} is missing: run `cargo xtask setup` (Debian package chromium)"
    ));
    None
}

/// One headless browser with one tab.
pub struct Browser {
    tab: Arc<Tab>,
    // Dropped last: closing it ends the chromium process.
    _chrome: Chrome,
}

impl Browser {
    pub fn launch(chromium: &Path) -> Result<Browser> {
        // Root cannot use chromium's sandbox; the pages are our own dashboard on localhost.
        let options = LaunchOptions {
            headless: true,
            sandbox: false,
            path: Some(chromium.to_owned()),
            window_size: Some((1400, 1000)),
            idle_browser_timeout: Duration::from_secs(120),
            args: vec![OsStr::new("--disable-dev-shm-usage")],
            ..LaunchOptions::default()
        };
        let chrome = Chrome::new(options).map_err(|e| anyhow!("launching chromium: {e}"))?;
        let tab = chrome
            .new_tab()
            .map_err(|e| anyhow!("opening a tab: {e}"))?;
        tab.set_default_timeout(TIMEOUT);
        Ok(Browser {
            tab,
            _chrome: chrome,
        })
    }

    pub fn open(&self, url: &str) -> Result<()> {
        self.tab
            .navigate_to(url)
            .and_then(|tab| tab.wait_until_navigated())
            .map_err(|e| anyhow!("opening {url}: {e}"))?;
        Ok(())
    }

    /// The current page's address.
    pub fn url(&self) -> String {
        self.location().unwrap_or_else(|_| self.tab.get_url())
    }

    /// Clicks the first link whose text is `text` (trimmed) and waits for the page it opens.
    pub fn click_link(&self, text: &str) -> Result<()> {
        let links = self
            .tab
            .find_elements("a")
            .map_err(|e| anyhow!("no links on {}: {e}", self.url()))?;
        for link in links {
            let shown = link.get_inner_text().unwrap_or_default();
            if shown.trim() == text {
                let before = self.location()?;
                link.click()
                    .map_err(|e| anyhow!("clicking {text:?}: {e}"))?;
                return self.wait_for_new_page(&before);
            }
        }
        bail!("no link reads {text:?} on {}", self.url())
    }

    /// The loaded document's address, as the page itself sees it.
    fn location(&self) -> Result<String> {
        self.evaluate_string("document.location.href")
    }

    /// A click starts a navigation that the DevTools protocol reports late: wait until the
    /// document is another one, and completely loaded.
    fn wait_for_new_page(&self, before: &str) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = self.location().unwrap_or_else(|_| before.to_owned());
            let complete = self
                .evaluate_string("document.readyState")
                .is_ok_and(|state| state == "complete");
            if now != before && complete {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "still on {before} {TIMEOUT:?} after the click"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn evaluate_string(&self, script: &str) -> Result<String> {
        let value = self
            .tab
            .evaluate(script, false)
            .map_err(|e| anyhow!("evaluating on {}: {e}", self.tab.get_url()))?
            .value
            .context("no value")?;
        value.as_str().map(str::to_owned).context("not a string")
    }

    /// The text content of every element matching `selector`, joined by newlines.
    pub fn text_of(&self, selector: &str) -> Result<String> {
        let script = format!(
            "Array.from(document.querySelectorAll({})).map(e => e.textContent).join('\\n')",
            serde_json::to_string(selector)?
        );
        self.evaluate_string(&script)
    }

    /// Saves a PNG of the whole page.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self
            .tab
            .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
            .map_err(|e| anyhow!("screenshot: {e}"))?;
        ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}
