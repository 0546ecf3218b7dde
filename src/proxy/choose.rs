//! Choosing a request's route: the candidates its head matches, then the first whose model
//! criterion holds (the body's model is read only when some candidate needs it), and the
//! priority group it asks for.

use super::errors::ProxyError;
use crate::body::ParsedBody;
use crate::config::schema::PriorityGroup;
use crate::routing::{balance, Route};
use crate::runtime::Runtime;
use pingora::http::RequestHeader;

/// The routes whose head criteria `req` meets, in config order; none is a 404.
pub(super) fn candidates<'r>(
    runtime: &'r Runtime,
    req: &RequestHeader,
    path: &str,
) -> Result<Vec<&'r Route>, ProxyError> {
    let candidates = runtime.candidates(req, path);
    if candidates.is_empty() {
        return Err(no_route(req, path));
    }
    Ok(candidates)
}

/// The first candidate whose model criterion the body meets, and the priority group the
/// request asks for on it (by header, or by a model alias).
pub(super) fn route<'r>(
    req: &RequestHeader,
    path: &str,
    candidates: &[&'r Route],
    body: &ParsedBody<'_>,
) -> Result<(&'r Route, Option<PriorityGroup>), ProxyError> {
    let needs_model = candidates
        .iter()
        .any(|r| r.matcher.model.is_some() || !r.groups.is_empty());
    let model = if !needs_model {
        None
    } else if candidates.iter().any(|r| reads_tree(r)) {
        body.model()
    } else {
        body.peek_model()
    };
    let route = candidates
        .iter()
        .find(|r| r.matcher.matches_model(model.as_deref()))
        .copied()
        .ok_or_else(|| no_route(req, path))?;
    if route.groups.is_empty() {
        return Ok((route, None));
    }
    let header = req
        .headers
        .get(balance::PRIORITY_HEADER)
        .and_then(|v| v.to_str().ok());
    let group = balance::requested_group(route, header, model.as_deref())
        .map_err(|priority| ProxyError::Priority { priority })?;
    Ok((route, group))
}

/// Whether a request on `route` may read the body's tree after the model: for its cache key,
/// or a target's model rewrite. If none of the candidates will, the model is read without it.
fn reads_tree(route: &Route) -> bool {
    route.cache.enabled
        || route
            .targets
            .iter()
            .chain(route.groups.iter().flat_map(|(_, targets)| targets))
            .any(|t| t.model.is_some())
}

fn no_route(req: &RequestHeader, path: &str) -> ProxyError {
    ProxyError::NoRoute {
        method: req.method.to_string(),
        path: path.to_string(),
    }
}
