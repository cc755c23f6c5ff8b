//! Every unknown field and every unknown choice of a manifest at once, each at its
//! line:col with a "did you mean" for a near miss. serde stops at the first one; this
//! pass walks the document against the manifest's JSON Schema (generated from the same
//! types serde parses into, so the two cannot disagree) before serde runs.

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::validate::Report;

/// Reports unknown keys (in tables that deny them) and string values outside their
/// choices; whether it reported any.
pub(super) fn check(r: &mut Report, text: &str) -> bool {
    // A syntax error: the serde pass reports it.
    let Ok(doc) = DeTable::parse(text) else {
        return false;
    };
    let schema = super::schema();
    let mut found = false;
    table(r, &schema, &schema, doc.get_ref(), "", &mut found);
    found
}

/// The schema `s` stands for: `$ref`s followed, an `Option`'s `anyOf [T, null]` reduced to T.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    if let Some(name) = s.get("$ref").and_then(Value::as_str) {
        let def = name.rsplit('/').next().unwrap_or_default();
        return root
            .pointer(&format!("/$defs/{def}"))
            .map_or(s, |d| resolve(root, d));
    }
    if let Some(variants) = s.get("anyOf").and_then(Value::as_array)
        && let Some(t) = variants
            .iter()
            .find(|v| v.get("type") != Some(&Value::from("null")))
    {
        return resolve(root, t);
    }
    s
}

fn table(r: &mut Report, root: &Value, s: &Value, t: &DeTable, at: &str, found: &mut bool) {
    let s = resolve(root, s);
    let props = s.get("properties").and_then(Value::as_object);
    let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
    let open = s.get("additionalProperties").filter(|v| v.is_object());
    for (key, value) in t {
        let name: &str = key.get_ref();
        let here = if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        };
        match (props.and_then(|p| p.get(name)), open) {
            (Some(sub), _) | (None, Some(sub)) => self::value(r, root, sub, value, &here, found),
            (None, None) if closed => {
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let place = if at.is_empty() {
                    String::new()
                } else {
                    format!(" in `{at}`")
                };
                r.at(
                    key.span(),
                    format!("unknown field `{name}`{place}{}", hint(name, &known)),
                );
                *found = true;
            }
            (None, None) => {}
        }
    }
}

fn value(r: &mut Report, root: &Value, s: &Value, v: &Spanned<DeValue>, at: &str, found: &mut bool) {
    let s = resolve(root, s);
    match v.get_ref() {
        DeValue::Table(t) => table(r, root, s, t, at, found),
        DeValue::Array(items) => {
            if let Some(item) = s.get("items") {
                for v in items {
                    value(r, root, item, v, at, found);
                }
            }
        }
        DeValue::String(text) => {
            let choices = choices(s);
            if !choices.is_empty() && !choices.contains(&&**text) {
                r.at(
                    v.span(),
                    format!("`{at}`: unknown value `{text}`{}", hint(text, &choices)),
                );
                *found = true;
            }
        }
        _ => {}
    }
}

/// The strings a schema allows, when it is a closed set (`enum`, or `oneOf` variants
/// that are each a `const` or an `enum`).
fn choices(s: &Value) -> Vec<&str> {
    fn strings(v: &Value) -> Option<Vec<&str>> {
        if let Some(c) = v.get("const") {
            return c.as_str().map(|c| vec![c]);
        }
        let all = v.get("enum")?.as_array()?;
        all.iter().map(Value::as_str).collect()
    }
    if s.get("enum").is_some() {
        return strings(s).unwrap_or_default();
    }
    let Some(variants) = s.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    let per_variant: Option<Vec<Vec<&str>>> = variants.iter().map(strings).collect();
    per_variant.map(|v| v.concat()).unwrap_or_default()
}

/// ", did you mean `x`?" for the nearest known name (separators ignored), then the list.
fn hint(name: &str, known: &[&str]) -> String {
    let bare = |s: &str| s.replace(['_', '-'], "").to_lowercase();
    let nearest = known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(&bare(name), &bare(k)), *k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    match nearest {
        Some((_, k)) => format!("; did you mean `{k}`? (expected one of {})", list.join(", ")),
        None => format!(", expected one of {}", list.join(", ")),
    }
}
