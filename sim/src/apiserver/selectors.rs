//! Label and field selectors as list and watch requests give them.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelTerm {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed `labelSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelQuery(Vec<LabelTerm>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot parse selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

/// Splits at commas that are not inside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

fn set(s: &str, input: &str) -> Result<Vec<String>, SelectorError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError {
            input: input.into(),
            reason: format!("expected (a,b) in {s:?}"),
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelQuery {
    pub fn parse(input: &str) -> Result<LabelQuery, SelectorError> {
        let mut out = Vec::new();
        for t in terms(input) {
            let term = if let Some(k) = t.strip_prefix('!') {
                LabelTerm::Absent(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                LabelTerm::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                LabelTerm::NotIn(k.trim().into(), set(v, input)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                LabelTerm::In(k.trim().into(), set(v, input)?)
            } else if t.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
                LabelTerm::Exists(t.to_string())
            } else {
                return Err(SelectorError {
                    input: input.into(),
                    reason: format!("unknown term {t:?}"),
                });
            };
            out.push(term);
        }
        Ok(LabelQuery(out))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            LabelTerm::Eq(k, v) => labels.get(k) == Some(v),
            LabelTerm::Ne(k, v) => labels.get(k) != Some(v),
            LabelTerm::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelTerm::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::Absent(k) => !labels.contains_key(k),
        })
    }
}

/// A parsed `fieldSelector`: equality and inequality on dotted paths such as
/// `spec.nodeName`, `metadata.name`, `metadata.namespace`, `status.phase`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldQuery(Vec<(String, bool, String)>);

impl FieldQuery {
    pub fn parse(input: &str) -> Result<FieldQuery, SelectorError> {
        let mut out = Vec::new();
        for t in terms(input) {
            let (path, eq, value) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError {
                    input: input.into(),
                    reason: format!("unknown field term {t:?}"),
                });
            };
            out.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldQuery(out))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, eq, value)| {
            let mut v = object;
            for part in path.split('.') {
                v = &v[part];
            }
            let actual = v.as_str().unwrap_or("");
            (actual == value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_of_every_form() {
        let q = LabelQuery::parse("app=web,tier!=db, env in (prod, staging),!legacy,team").unwrap();
        assert!(q.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!q.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!q.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!q.matches(&labels(&[("app", "web"), ("env", "prod")])));
        let q = LabelQuery::parse("zone notin (a,b)").unwrap();
        assert!(q.matches(&labels(&[])));
        assert!(!q.matches(&labels(&[("zone", "a")])));
        assert!(LabelQuery::parse("a in b").is_err());
        assert!(LabelQuery::parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn field_selectors() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert!(FieldQuery::parse("spec.nodeName=n1").unwrap().matches(&pod));
        assert!(!FieldQuery::parse("spec.nodeName=n2").unwrap().matches(&pod));
        assert!(FieldQuery::parse("spec.nodeName!=n2,metadata.name==p")
            .unwrap()
            .matches(&pod));
        assert!(FieldQuery::parse("spec.nodeName").is_err());
    }
}
