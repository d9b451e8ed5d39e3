//! [`Json`]: a JSON value a registration carries (the initial twin, the payload), kept as its
//! validated text rather than as a parsed tree; and [`write_str`], a string written as JSON into a
//! body being built (the one copy the request, register and reply writers share).
//!
//! A webhook answer's twin is copied out of the body once; under load the generator only checks
//! it against a class's expectation, which [`contains`] does in one streaming pass. Building an
//! owned `serde_json::Value` per answer (a hashed map and a string per key) was a fifth of the
//! webhook-mode generator's instructions per request (benches/vs-wrk.sh). Whoever needs the
//! tree (the emulator's hub twin, transcripts, a mismatch's text) calls [`Json::value`]. Must
//! not: rewrite the text (key order and repeated keys stay as sent).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Validated JSON text, shared: a clone (a repeated answer's twin) copies nothing.
#[derive(Clone)]
pub struct Json(std::sync::Arc<RawValue>);

impl Json {
    /// The JSON of `v`.
    pub fn from_value(v: &Value) -> Self {
        // A `Value` always serialises (its map keys are strings).
        Self(
            serde_json::value::to_raw_value(v)
                .unwrap_or_else(|_| null())
                .into(),
        )
    }

    /// A copy of already validated JSON text (a field of a parsed answer).
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(raw.to_owned().into())
    }

    /// The text, exactly as received.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// The owned tree (key order kept).
    pub fn value(&self) -> Value {
        // The text was validated by the same parser, so this parse succeeds.
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Self::from_value(&v)
    }
}

impl PartialEq for Json {
    /// Equal as JSON values (not as text: `{"a": 1}` equals `{"a":1}`).
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.value() == other.value()
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Self(raw.into()))
    }
}

/// True when `expected` is contained in the value at `path` (object keys from the top) of
/// `json`: objects recursively (every expected key present with a contained value), other values
/// equal as `serde_json` compares them (`1` is not `1.0`; of a key sent twice the last value
/// counts). One streaming pass over the text, without building a tree.
pub fn contains(json: &Json, path: &[&str], expected: &Value) -> bool {
    let mut de = serde_json::Deserializer::from_str(json.as_str());
    DeserializeSeed::deserialize(walk::Path(path, expected), &mut de).unwrap_or(false)
}

use serde::de::DeserializeSeed;

/// [`contains`] for a parsed tree (a twin read back from a hub).
pub fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| is_subset(v, av))),
        _ => expected == actual,
    }
}

/// Hand-written serde visitors rather than a parsed tree (`serde_json::Value`, or a borrowed
/// DOM crate): building one to compare the twin and payload of every answer was a fifth of the
/// webhook generator's instructions per request; these allocate nothing for objects of up to
/// [`walk::INLINE`] expected keys. Each visitor consumes its whole value and says whether it
/// matched.
mod walk {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserializer;
    use serde_json::{Map, Value};

    /// Expected keys tracked on the stack.
    pub(super) const INLINE: usize = 16;

    /// An object key, borrowed unless it has escapes.
    struct Key<'a>(Cow<'a, str>);

    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// Visits an object's members: `find` gives an expected key's position, `value` compares
    /// its value; true when every expected key's last occurrence matched (and, if `exact`, no
    /// other key is present).
    fn members<'de, A: MapAccess<'de>>(
        mut map: A,
        expected: usize,
        exact: bool,
        find: impl Fn(&str) -> Option<usize>,
        mut value: impl FnMut(usize, &mut A) -> Result<bool, A::Error>,
    ) -> Result<bool, A::Error> {
        let mut inline = [None; INLINE];
        let mut spill = Vec::new();
        let seen: &mut [Option<bool>] = if expected <= INLINE {
            &mut inline[..expected]
        } else {
            spill.resize(expected, None);
            &mut spill
        };
        let mut other = false;
        while let Some(Key(k)) = map.next_key()? {
            match find(&k) {
                Some(i) => seen[i] = Some(value(i, &mut map)?),
                None => {
                    other = true;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(seen.iter().all(|s| *s == Some(true)) && !(exact && other))
    }

    fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    /// Visitor methods for every value a visitor does not expect: consumed, not matched.
    macro_rules! otherwise_false {
        () => {
            otherwise_false!(scalars);
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
                drain_seq(seq)
            }
        };
        (scalars) => {
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
        };
    }

    /// The value at a key path, then [`Sub`].
    pub(super) struct Path<'p, 'e>(pub &'p [&'p str], pub &'e Value);

    impl<'de> DeserializeSeed<'de> for Path<'_, '_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            match self.0.split_first() {
                None => Sub(self.1).deserialize(d),
                Some((key, rest)) => d.deserialize_any(Step(key, rest, self.1)),
            }
        }
    }

    struct Step<'p, 'e>(&'p str, &'p [&'p str], &'e Value);

    impl<'de> Visitor<'de> for Step<'_, '_> {
        type Value = bool;
        otherwise_false!();
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            let (key, rest, expected) = (self.0, self.1, self.2);
            members(
                map,
                1,
                false,
                |k| (k == key).then_some(0),
                |_, m| m.next_value_seed(Path(rest, expected)),
            )
        }
    }

    /// Containment: an object's expected members, any other value equal.
    pub(super) struct Sub<'e>(pub &'e Value);

    impl<'de> DeserializeSeed<'de> for Sub<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            match self.0 {
                Value::Object(e) => d.deserialize_any(Object(e, false)),
                v => Same(v).deserialize(d),
            }
        }
    }

    /// Equality.
    pub(super) struct Same<'e>(pub &'e Value);

    impl<'de> DeserializeSeed<'de> for Same<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            match self.0 {
                Value::Object(e) => d.deserialize_any(Object(e, true)),
                Value::Array(e) => d.deserialize_any(Array(e)),
                v => d.deserialize_any(Scalar(v)),
            }
        }
    }

    /// An expected object: its members contained (`false`) or equal (`true`, and no others).
    struct Object<'e>(&'e Map<String, Value>, bool);

    impl<'de> Visitor<'de> for Object<'_> {
        type Value = bool;
        otherwise_false!();
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            let (e, exact) = (self.0, self.1);
            members(
                map,
                e.len(),
                exact,
                |k| e.keys().position(|ek| ek == k),
                |i, m| {
                    let v = e.values().nth(i).unwrap_or(&Value::Null);
                    if exact {
                        m.next_value_seed(Same(v))
                    } else {
                        m.next_value_seed(Sub(v))
                    }
                },
            )
        }
    }

    /// An expected array: the same length, elements equal.
    struct Array<'e>(&'e [Value]);

    impl<'de> Visitor<'de> for Array<'_> {
        type Value = bool;
        otherwise_false!(scalars);
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            drain_map(map)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut all = true;
            for e in self.0 {
                match seq.next_element_seed(Same(e))? {
                    Some(same) => all &= same,
                    None => return Ok(false),
                }
            }
            if seq.next_element::<IgnoredAny>()?.is_some() {
                return drain_seq(seq);
            }
            Ok(all)
        }
    }

    /// An expected null, boolean, number or string.
    struct Scalar<'e>(&'e Value);

    impl<'de> Visitor<'de> for Scalar<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
            Ok(self.0.as_bool() == Some(v))
        }
        // serde_json reads non-negative integers as u64, negative ones as i64, the rest as f64,
        // and compares numbers by that kind.
        fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
            Ok(matches!(self.0, Value::Number(n) if n.is_u64() && n.as_u64() == Some(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
            Ok(
                matches!(self.0, Value::Number(n) if n.is_i64() && !n.is_u64() && n.as_i64() == Some(v)),
            )
        }
        fn visit_f64<E>(self, v: f64) -> Result<bool, E> {
            Ok(matches!(self.0, Value::Number(n) if n.is_f64() && n.as_f64() == Some(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(self.0.as_str() == Some(v))
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(self.0.is_null())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
            drain_seq(seq)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            drain_map(map)
        }
    }
}

/// Writes `s` as a JSON string. serde_json escapes only `"`, `\` and control characters, so a
/// string without them (a registration ID or hub name always is) is copied between quotes as it
/// is, skipping serde_json's byte-by-byte escape loop (a thirtieth of the webhook generator's
/// instructions per request); the output is the same.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // No early exit: the whole-string fold vectorises.
    let escapes = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escapes {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn j(text: &str) -> Json {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn keeps_the_text_and_serialises_it_unchanged() {
        let t = j(r#"{"tags":{"b":1,"a":2},"x":null}"#);
        assert_eq!(t.as_str(), r#"{"tags":{"b":1,"a":2},"x":null}"#);
        #[derive(Serialize)]
        struct Wrap {
            twin: Json,
        }
        assert_eq!(
            serde_json::to_string(&Wrap { twin: t.clone() }).unwrap(),
            r#"{"twin":{"tags":{"b":1,"a":2},"x":null}}"#
        );
        let keys: Vec<String> = t.value()["tags"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["b", "a"], "key order kept");
        assert!(j("null").is_null());
        assert_eq!(j(r#"{"a": 1}"#), j(r#"{"a":1}"#));
        assert_ne!(j(r#"{"a":1}"#), j(r#"{"a":1.0}"#));
    }

    #[test]
    fn containment_matches_serde_json_values() {
        let actual = j(
            r#"{"tags":{"deviceType":"toaster","n":1,"f":1.5,"neg":-2,"l":[1,"a",null,{"k":[true]}],"esc":"a\"b","o":{"x":1,"y":{"z":null}}},"du\u0070":1,"dup":2}"#,
        );
        let cases = [
            (json!({}), true),
            (json!({"tags": {}}), true),
            (json!({"tags": {"deviceType": "toaster"}}), true),
            (json!({"tags": {"n": 1, "f": 1.5, "neg": -2}}), true),
            (json!({"tags": {"l": [1, "a", null, {"k": [true]}]}}), true),
            (json!({"tags": {"esc": "a\"b"}}), true),
            (json!({"tags": {"o": {"y": {}}}}), true),
            (json!({"tags": {"o": {"x": 1, "y": {"z": null}}}}), true),
            (json!({"dup": 2}), true),
            (json!({"tags": {"deviceType": "heatpump"}}), false),
            (json!({"tags": {"n": 1.0}}), false),
            (json!({"tags": {"neg": -2.0}}), false),
            (json!({"tags": {"n": "1"}}), false),
            (json!({"tags": {"l": [1, "a", null]}}), false),
            (
                json!({"tags": {"l": [1, "a", null, {"k": [true]}, 5]}}),
                false,
            ),
            (json!({"tags": {"l": [1, "a", null, {}]}}), false),
            (
                json!({"tags": {"l": [1, "a", null, {"k": [true], "m": 1}]}}),
                false,
            ),
            (json!({"tags": {"missing": null}}), false),
            (json!({"tags": {"o": {"y": {"z": 0}}}}), false),
            (json!({"dup": 1}), false),
            (json!({"tags": 1}), false),
            (json!({"tags": {"n": {}}}), false),
            (json!(null), false),
            (json!([]), false),
        ];
        let tree = actual.value();
        for (e, want) in &cases {
            assert_eq!(
                contains(&actual, &[], e),
                *want,
                "{e} in {}",
                actual.as_str()
            );
            assert_eq!(is_subset(e, &tree), *want, "serde_json: {e}");
        }
        // A path, then containment.
        assert!(contains(&actual, &["tags", "o"], &json!({"x": 1})));
        assert!(contains(&actual, &["tags", "o", "y"], &json!({"z": null})));
        assert!(!contains(&actual, &["tags", "nope"], &json!({})));
        assert!(
            !contains(&actual, &["tags", "n"], &json!({})),
            "a number is not an object"
        );
        // More expected keys than fit on the stack.
        let wide: serde_json::Map<String, Value> =
            (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        let text = j(&Value::Object(wide.clone()).to_string());
        assert!(contains(&text, &[], &Value::Object(wide.clone())));
        let mut more = wide;
        more.insert("k40".into(), json!(40));
        assert!(!contains(&text, &[], &Value::Object(more)));
    }
}
