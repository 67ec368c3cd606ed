//! What a request may ask for: the rules the engine checks on names and
//! sizes, and the OpenAPI schemas that state them. One definition serves
//! both, so the document never promises what the engine refuses (nor the
//! other way round).

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::ops::RangeInclusive;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::error::{Error, ErrorKind, Result};

/// The longest name of a disk, group, volume or copy.
pub const NAME_MAX: usize = 64;

/// A name as a regular expression (ECMA 262, as OpenAPI takes it).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";

/// Track sizes of a volume: powers of two in this range.
pub const TRACK_SIZES: RangeInclusive<u64> = 4096..=(1 << 20);

/// Strip sizes of a group: powers of two in this range.
pub const STRIPE_SIZES: RangeInclusive<u64> = 4096..=(16 << 20);

/// Checks a user-given name of a disk, group, volume or copy.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(is_name_byte)
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// A missing object named in the body of a request whose URL names another
/// one: the request cannot be done as asked (`invalid`, 422), so that a 404
/// always means the URL's own object is not there.
pub(crate) fn named_in_body(e: Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::invalid(e.message())
    } else {
        e
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Whether `size` is a power of two in `range`.
pub(crate) fn is_power_in(size: u64, range: &RangeInclusive<u64>) -> bool {
    size.is_power_of_two() && range.contains(&size)
}

/// The powers of two in `range`, for an `enum` in the document.
fn powers_in(range: &RangeInclusive<u64>) -> Vec<u64> {
    (0..64)
        .map(|shift| 1u64 << shift)
        .filter(|p| range.contains(p))
        .collect()
}

fn power_schema(range: &RangeInclusive<u64>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .enum_values(Some(powers_in(range)))
        .description(Some(description))
        .into()
}

/// Schema of a name (`#[schema(value_type = Name)]` on a `String`).
pub struct Name;

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(NAME_MAX))
            .description(Some(
                "A name of a disk, group, volume or copy: 1 to 64 letters, digits, \
                 '-', '_' or '.', not starting with '.'.",
            ))
            .into()
    }
}

impl ToSchema for Name {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Name")
    }
}

/// Schema of a volume's track size.
pub struct TrackSize;

impl PartialSchema for TrackSize {
    fn schema() -> RefOr<Schema> {
        power_schema(
            &TRACK_SIZES,
            "Bytes per track of a volume: a power of two from 4 KiB to 1 MiB.",
        )
    }
}

impl ToSchema for TrackSize {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TrackSize")
    }
}

/// Schema of a group's strip size.
pub struct StripeSize;

impl PartialSchema for StripeSize {
    fn schema() -> RefOr<Schema> {
        power_schema(
            &STRIPE_SIZES,
            "Bytes per strip of a group: a power of two from 4 KiB to 16 MiB.",
        )
    }
}

impl ToSchema for StripeSize {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("StripeSize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The pattern without its anchors, for proptest's generator.
    fn unanchored() -> &'static str {
        NAME_PATTERN
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap_or(NAME_PATTERN)
    }

    proptest! {
        /// Every name the document allows, the engine takes.
        #[test]
        fn names_the_pattern_allows_are_accepted(name in proptest::string::string_regex(unanchored()).unwrap()) {
            prop_assert!(check_name("disk", &name).is_ok(), "{name:?}");
        }

        /// Names outside the pattern's alphabet or length are refused.
        #[test]
        fn other_names_are_refused(name in "[^A-Za-z0-9._-]{1,3}|\\.[a-z]{0,5}|[a-z]{65,70}") {
            prop_assert!(check_name("disk", &name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn edge_names() {
        for ok in ["a", "-", "_x", "d0.img", &"a".repeat(64)] {
            assert!(check_name("disk", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", ".a", "a/b", "a b", "é", &"a".repeat(65)] {
            let err = check_name("disk", bad).unwrap_err();
            assert!(err.message().starts_with("invalid disk name"), "{bad}");
        }
    }

    #[test]
    fn size_enums_list_the_powers_the_engine_takes() {
        assert_eq!(powers_in(&TRACK_SIZES).len(), 9);
        assert_eq!(powers_in(&STRIPE_SIZES).first(), Some(&4096));
        assert_eq!(powers_in(&STRIPE_SIZES).last(), Some(&(16 << 20)));
        for p in powers_in(&STRIPE_SIZES) {
            assert!(is_power_in(p, &STRIPE_SIZES));
        }
        assert!(!is_power_in(12288, &STRIPE_SIZES));
        assert!(!is_power_in(2048, &TRACK_SIZES));
    }
}
