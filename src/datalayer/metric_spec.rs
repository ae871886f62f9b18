//! Metric selectors of `core-metrics-extractor` engine configs: a PromQL-style instant vector
//! selector `name{label=value,...}`, label values quoted or not. The empty string disables a spec.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl MetricSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            labels: Vec::new(),
        }
    }

    /// Parses a selector; `Ok(None)` for the empty string (a disabled spec).
    pub fn parse(s: &str) -> Result<Option<Self>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let name = name.trim();
        if !is_metric_name(name) {
            return Err(format!(
                "{name:?} is not a valid metric name (letters, digits, '_' and ':', not starting with a digit)"
            ));
        }
        let mut labels = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("unbalanced braces in {s:?}"))?;
            for pair in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("label matcher {pair:?} must look like label=value"))?;
                let k = k.trim();
                if !is_label_name(k) {
                    return Err(format!("{k:?} is not a valid label name"));
                }
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                labels.push((k.to_string(), v.to_string()));
            }
        }
        Ok(Some(Self {
            name: name.to_string(),
            labels,
        }))
    }
}

impl fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}=\"{v}\"")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_labelled_selectors() {
        assert_eq!(
            MetricSpec::parse("vllm:num_requests_waiting"),
            Ok(Some(MetricSpec::new("vllm:num_requests_waiting")))
        );
        let s = MetricSpec::parse("nv_trt_llm_request_metrics{request_type=waiting}")
            .unwrap()
            .unwrap();
        assert_eq!(s.labels, vec![("request_type".into(), "waiting".into())]);
        let s = MetricSpec::parse(r#"m{a="x", b=y}"#).unwrap().unwrap();
        assert_eq!(
            s.labels,
            vec![("a".into(), "x".into()), ("b".into(), "y".into())]
        );
        assert_eq!(s.to_string(), r#"m{a="x",b="y"}"#);
        assert_eq!(MetricSpec::parse(""), Ok(None));
    }

    #[test]
    fn rejects_bad_selectors() {
        assert!(MetricSpec::parse("9lives").is_err());
        assert!(MetricSpec::parse("m{a=1").is_err());
        assert!(MetricSpec::parse("m{a}").is_err());
        assert!(MetricSpec::parse("m{1a=x}").is_err());
    }
}
