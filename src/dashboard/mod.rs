//! The built-in dashboard: one page and its script, styles and chart library, embedded in the
//! binary and served by the admin listener (`GET /`, `GET /dashboard/…`). The page holds no
//! data; it polls `GET /stats` (see [`crate::stats`]), which is where `admin_token` applies.

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Same-origin files only, no inline script or style, no framing: a path or route name shown
/// on the page can never run as code, and the page works offline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The file served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/dashboard" | "/dashboard/" => (HTML, include_bytes!("index.html")),
        "/dashboard/app.js" => (JS, include_bytes!("app.js")),
        "/dashboard/app.css" => (CSS, include_bytes!("app.css")),
        "/dashboard/uPlot.iife.min.js" => (JS, include_bytes!("vendor/uplot/uPlot.iife.min.js")),
        "/dashboard/uPlot.min.css" => (CSS, include_bytes!("vendor/uplot/uPlot.min.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let page = std::str::from_utf8(asset("/").unwrap().body).unwrap();
        let mut refs = 0;
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                if target.starts_with("/dashboard/") {
                    refs += 1;
                    assert!(asset(target).is_some(), "{target} is not embedded");
                }
            }
        }
        assert_eq!(refs, 4);
        assert_eq!(asset("/dashboard/../Cargo.toml"), None);
    }

    #[test]
    fn the_page_renders_data_as_text_only() {
        let script = std::str::from_utf8(asset("/dashboard/app.js").unwrap().body).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
    }
}
