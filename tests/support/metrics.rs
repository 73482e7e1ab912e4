//! Reading `/metrics`: a parsed scrape, a matcher for one series, and an
//! eventually-assert that polls until a series holds.
//!
//! ```ignore
//! deliveries("legacy", "dead").value(1.0).assert_in(&gw.metrics().await);
//! let m = metric("callgate_outbox_pending").value(0.0).eventually(gw.admin(), secs(5)).await;
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::Admin;

/// One sample line of the Prometheus text format.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// One scrape: the text as served, and its samples. Displays as the text.
#[derive(Clone, Debug)]
pub struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses every sample line; panics on a line that is not one.
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| sample(l).unwrap_or_else(|| panic!("bad metrics line {l:?}")))
            .collect();
        Metrics { text, samples }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The sum of every series of `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `name{k="v",...} value`; label values may hold any character but `"`.
fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, mut rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let mut labels = BTreeMap::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let (v, after) = after.split_once('"')?;
        labels.insert(key.trim_start_matches(',').to_owned(), v.to_owned());
        rest = after;
    }
    (rest == "}").then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A series to look for: a name, some labels (others may be present), and
/// optionally what its value must be.
#[derive(Clone, Debug)]
pub struct MetricMatch {
    name: String,
    labels: Vec<(String, String)>,
    want: Want,
}

#[derive(Clone, Copy, Debug)]
enum Want {
    Present,
    Equal(f64),
    AtLeast(f64),
}

/// Starts a [`MetricMatch`] for the series `name`.
pub fn metric(name: &str) -> MetricMatch {
    MetricMatch {
        name: name.to_owned(),
        labels: Vec::new(),
        want: Want::Present,
    }
}

/// `callgate_requests_total{command,outcome}`.
pub fn requests(command: &str, outcome: &str) -> MetricMatch {
    metric("callgate_requests_total")
        .label("command", command)
        .label("outcome", outcome)
}

/// `callgate_upstream_requests_total{upstream,result}`.
pub fn upstream_requests(upstream: &str, result: &str) -> MetricMatch {
    metric("callgate_upstream_requests_total")
        .label("upstream", upstream)
        .label("result", result)
}

/// `callgate_deliveries_total{upstream,result}`.
pub fn deliveries(upstream: &str, result: &str) -> MetricMatch {
    metric("callgate_deliveries_total")
        .label("upstream", upstream)
        .label("result", result)
}

/// `callgate_fallbacks_total{reason}`.
pub fn fallbacks(reason: &str) -> MetricMatch {
    metric("callgate_fallbacks_total").label("reason", reason)
}

impl MetricMatch {
    pub fn label(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.labels.push((key.to_owned(), value.to_string()));
        self
    }

    /// The value must be exactly `value`.
    pub fn value(mut self, value: f64) -> Self {
        self.want = Want::Equal(value);
        self
    }

    /// The value must be `value` or more.
    pub fn at_least(mut self, value: f64) -> Self {
        self.want = Want::AtLeast(value);
        self
    }

    fn matches(&self, s: &Sample) -> bool {
        s.name == self.name && self.labels.iter().all(|(k, v)| s.label(k) == Some(v))
    }

    /// The value of the one series that matches (panics if several do).
    pub fn get(&self, m: &Metrics) -> Option<f64> {
        let found: Vec<&Sample> = m.samples.iter().filter(|s| self.matches(s)).collect();
        assert!(found.len() <= 1, "several series match {self}: {found:?}");
        found.first().map(|s| s.value)
    }

    /// Whether the series is there with the wanted value.
    pub fn holds(&self, m: &Metrics) -> bool {
        match (self.get(m), self.want) {
            (None, _) => false,
            (Some(_), Want::Present) => true,
            (Some(v), Want::Equal(want)) => v == want,
            (Some(v), Want::AtLeast(want)) => v >= want,
        }
    }

    #[track_caller]
    pub fn assert_in(&self, m: &Metrics) {
        assert!(self.holds(m), "{self}, found {:?} in:\n{m}", self.get(m));
    }

    /// Polls `/metrics` until the series holds, and returns that scrape;
    /// panics with the last scrape after `within`.
    pub async fn eventually(&self, admin: &Admin, within: Duration) -> Metrics {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = admin.metrics().await;
            if self.holds(&m) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{self} did not hold within {within:?}, found {:?} in:\n{m}",
                self.get(&m)
            );
            tokio::time::sleep(super::POLL).await;
        }
    }

    /// The buckets `(le, count)` of the histogram `name`, in served order.
    pub fn buckets(&self, m: &Metrics) -> Vec<(f64, f64)> {
        let bucket = metric(&format!("{}_bucket", self.name));
        let bucket = MetricMatch {
            labels: self.labels.clone(),
            ..bucket
        };
        m.samples
            .iter()
            .filter(|s| bucket.matches(s))
            .map(|s| {
                let le = s.label("le").expect("a bucket has `le`");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, s.value)
            })
            .collect()
    }
}

impl fmt::Display for MetricMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        write!(f, "{}{{{}}}", self.name, labels.join(","))?;
        match self.want {
            Want::Present => Ok(()),
            Want::Equal(v) => write!(f, " == {v}"),
            Want::AtLeast(v) => write!(f, " >= {v}"),
        }
    }
}
