//! A reader of the Prometheus text format (what `GET /metrics` answers), for tests: the samples
//! by name and labels. Included with `#[path]`.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// One sample: its metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Every sample of a scrape (comments and blank lines skipped). A line that is not a sample
/// fails the test.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escapes).
fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The value of the sample `name` whose labels include all of `labels` (exactly one must
/// match), or `None` when no sample matches.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches several samples: {matching:?}"
    );
    matching.first().map(|s| s.value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_samples() {
        let text = "# HELP x y\n# TYPE a counter\na{p=\"t\\\"o\",m=\"find\"} 3\nb 1.5\nc_bucket{le=\"+Inf\"} 2\n";
        let samples = super::parse(text);
        assert_eq!(super::value(&samples, "a", &[("p", "t\"o")]), Some(3.0));
        assert_eq!(super::value(&samples, "b", &[]), Some(1.5));
        assert_eq!(
            super::value(&samples, "c_bucket", &[("le", "+Inf")]),
            Some(2.0)
        );
        assert_eq!(super::value(&samples, "a", &[("p", "x")]), None);
    }
}
