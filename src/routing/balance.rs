//! The order in which a request tries a route's targets: its priority group, the route's
//! strategy (failover, weighted, latency), and passive health (ejected upstreams go last).

use crate::config::schema::{PriorityGroup, Strategy};
use crate::routing::{Route, Target};

/// The request header that picks a priority group (part of the config's contract, because a
/// route with groups varies its cache key on it).
pub use crate::config::spec::PRIORITY_HEADER;
/// A model alias that picks a priority group: `"model": "auto:speed"`.
const MODEL_ALIAS_PREFIX: &str = "auto:";

/// Why a priority could not be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PriorityError {
    #[error("unknown priority {0:?} (speed, cost, quality or fallback)")]
    Unknown(String),
    #[error("route {route} has no {group:?} group")]
    NotOnRoute { route: String, group: &'static str },
}

/// The group a request asks for, by header or by model alias; `None` when it asks for none.
pub fn requested_group(
    route: &Route,
    header: Option<&str>,
    model: Option<&str>,
) -> Result<Option<PriorityGroup>, PriorityError> {
    let asked = match (
        header,
        model.and_then(|m| m.strip_prefix(MODEL_ALIAS_PREFIX)),
    ) {
        (Some(h), _) => h,
        (None, Some(alias)) => alias,
        (None, None) => return Ok(None),
    };
    let group =
        PriorityGroup::parse(asked).ok_or_else(|| PriorityError::Unknown(asked.to_string()))?;
    if route.group(group).is_none() {
        return Err(PriorityError::NotOnRoute {
            route: route.name.clone(),
            group: group.as_str(),
        });
    }
    Ok(Some(group))
}

/// The targets to try, in order: the chosen group's (then the `fallback` group's), or the
/// route's `targets` (then `fallback`); arranged by the route's strategy; healthy ones first.
pub fn order(route: &Route, group: Option<PriorityGroup>) -> Vec<&Target> {
    let fallback = route.group(PriorityGroup::Fallback).unwrap_or(&[]);
    let primary: &[Target] = match group {
        Some(g) => route.group(g).unwrap_or(&[]),
        None if route.targets.is_empty() => fallback,
        None => &route.targets,
    };
    let mut list: Vec<&Target> = primary.iter().collect();
    if !std::ptr::eq(primary, fallback) {
        list.extend(fallback.iter());
    }
    arrange(&mut list, route.strategy);
    // Stable: keeps the strategy's order among the healthy and among the ejected.
    list.sort_by_key(|t| t.upstream.is_ejected());
    list
}

fn arrange(list: &mut [&Target], strategy: Strategy) {
    if list.len() < 2 {
        return;
    }
    match strategy {
        Strategy::Failover => {}
        Strategy::Weighted => {
            let total: u64 = list.iter().map(|t| u64::from(t.weight)).sum();
            if total == 0 {
                return;
            }
            let mut pick = fastrand::u64(0..total);
            let first = list
                .iter()
                .position(|t| {
                    let w = u64::from(t.weight);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            list[..=first].rotate_right(1);
        }
        Strategy::Latency => {
            // Power of two choices: compare two random targets, lead with the faster one.
            // An upstream not measured yet counts as fastest, so it gets measured.
            let a = fastrand::usize(0..list.len());
            let mut b = fastrand::usize(0..list.len() - 1);
            if b >= a {
                b += 1;
            }
            let faster = if list[a].upstream.latency_micros() <= list[b].upstream.latency_micros() {
                a
            } else {
                b
            };
            list[..=faster].rotate_right(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn route(yaml_route: &str) -> Route {
        let yaml = format!(
            "upstreams:\n  a: {{ url: \"http://127.0.0.1:1\" }}\n  b: {{ url: \"http://127.0.0.1:2\" }}\n  c: {{ url: \"http://127.0.0.1:3\" }}\nroutes:\n  - name: r\n{yaml_route}"
        );
        let spec = config::parse(&yaml, "t.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        crate::runtime::build(&spec).routes.remove(0)
    }

    fn names(list: &[&Target]) -> Vec<String> {
        list.iter()
            .map(|t| {
                format!(
                    "{}{}",
                    t.upstream.name,
                    t.model
                        .as_deref()
                        .map(|m| format!(":{m}"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn failover_keeps_order_and_puts_ejected_last() {
        let r = route("    targets: [a, b, c]\n");
        assert_eq!(names(&order(&r, None)), ["a", "b", "c"]);
        for _ in 0..3 {
            r.targets[0].upstream.record_failure();
        }
        assert!(r.targets[0].upstream.is_ejected());
        assert_eq!(names(&order(&r, None)), ["b", "c", "a"]);
    }

    #[test]
    fn weighted_picks_by_weight() {
        let r = route("    strategy: weighted\n    targets: [{upstream: a, weight: 9}, {upstream: b, weight: 1}]\n");
        let firsts = (0..2000)
            .filter(|_| order(&r, None)[0].upstream.name == "a")
            .count();
        assert!(
            (1600..1990).contains(&firsts),
            "a first {firsts} times of 2000"
        );
        assert_eq!(order(&r, None).len(), 2, "the others stay as fallbacks");
    }

    #[test]
    fn latency_prefers_the_faster_upstream() {
        let r = route("    strategy: latency\n    targets: [a, b]\n");
        r.targets[0]
            .upstream
            .record_success(std::time::Duration::from_millis(900));
        r.targets[1]
            .upstream
            .record_success(std::time::Duration::from_millis(20));
        for _ in 0..20 {
            assert_eq!(order(&r, None)[0].upstream.name, "b");
        }
    }

    #[test]
    fn priority_groups_by_header_or_alias_then_fallback() {
        let r = route(
            "    groups:\n      speed: [{upstream: a, model: small}]\n      quality: [{upstream: b, model: big}]\n      fallback: [{upstream: c, model: safe}]\n",
        );
        let speed = requested_group(&r, Some("speed"), None).unwrap();
        assert_eq!(names(&order(&r, speed)), ["a:small", "c:safe"]);
        let quality = requested_group(&r, None, Some("auto:quality")).unwrap();
        assert_eq!(names(&order(&r, quality)), ["b:big", "c:safe"]);
        assert_eq!(
            names(&order(&r, None)),
            ["c:safe"],
            "no priority: the fallback group"
        );
        assert_eq!(requested_group(&r, None, Some("gpt-4o")), Ok(None));
        assert!(matches!(
            requested_group(&r, Some("fastest"), None),
            Err(PriorityError::Unknown(_))
        ));
        assert!(matches!(
            requested_group(&r, Some("cost"), None),
            Err(PriorityError::NotOnRoute { .. })
        ));
    }
}
