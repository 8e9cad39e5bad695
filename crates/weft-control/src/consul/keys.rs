//! Consul's key matching for request bodies: its decoder takes `Name`, `name`, `NAME`, and for
//! many fields the snake_case form (`tagged_addresses`, `deregister_critical_service_after`).
//! [`canonical`] rewrites the keys weft reads to their Consul spelling, at the levels that are
//! structs; maps of the user's own (`Meta`) keep their keys. Keys weft does not read are
//! collected, so the answer can name them (`X-Weft-Ignored-Fields`): Consul ignores unknown
//! fields, and so does weft, but says which.

use serde_json::{Map, Value};

/// The shape of a value: a struct's fields (each with its shape), a list of structs, or anything.
#[derive(Clone, Copy)]
pub enum Shape {
    Any,
    Struct(Fields),
    List(Fields),
}

pub type Fields = &'static [(&'static str, Shape)];

fn fold(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').map(|c| c.to_ascii_lowercase()).collect()
}

/// `value` with its keys spelt as `shape` spells them; keys `shape` does not know go to
/// `ignored`, by path (`Connect.SidecarService.Proxy`).
pub fn canonical(value: Value, shape: Shape, path: &str, ignored: &mut Vec<String>) -> Value {
    match (value, shape) {
        (Value::Object(map), Shape::Struct(fields)) => Value::Object(fields_of(map, fields, path, ignored)),
        (Value::Array(items), Shape::List(fields)) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| canonical(v, Shape::Struct(fields), &format!("{path}[{i}]"), ignored))
                .collect(),
        ),
        (v, _) => v,
    }
}

fn fields_of(map: Map<String, Value>, fields: Fields, path: &str, ignored: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, v) in map {
        let folded = fold(&key);
        match fields.iter().find(|(name, _)| fold(name) == folded) {
            Some((name, shape)) => {
                let child = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
                out.insert(name.to_string(), canonical(v, *shape, &child, ignored));
            }
            None => ignored.push(if path.is_empty() { key } else { format!("{path}.{key}") }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INNER: Fields = &[("Port", Shape::Any)];
    const OUTER: Fields = &[
        ("Name", Shape::Any),
        ("TaggedAddresses", Shape::Any),
        ("Meta", Shape::Any),
        ("Inner", Shape::Struct(INNER)),
        ("Checks", Shape::List(INNER)),
    ];

    #[test]
    fn keys_match_in_any_case_and_snake_case_and_user_maps_keep_theirs() {
        let mut ignored = vec![];
        let v = json!({"NAME": "a", "tagged_addresses": {}, "meta": {"someKey": "x"}, "inner": {"port": 1, "extra": 2},
            "checks": [{"PORT": 3}], "Weights": {}});
        let out = canonical(v, Shape::Struct(OUTER), "", &mut ignored);
        assert_eq!(
            out,
            json!({"Name": "a", "TaggedAddresses": {}, "Meta": {"someKey": "x"}, "Inner": {"Port": 1}, "Checks": [{"Port": 3}]})
        );
        ignored.sort();
        assert_eq!(ignored, vec!["Inner.extra", "Weights"]);
    }
}
