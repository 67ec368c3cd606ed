//! JSON as HTTP clients write it, for the API's bodies: whole numbers that
//! arrive as floats, and (offset, length) pairs shown as objects.
//!
//! JSON has one number type, and JSON Schema's `integer` is any number
//! whose fraction is zero: `3800.0` and `3.8e3` are the integer 3800 to a
//! JavaScript client, a Python client's `float`, and schema validators.
//! serde refuses them for a `u64`, so every integer field of a request
//! reads through [`whole`] or [`whole_opt`] (`3800.5` is still refused).
//! Integers go up to [`MAX_WHOLE`], what the OpenAPI document's
//! `format: int64` promises; no size, offset or rate of a pool is larger.

#![forbid(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// The largest integer a request takes: `i64::MAX`.
pub const MAX_WHOLE: u64 = i64::MAX as u64;

/// 2^63 as a float: the first float above [`MAX_WHOLE`].
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Reads a whole number from 0 to [`MAX_WHOLE`], written as an integer or
/// as a number with a zero fraction.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole)
}

/// [`whole`] for an optional field: `null` is `None`. Use with
/// `#[serde(default)]`, so that a missing field is `None` too.
pub fn whole_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(OptWhole)
}

/// [`whole_opt`] for a `u32` field: a larger number is refused with the
/// range.
pub fn whole_opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match whole_opt(d)? {
        None => Ok(None),
        Some(v) => u32::try_from(v).map(Some).map_err(|_| {
            de::Error::invalid_value(
                Unexpected::Unsigned(v),
                &"a whole number from 0 to 4294967295",
            )
        }),
    }
}

struct Whole;

impl<'de> Visitor<'de> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {MAX_WHOLE}")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= MAX_WHOLE {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..TWO_POW_63).contains(&v) {
            // In range and whole: the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

struct OptWhole;

impl<'de> Visitor<'de> for OptWhole {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null or a whole number from 0 to {MAX_WHOLE}")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        whole(d).map(Some)
    }
}

/// Reads an optional object field only from a JSON object or `null`: the
/// derived `Deserialize` of a struct also takes an array of its fields in
/// order, which the document does not allow. Use with `#[serde(default)]`.
pub fn object_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_option(OptObject(PhantomData))
}

struct OptObject<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OptObject<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or an object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(Object(PhantomData)).map(Some)
    }
}

struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A byte range: where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Span {
    pub offset: u64,
    pub length: u64,
}

/// `#[serde(with = "crate::json::spans")]`: a list of (offset, length)
/// pairs as a list of [`Span`] objects (give the field
/// `#[schema(value_type = Vec<crate::json::Span>)]`).
pub mod spans {
    use super::*;

    pub fn serialize<S: Serializer>(pairs: &[(u64, u64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            pairs
                .iter()
                .map(|&(offset, length)| Span { offset, length }),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, u64)>, D::Error> {
        let spans = Vec::<Span>::deserialize(d)?;
        Ok(spans.into_iter().map(|s| (s.offset, s.length)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Req {
        #[serde(deserialize_with = "whole")]
        size: u64,
        #[serde(default, deserialize_with = "whole_opt")]
        track: Option<u64>,
    }

    fn parse(text: &str) -> Result<Req, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_and_integral_floats_are_whole_numbers() {
        for (text, want) in [
            ("3800", 3800),
            ("3800.0", 3800),
            ("3.8e3", 3800),
            ("0", 0),
            ("-0.0", 0),
            ("9223372036854775807", MAX_WHOLE),
            ("9.2e18", 9_200_000_000_000_000_000),
            // Read to the nearest double (serde_json's float_roundtrip):
            // the default fast path made this ...302.5.
            ("3793079179532302.0", 3_793_079_179_532_302),
        ] {
            let got = parse(&format!(r#"{{"size": {text}}}"#));
            assert_eq!(got.map(|r| r.size), Ok(want), "{text}");
        }
    }

    #[test]
    fn fractions_negatives_and_huge_numbers_are_refused_with_the_range() {
        for (text, shown) in [
            ("3800.5", "floating point `3800.5`"),
            ("-1", "integer `-1`"),
            ("-1.0", "floating point `-1.0`"),
            ("9223372036854775808", "integer `9223372036854775808`"),
            ("18446744073709551615", "integer `18446744073709551615`"),
            ("1e19", "floating point `1e+19`"),
        ] {
            let err = parse(&format!(r#"{{"size": {text}}}"#)).unwrap_err();
            assert!(err.contains(shown), "{text}: {err}");
            assert!(
                err.contains("expected a whole number from 0 to 9223372036854775807"),
                "{text}: {err}"
            );
        }
        let err = parse(r#"{"size": "1G"}"#).unwrap_err();
        assert!(err.contains("invalid type: string \"1G\""), "{err}");
    }

    #[test]
    fn optional_whole_numbers_take_null_and_absence() {
        assert_eq!(parse(r#"{"size": 1}"#).unwrap().track, None);
        assert_eq!(parse(r#"{"size": 1, "track": null}"#).unwrap().track, None);
        let r = parse(r#"{"size": 1, "track": 65536.0}"#).unwrap();
        assert_eq!(r.track, Some(65536));
        let err = parse(r#"{"size": 1, "track": 0.25}"#).unwrap_err();
        assert!(
            err.contains("floating point `0.25`, expected a whole number"),
            "{err}"
        );
    }

    #[test]
    fn u32_fields_take_integral_floats_and_refuse_larger_numbers() {
        #[derive(Debug, Deserialize)]
        struct Req {
            #[serde(default, deserialize_with = "whole_opt_u32")]
            iops: Option<u32>,
        }
        let parse = |text| serde_json::from_str::<Req>(text).map_err(|e| e.to_string());
        assert_eq!(parse(r#"{"iops": 269917.0}"#).unwrap().iops, Some(269_917));
        assert_eq!(parse(r#"{"iops": null}"#).unwrap().iops, None);
        assert_eq!(parse("{}").unwrap().iops, None);
        let err = parse(r#"{"iops": 4294967296}"#).unwrap_err();
        assert!(
            err.contains("expected a whole number from 0 to 4294967295"),
            "{err}"
        );
        let err = parse(r#"{"iops": 1.5}"#).unwrap_err();
        assert!(err.contains("floating point `1.5`"), "{err}");
    }

    #[test]
    fn object_fields_refuse_arrays() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Range {
            offset: u64,
            length: u64,
        }
        #[derive(Debug, Deserialize)]
        struct Req {
            #[serde(default, deserialize_with = "object_opt")]
            at: Option<Range>,
        }
        let parse = |text| serde_json::from_str::<Req>(text).map_err(|e| e.to_string());
        let got = parse(r#"{"at": {"offset": 1, "length": 2}}"#).unwrap().at;
        assert_eq!(
            got,
            Some(Range {
                offset: 1,
                length: 2
            })
        );
        assert!(parse(r#"{"at": null}"#).unwrap().at.is_none());
        assert!(parse("{}").unwrap().at.is_none());
        let err = parse(r#"{"at": [1, 2]}"#).unwrap_err();
        assert!(
            err.contains("invalid type: sequence, expected an object"),
            "{err}"
        );
    }

    #[test]
    fn spans_are_objects_both_ways() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct View {
            #[serde(with = "spans")]
            extents: Vec<(u64, u64)>,
        }
        let v = View {
            extents: vec![(0, 4096), (8192, 512)],
        };
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"extents":[{"offset":0,"length":4096},{"offset":8192,"length":512}]}"#
        );
        assert_eq!(serde_json::from_str::<View>(&text).unwrap(), v);
    }
}
