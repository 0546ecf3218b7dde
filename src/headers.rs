//! Header names promptgate treats specially, one named set per reason: hop-by-hop (never
//! forwarded), written by promptgate itself (never injected), per-exchange (never replayed from
//! the cache). A leaf module: it imports nothing of the crate, so the proxy, the config check
//! and the cache all read the same lists.
//!
//! Names are lowercase, as `http::HeaderName::as_str` gives them.

/// Connection-specific headers (RFC 9110 §7.6.1): they describe one hop's connection, not the
/// message, so a proxy neither forwards them nor lets them be configured.
pub(crate) const CONNECTION_SPECIFIC: &[&str] = &[
    // Names the other hop-by-hop headers of this message; those are stripped too.
    "connection",
    // HTTP/1.0 persistent-connection parameters of this hop.
    "keep-alive",
    // Non-standard `Connection` some clients still send (named by RFC 9110 §7.6.1).
    "proxy-connection",
    // Transfer codings this hop accepts (RFC 9110 §10.1.4).
    "te",
    // Announces trailer fields; promptgate re-frames bodies and passes no trailers on.
    "trailer",
    // How this hop frames the body (RFC 9112 §6.1); promptgate frames its own.
    "transfer-encoding",
    // A protocol switch on this connection (RFC 9110 §7.8); not relayed.
    "upgrade",
];

/// Proxy authentication (RFC 9110 §11.7): between a client and the proxy next to it, so
/// hop-by-hop as well and never forwarded from a client. Unlike [`CONNECTION_SPECIFIC`] an
/// operator may inject them: credentials for a proxy in front of an upstream are what
/// injection is for.
/// (Read by the tests only: [`is_hop_by_hop`] spells the names out in its `match`.)
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const PROXY_AUTH: &[&str] = &["proxy-authenticate", "proxy-authorization"];

/// Request headers promptgate writes itself on every upstream request; an injected value would
/// contradict the request it sends.
pub(crate) const SET_PER_REQUEST: &[&str] = &[
    // The upstream's own authority (RFC 9110 §7.2).
    "host",
    // The length of the body promptgate sends (buffered, so always known).
    "content-length",
    // The body is buffered before the upstream is asked, so there is no `100 Continue` to await.
    "expect",
];

/// Response headers that describe one particular exchange, not the answer: replaying them from
/// the cache would lie (a stale date, someone else's request id or rate-limit budget, a cookie).
/// Hop-by-hop headers are not replayed either ([`is_replayable`]).
pub(crate) const PER_EXCHANGE: &[&str] = &[
    // When this response was made; a hit says how old it is with its own `Age`.
    "date",
    "age",
    // Another client's session.
    "set-cookie",
    // The framing of that response; a hit is framed anew.
    "content-length",
    // Request ids and tracing of that exchange (OpenAI, Anthropic, Cloudflare, Envoy).
    "x-request-id",
    "request-id",
    "req-id",
    "cf-ray",
    "cf-cache-status",
    "openai-processing-ms",
    "x-envoy-upstream-service-time",
    "server-timing",
    "via",
    // Connection advice and back-off for that moment, not for a later client.
    "alt-svc",
    "retry-after",
];

/// Prefixes of per-exchange response headers: rate-limit budgets at that moment, and
/// promptgate's own annotations (a hit gets fresh ones).
pub(crate) const PER_EXCHANGE_PREFIXES: &[&str] =
    &["x-ratelimit-", "anthropic-ratelimit-", "x-promptgate-"];

/// True for hop-by-hop headers ([`CONNECTION_SPECIFIC`] and [`PROXY_AUTH`]); the caller also
/// drops any header the message's `Connection` names. One `match` the compiler turns into a
/// switch on the length, then one comparison, instead of a scan of both lists per header
/// (`every_match_agrees_with_its_lists` keeps it equal to them).
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// True for client request headers never forwarded upstream as they came: hop-by-hop ones,
/// those promptgate sets itself on every upstream request ([`SET_PER_REQUEST`]) and
/// `accept-encoding` (promptgate asks for `identity`: it reads, stores and replays plain
/// bodies). A `match` each, as [`is_hop_by_hop`].
pub(crate) fn is_replaced_upstream(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "host" | "content-length" | "expect" | "accept-encoding"
        )
}

/// True for headers an operator may configure to be injected into upstream requests.
pub(crate) fn is_injectable(name: &str) -> bool {
    !CONNECTION_SPECIFIC.contains(&name) && !SET_PER_REQUEST.contains(&name)
}

/// True for response headers that are stored and replayed with the body.
pub(crate) fn is_replayable(name: &str) -> bool {
    !is_hop_by_hop(name)
        && !PER_EXCHANGE.contains(&name)
        && !PER_EXCHANGE_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header some set names, plus a few ordinary ones.
    fn known() -> Vec<&'static str> {
        let sets = [
            CONNECTION_SPECIFIC,
            PROXY_AUTH,
            SET_PER_REQUEST,
            PER_EXCHANGE,
        ];
        let ordinary: &[&str] = &[
            "authorization",
            "content-type",
            "accept-encoding",
            "openai-model",
        ];
        let mut all = Vec::new();
        for h in sets.iter().chain([&ordinary]).flat_map(|s| s.iter()) {
            if !all.contains(h) {
                all.push(*h);
            }
        }
        all
    }

    #[test]
    fn every_match_agrees_with_its_lists() {
        let mut names = known();
        names.extend(["accept-encoding", "x-connection", "hosts", "t", "", "Host"]);
        for name in names {
            let hop = CONNECTION_SPECIFIC.contains(&name) || PROXY_AUTH.contains(&name);
            assert_eq!(is_hop_by_hop(name), hop, "{name}");
            let replaced = hop || SET_PER_REQUEST.contains(&name) || name == "accept-encoding";
            assert_eq!(is_replaced_upstream(name), replaced, "{name}");
        }
    }

    #[test]
    fn hop_by_hop_is_rfc_9110_plus_proxy_auth() {
        let hop: Vec<_> = known().into_iter().filter(|h| is_hop_by_hop(h)).collect();
        assert_eq!(
            hop,
            [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "transfer-encoding",
                "upgrade",
                "proxy-authenticate",
                "proxy-authorization"
            ]
        );
    }

    #[test]
    fn framing_and_connection_headers_cannot_be_injected() {
        let refused: Vec<_> = known().into_iter().filter(|h| !is_injectable(h)).collect();
        assert_eq!(
            refused,
            [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "transfer-encoding",
                "upgrade",
                "host",
                "content-length",
                "expect"
            ]
        );
        for ok in [
            "authorization",
            "x-api-key",
            "proxy-authorization",
            "accept-encoding",
        ] {
            assert!(is_injectable(ok), "{ok}");
        }
    }

    #[test]
    fn per_exchange_and_hop_by_hop_headers_are_not_replayed() {
        for h in [
            "date",
            "set-cookie",
            "x-request-id",
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-tokens-limit",
            "x-promptgate-cache",
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
        ] {
            assert!(!is_replayable(h), "{h}");
        }
        for h in ["content-type", "openai-model", "anthropic-organization-id"] {
            assert!(is_replayable(h), "{h}");
        }
    }
}
