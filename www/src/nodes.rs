//! Which nodes the page talks to: the page's own origin (the node that served it)
//! unless the address names others with `?nodes=URL,URL`.

/// The node base URLs for a page at `origin` (`http://127.0.0.1:8645`) whose query
/// string is `search` (`?nodes=...`, with or without the `?`).
///
/// Entries that are not `http://` or `https://` URLs are dropped, trailing slashes
/// removed, duplicates kept once. With no usable `nodes` entry the origin is the
/// only node (as long as it is an http(s) origin itself).
pub fn node_urls(origin: &str, search: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (key, value) in query_pairs(search) {
        if key != "nodes" {
            continue;
        }
        for part in value.split(',') {
            if let Some(url) = clean_url(part) {
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
    }
    if out.is_empty() {
        if let Some(url) = clean_url(origin) {
            out.push(url);
        }
    }
    out
}

/// A base URL without trailing slashes, if it is http(s) with a host.
pub fn clean_url(raw: &str) -> Option<String> {
    let s = raw.trim().trim_end_matches('/');
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return None;
    }
    Some(s.to_string())
}

/// Short label for a node URL (its host and port).
pub fn host_label(url: &str) -> &str {
    url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url)
}

/// `key=value` pairs of a query string, percent-decoded (`+` reads as a space).
fn query_pairs(search: &str) -> Vec<(String, String)> {
    search
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decoding; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_the_default_node() {
        assert_eq!(node_urls("http://127.0.0.1:8645", ""), vec!["http://127.0.0.1:8645"]);
        assert_eq!(node_urls("http://127.0.0.1:8645", "?other=1"), vec!["http://127.0.0.1:8645"]);
        assert!(node_urls("file://", "").is_empty(), "a file page has no node");
    }

    #[test]
    fn nodes_parameter_overrides_the_origin() {
        let urls = node_urls(
            "http://localhost:9000",
            "?x=1&nodes=http%3A%2F%2F127.0.0.1%3A8645%2F,http://127.0.0.1:8646,ftp://x,http://127.0.0.1:8645",
        );
        assert_eq!(urls, vec!["http://127.0.0.1:8645", "http://127.0.0.1:8646"]);
    }

    #[test]
    fn bad_entries_fall_back_to_the_origin() {
        assert_eq!(node_urls("https://a.example", "nodes=garbage,http://"), vec!["https://a.example"]);
    }

    #[test]
    fn malformed_escapes_survive() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("a%41+b"), "aA b");
        assert_eq!(percent_decode("%é%"), "%é%");
        assert_eq!(host_label("https://x:1"), "x:1");
    }
}
