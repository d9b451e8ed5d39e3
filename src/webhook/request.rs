//! What the seed functions read of an AllocationRequest body: `deviceRuntimeContext.registrationId`
//! and `linkedHubs`, read the way their `JObject` lookups read them (any JSON is accepted, a
//! later duplicate key wins, a field of another type reads as absent) without building the
//! request's JSON tree. Must not decide anything: [`super::policy`] does.
//!
//! Hand-written serde visitors rather than `serde_json::Value`: the whole tree (every key and
//! string of the ~1 KB enrollment, in ordered maps) was 3.4% of the in-process device benchmark's
//! CPU (scenarios/bench-mqtt.toml under perf), for two fields; a derived struct would refuse
//! duplicate keys and wrongly typed fields the functions accept.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The two fields the functions read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Read<'a> {
    /// `deviceRuntimeContext.registrationId`, when it is a string.
    pub registration_id: Option<Cow<'a, str>>,
    /// `linkedHubs`.
    pub linked_hubs: Hubs<'a>,
}

/// What `linkedHubs` is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hubs<'a> {
    /// Absent (or the body is not an object).
    Missing,
    /// `null`.
    Null,
    /// An array: its string elements (others are skipped, as `ToObject<string[]>` callers
    /// filtering strings do).
    List(Vec<Cow<'a, str>>),
    /// Anything else.
    Other,
}

/// Reads a body; an error when it is not one JSON value.
pub(crate) fn read(body: &[u8]) -> Result<Read<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// A value read as one of JSON's kinds: each kind it does not care about reads as [`Shape::OTHER`]
/// (an array or object skipped to its end). One visitor ([`Any`]) serves every such value.
trait Shape<'de>: Sized {
    /// What any kind not handled below reads as.
    const OTHER: Self;
    /// A string (borrowed from the body unless it has escapes).
    fn string(_: Cow<'de, str>) -> Self {
        Self::OTHER
    }
    /// `null`.
    fn null() -> Self {
        Self::OTHER
    }
    /// An array.
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        skip_seq(seq).map(|()| Self::OTHER)
    }
    /// An object.
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        skip_map(map).map(|()| Self::OTHER)
    }
}

/// The visitor of a [`Shape`]: serde_json's `deserialize_any` calls one of these per value.
struct Any<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for Any<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::OTHER)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::OTHER)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::OTHER)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::OTHER)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<T, E> {
        Ok(T::string(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        Ok(T::string(Cow::Owned(s.to_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::null())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

/// Deserialises each [`Shape`] through [`Any`].
macro_rules! by_shape {
    ($($t:ident),*) => {$(
        impl<'de> Deserialize<'de> for $t<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Any(PhantomData))
            }
        }
    )*};
}
by_shape!(Read, Context, MaybeStr, Hubs, Skip);

/// A value nobody reads, skipped as deep as the JSON tree would be built (serde_json's limit of
/// 128 levels holds for it as for `Value`; `IgnoredAny` skips without one).
struct Skip<'a>(PhantomData<&'a ()>);

impl<'de> Shape<'de> for Skip<'de> {
    const OTHER: Self = Skip(PhantomData);
}

/// Drains a sequence or map nobody reads.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, Skip>()?.is_some() {}
    Ok(())
}

impl Read<'_> {
    /// Neither field (what a body that is not an object reads as).
    pub(crate) const NONE: Self = Read {
        registration_id: None,
        linked_hubs: Hubs::Missing,
    };
}

impl<'de> Shape<'de> for Read<'de> {
    const OTHER: Self = Read::NONE;
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut read = Self::OTHER;
        while let Some(Key(key)) = map.next_key()? {
            match key {
                "deviceRuntimeContext" => read.registration_id = map.next_value::<Context>()?.0,
                "linkedHubs" => read.linked_hubs = map.next_value()?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(read)
    }
}

/// The device context: its registration ID when it is an object with a string one.
struct Context<'a>(Option<Cow<'a, str>>);

impl<'de> Shape<'de> for Context<'de> {
    const OTHER: Self = Context(None);
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut id = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == "registrationId" {
                id = map.next_value::<MaybeStr>()?.0;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(Context(id))
    }
}

/// Any value: the string, when it is one.
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de> Shape<'de> for MaybeStr<'de> {
    const OTHER: Self = MaybeStr(None);
    fn string(s: Cow<'de, str>) -> Self {
        MaybeStr(Some(s))
    }
}

impl<'de> Shape<'de> for Hubs<'de> {
    const OTHER: Self = Hubs::Other;
    fn null() -> Self {
        Hubs::Null
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut hubs = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(16));
        while let Some(MaybeStr(s)) = seq.next_element()? {
            hubs.extend(s);
        }
        Ok(Hubs::List(hubs))
    }
}

/// An object key, compared where it lies: a key with escapes is unescaped into a scratch
/// buffer, so it is matched inside the visitor rather than borrowed out of it.
struct Key(&'static str);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                const READ: [&str; 3] = ["deviceRuntimeContext", "linkedHubs", "registrationId"];
                Ok(Key(READ.into_iter().find(|k| *k == s).unwrap_or("")))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The same reading through the JSON tree, as the functions' `JObject` lookups do.
    fn by_tree(body: &[u8]) -> Result<(Option<String>, Hubs<'static>), ()> {
        let v: Value = serde_json::from_slice(body).map_err(|_| ())?;
        let id = v
            .pointer("/deviceRuntimeContext/registrationId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let hubs = match v.get("linkedHubs") {
            None => Hubs::Missing,
            Some(Value::Null) => Hubs::Null,
            Some(Value::Array(a)) => Hubs::List(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| Cow::Owned(s.to_owned()))
                    .collect(),
            ),
            Some(_) => Hubs::Other,
        };
        Ok((id, hubs))
    }

    #[test]
    fn reads_as_the_json_tree_does() {
        // Nesting over serde_json's 128 levels fails as the tree does, under it reads; in every
        // place a value is skipped.
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let deep = [
            format!("{{\"x\":{}}}", nest(200)),
            format!(
                "{{\"x\":{},\"deviceRuntimeContext\":{{\"registrationId\":\"r\"}}}}",
                nest(100)
            ),
            format!("{{\"linkedHubs\":[\"h\",{}]}}", nest(200)),
            format!("{{\"linkedHubs\":{{\"a\":{}}}}}", nest(200)),
            format!(
                "{{\"deviceRuntimeContext\":{{\"registrationId\":\"r\",\"k\":{}}}}}",
                nest(200)
            ),
            format!(
                "{{\"deviceRuntimeContext\":{{\"registrationId\":{}}}}}",
                nest(200)
            ),
            format!("{{\"deviceRuntimeContext\":{}}}", nest(200)),
        ];
        let bodies: Vec<&[u8]> = vec![
            br#"{"deviceRuntimeContext":{"registrationId":"a-1","symmetricKey":{}},"linkedHubs":["h1","h2"]}"#,
            br#"{"enrollmentGroup":{"iotHubs":["x"],"etag":"\"00\""},"deviceRuntimeContext":{"payload":{"registrationId":"no"},"registrationId":"a\u00e9\"b"},"linkedHubs":["h1",7,null,{"a":1},"h\n2"]}"#,
            br#"{"deviceRuntimeContext":{"registrationId":"first"},"deviceRuntimeContext":{"registrationId":"second"}}"#,
            br#"{"deviceRuntimeContext":{"registrationId":"x"},"deviceRuntimeContext":"flat"}"#,
            br#"{"deviceRuntimeContext":{"registrationId":"x","registrationId":5}}"#,
            br#"{"deviceRuntimeContext":["registrationId"],"linkedHubs":null}"#,
            br#"{"deviceRuntimeContext":null,"linkedHubs":"h1"}"#,
            br#"{"deviceRuntime\u0043ontext":{"registrationId":"escaped-key"},"linked\u0048ubs":{"0":"h"}}"#,
            br#"{"linkedHubs":[],"linkedHubs":[true,1.5,-3,"z"]}"#,
            br#"["deviceRuntimeContext"]"#,
            br#""a string""#,
            b"42",
            b"null",
            b"  {}  ",
            br#"{"a":1} trailing"#,
            br#"{"a":}"#,
            br#"{"deviceRuntimeContext":{"registrationId":"x"}"#,
            b"{\"deviceRuntimeContext\":{\"registrationId\":\"\xff\"}}",
        ];
        let bodies = bodies.into_iter().chain(deep.iter().map(|d| d.as_bytes()));
        for body in bodies {
            let fast = read(body)
                .map(|r| (r.registration_id.map(Cow::into_owned), r.linked_hubs))
                .map_err(|_| ());
            assert_eq!(fast, by_tree(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn plain_strings_are_borrowed_from_the_body() {
        let body = br#"{"deviceRuntimeContext":{"registrationId":"a-1"},"linkedHubs":["h1"]}"#;
        let r = read(body).unwrap();
        assert!(matches!(r.registration_id, Some(Cow::Borrowed("a-1"))));
        assert!(matches!(&r.linked_hubs, Hubs::List(l) if matches!(l[..], [Cow::Borrowed("h1")])));
    }
}
