//! Redis URLs as config data: parses and checks `cache.redis.url` / `cache.redis.cluster`
//! without building a store, and shows them with their credentials redacted.
//!
//! The store (`cache::redis`) connects with what [`parse`] returns, so a URL that passes
//! `promptgate check` is exactly one the store accepts.

use super::schema::RedisSpec;
use redis::cluster::ClusterClient;
use redis::{ConnectionInfo, IntoConnectionInfo};
use std::fmt;

/// The checked URLs of one `cache.redis` section.
pub struct RedisUrls {
    /// The single `url`, or every `cluster` node (never empty).
    pub nodes: Vec<ConnectionInfo>,
    /// True when the nodes are a Redis Cluster's (`cluster` was given).
    pub cluster: bool,
    /// Passwords found in the URLs, longest first, to [`scrub`] from a client's error text.
    pub secrets: Vec<String>,
    /// The URL(s) with credentials redacted, comma-separated, for logs and errors.
    pub redacted: String,
}

/// `ConnectionInfo`'s own `Debug` prints the password: show the redacted URLs instead.
impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrls")
            .field("urls", &self.redacted)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A `cache.redis` URL the client cannot use. The text shows the URL redacted and never a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis URL {0}")]
pub struct InvalidRedisUrl(pub String);

/// Parses the URL(s) of `spec` (the single `url`, or `cluster` when non-empty); no I/O.
pub fn parse(spec: &RedisSpec) -> Result<RedisUrls, InvalidRedisUrl> {
    let cluster = !spec.cluster.is_empty();
    let urls: Vec<&str> = if cluster {
        spec.cluster.iter().map(|u| u.expose().as_str()).collect()
    } else {
        vec![spec.url.expose().as_str()]
    };
    let mut secrets = Vec::new();
    let mut nodes = Vec::new();
    for url in &urls {
        if url.trim().is_empty() {
            return Err(InvalidRedisUrl("(empty)".into()));
        }
        if let Some(raw) = raw_password(url).filter(|p| !p.is_empty()) {
            secrets.push(raw.to_string());
        }
        let info = url.into_connection_info().map_err(|e| {
            InvalidRedisUrl(format!(
                "{}: {}",
                redact_url(url),
                scrub(&e.to_string(), &secrets)
            ))
        })?;
        if let Some(p) = info.redis.password.as_ref().filter(|p| !p.is_empty()) {
            secrets.push(p.clone());
        }
        nodes.push(info);
    }
    // Longest secrets first, so a password containing another is scrubbed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let redacted = urls
        .iter()
        .map(|u| redact_url(u))
        .collect::<Vec<_>>()
        .join(",");
    if cluster {
        // The nodes must agree with each other (same password, TLS, no Unix sockets). The
        // client's builder is where those rules live; building it opens no connection.
        if let Err(e) = ClusterClient::builder(nodes.clone()).build() {
            return Err(InvalidRedisUrl(format!(
                "{redacted}: {}",
                scrub(&e.to_string(), &secrets)
            )));
        }
    }
    Ok(RedisUrls {
        nodes,
        cluster,
        secrets,
        redacted,
    })
}

/// `url` with any `user:password@` replaced by `*****@`, and any query string dropped (it may
/// carry credentials too). Works on strings that do not parse as URLs.
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = match without_query.find("://") {
        Some(i) => without_query.split_at(i + 3),
        None => ("", without_query),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("*****@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = if url.len() > without_query.len() {
        "?…"
    } else {
        ""
    };
    format!("{scheme}{host}{path}{tail}")
}

/// `text` with every one of `secrets` replaced by `*****` (pass them longest first).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "*****"))
}

/// The raw (still percent-encoded) password part of `scheme://user:password@host`, if any.
fn raw_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::Secret;

    fn single(url: &str) -> RedisSpec {
        RedisSpec {
            url: Secret::new(url.into()),
            ..RedisSpec::default()
        }
    }

    fn cluster(urls: &[&str]) -> RedisSpec {
        RedisSpec {
            cluster: urls.iter().map(|u| Secret::new(u.to_string())).collect(),
            ..RedisSpec::default()
        }
    }

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/0"),
            "redis://*****@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p%40ss@h:1?password=x"),
            "rediss://*****@h:1?…"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("not a url:pw@x"), "*****@x");
    }

    #[test]
    fn invalid_urls_are_reported_without_the_password() {
        for url in [
            "redis://:s3cr3t-pw@",
            "http://:s3cr3t-pw@host:1",
            "nonsense",
            "  ",
        ] {
            let err = parse(&single(url)).expect_err(url);
            let text = format!("{err} {err:?}");
            assert!(text.starts_with("invalid Redis URL "), "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[test]
    fn valid_urls_parse_without_io() {
        let urls = parse(&single("redis://:pw-123@127.0.0.1:1/2")).unwrap();
        assert!(!urls.cluster);
        assert_eq!(urls.nodes.len(), 1);
        assert_eq!(urls.redacted, "redis://*****@127.0.0.1:1/2");
        assert_eq!(urls.secrets, ["pw-123"]);
        assert!(!format!("{urls:?}").contains("pw-123"));

        let urls = parse(&cluster(&["redis://127.0.0.1:1", "redis://127.0.0.1:2"])).unwrap();
        assert!(urls.cluster);
        assert_eq!(urls.redacted, "redis://127.0.0.1:1,redis://127.0.0.1:2");
    }

    #[test]
    fn cluster_nodes_must_agree() {
        let err = parse(&cluster(&[
            "redis://:pw-one@127.0.0.1:1",
            "redis://:pw-two@127.0.0.1:2",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("different password"), "{err}");
        assert!(!err.contains("pw-one") && !err.contains("pw-two"), "{err}");
    }

    #[test]
    fn scrubs_secrets_from_error_text() {
        let secrets = vec!["pw-long".to_string(), "pw".to_string()];
        assert_eq!(scrub("auth pw-long / pw", &secrets), "auth ***** / *****");
    }
}
