//! Reads gathered Prometheus metrics back into plain numbers: counter sums by label, merged
//! histograms and their quantiles. `/stats` and the sampler read the same registry `/metrics`
//! prints, so the dashboard and Prometheus can never disagree.

use prometheus::proto::{Metric, MetricFamily};

/// One gather of the registry.
pub struct Reading {
    families: Vec<MetricFamily>,
}

/// The value of `name` on `metric` ("" when the metric has no such label).
pub fn label<'m>(metric: &'m Metric, name: &str) -> &'m str {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

impl Reading {
    pub fn new(families: Vec<MetricFamily>) -> Reading {
        Reading { families }
    }

    /// Every series of metric `name`.
    pub fn series<'r>(&'r self, name: &str) -> impl Iterator<Item = &'r Metric> + 'r {
        let found = self.families.iter().find(|f| f.name() == name);
        found.into_iter().flat_map(|f| f.get_metric().iter())
    }

    /// The sum of counter (or gauge) `name` over the series `keep` accepts.
    pub fn sum(&self, name: &str, keep: impl Fn(&Metric) -> bool) -> f64 {
        self.series(name)
            .filter(|m| keep(m))
            .map(|m| {
                if m.get_counter().is_some() {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
            .sum()
    }

    /// [`Reading::sum`] of an integer counter.
    pub fn count(&self, name: &str, keep: impl Fn(&Metric) -> bool) -> u64 {
        self.sum(name, keep).round() as u64
    }

    /// The series of histogram `name` that `keep` accepts, added up.
    pub fn histogram(&self, name: &str, keep: impl Fn(&Metric) -> bool) -> Buckets {
        let mut total = Buckets::default();
        for m in self.series(name).filter(|m| keep(m)) {
            let h = m.get_histogram();
            let part = Buckets {
                bounds: h.get_bucket().iter().map(|b| b.upper_bound()).collect(),
                cumulative: h
                    .get_bucket()
                    .iter()
                    .map(|b| b.cumulative_count())
                    .collect(),
                count: h.get_sample_count(),
                sum: h.get_sample_sum(),
            };
            total.add(&part);
        }
        total
    }
}

/// A histogram's cumulative bucket counts (all series share the same bounds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// Upper bounds in seconds, ascending, without `+Inf`.
    pub bounds: Vec<f64>,
    /// Observations at or under each bound.
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations, in seconds.
    pub sum: f64,
}

impl Buckets {
    fn add(&mut self, other: &Buckets) {
        if self.bounds.is_empty() {
            self.bounds.clone_from(&other.bounds);
            self.cumulative = vec![0; other.cumulative.len()];
        }
        // Every promptgate histogram uses one set of bounds; a mismatch would be a bug.
        debug_assert_eq!(self.bounds, other.bounds);
        for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// The observations made since `earlier` (a reading of the same histogram).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        if earlier.bounds != self.bounds {
            return self.clone();
        }
        Buckets {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The `q`-quantile (0..=1) in seconds, estimated like PromQL's `histogram_quantile`:
    /// linear within the bucket it falls in (from 0 for the first), the highest bound when it
    /// falls past it. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (&bound, &cumulative) in self.bounds.iter().zip(&self.cumulative) {
            if cumulative as f64 >= rank && cumulative > below {
                let within = (rank - below as f64) / (cumulative - below) as f64;
                return Some(lower + (bound - lower) * within);
            }
            below = cumulative;
            lower = bound;
        }
        self.bounds.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(cumulative: &[u64], count: u64) -> Buckets {
        Buckets {
            bounds: vec![0.001, 0.01, 0.1, 1.0],
            cumulative: cumulative.to_vec(),
            count,
            sum: 0.0,
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_promql() {
        // 10 observations under 1 ms, 10 between 10 and 100 ms
        let b = buckets(&[10, 10, 20, 20], 20);
        assert_eq!(b.quantile(0.5), Some(0.001));
        // rank 19 of 20: 9/10 of the way through (0.01, 0.1]
        assert!((b.quantile(0.95).unwrap() - (0.01 + 0.09 * 0.9)).abs() < 1e-12);
        assert!((b.quantile(0.25).unwrap() - 0.0005).abs() < 1e-12);
        assert_eq!(buckets(&[0, 0, 0, 0], 0).quantile(0.5), None);
    }

    #[test]
    fn observations_past_the_last_bound_report_that_bound() {
        let b = buckets(&[0, 0, 0, 1], 4);
        assert_eq!(b.quantile(0.99), Some(1.0));
        assert!((b.quantile(0.25).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn differences_count_only_the_new_observations() {
        let then = buckets(&[1, 2, 2, 2], 2);
        let now = buckets(&[1, 2, 5, 5], 5);
        let d = now.since(&then);
        assert_eq!((d.cumulative.clone(), d.count), (vec![0, 0, 3, 3], 3));
        assert!((d.quantile(0.5).unwrap() - 0.055).abs() < 1e-12);
    }
}
