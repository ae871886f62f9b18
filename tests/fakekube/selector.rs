//! Label and field selectors as the API server parses and applies them.

use serde_json::Value;

/// Label selector terms (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`).
#[derive(Debug, Clone, Default)]
pub(super) struct Selector(Vec<LabelReq>);

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

fn split_terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter().map(|t| t.trim().to_string()).collect()
}

impl Selector {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for t in split_terms(s).into_iter().filter(|t| !t.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("bad set in {t:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some((k, v)) = t.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = t.strip_prefix('!') {
                LabelReq::Absent(k.trim().into())
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(t)
            } else {
                return Err(format!("unable to parse requirement: {t:?}"));
            };
            out.push(req);
        }
        Ok(Selector(out))
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v),
            LabelReq::Ne(k, v) => get(k) != Some(v),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::Absent(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

pub(super) fn parse_fields(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, negate) = if let Some((f, v)) = t.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = t.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = t.split_once('=') {
            (f, v, false)
        } else {
            return Err(format!("invalid field selector {t:?}"));
        };
        if field != "metadata.name" && field != "metadata.namespace" {
            return Err(format!("field label not supported: {field}"));
        }
        out.push(FieldReq {
            field: field.into(),
            value: value.into(),
            negate,
        });
    }
    Ok(out)
}

pub(super) fn fields_match(reqs: &[FieldReq], obj: &Value) -> bool {
    reqs.iter().all(|r| {
        let v = match r.field.as_str() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            _ => obj["metadata"]["namespace"].as_str(),
        };
        (v == Some(r.value.as_str())) != r.negate
    })
}
