//! Whole numbers as the OpenAPI document states them: JSON integers, also written as integral
//! floats (`5.0`, which JSON Schema counts as an integer and JavaScript clients send), within
//! the signed range the document's `format` gives (`int64` for `u64` fields, `int32` for `u32`
//! ones). Anything else is refused with a clear error instead of being wrapped or truncated.
//! Query strings carry them as text. Reading `1839610537457141.0` exactly needs serde_json's
//! `float_roundtrip` feature (on in the workspace): its default parser may be one unit off.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A whole number type and the largest value the API accepts of it.
pub trait Whole: Sized + Copy {
    /// The largest accepted value.
    const MAX: u64;
    /// The value, known to be at most [`Whole::MAX`].
    fn from_u64(v: u64) -> Self;
}

impl Whole for u64 {
    const MAX: u64 = i64::MAX as u64;
    fn from_u64(v: u64) -> Self {
        v
    }
}

impl Whole for u32 {
    const MAX: u64 = i32::MAX as u64;
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: Whole> WholeVisitor<T> {
    fn check<E: de::Error>(v: u64) -> Result<T, E> {
        if v > T::MAX {
            return Err(E::custom(format!(
                "{v} is too large: at most {} is accepted here",
                T::MAX
            )));
        }
        Ok(T::from_u64(v))
    }
}

impl<'de, T: Whole> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", T::MAX)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::check(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
        Self::check(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || !(0.0..=T::MAX as f64).contains(&v) {
            return Err(E::custom(format!(
                "{v} is not a whole number from 0 to {}",
                T::MAX
            )));
        }
        Self::check(v as u64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        match v.parse::<u64>() {
            Ok(n) => Self::check(n),
            Err(_) => match v.parse::<f64>() {
                Ok(f) if f.is_finite() => self.visit_f64(f),
                _ => Err(E::custom(format!("{v:?} is not a whole number"))),
            },
        }
    }
}

/// Reads a whole number (see the module's documentation).
pub fn whole<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WholeVisitor(PhantomData))
}

/// Reads an optional whole number.
pub fn opt_whole<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
    struct OptVisitor<T>(PhantomData<T>);
    impl<'de, T: Whole> Visitor<'de> for OptVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor(PhantomData))
}

/// Reads a list of whole numbers.
pub fn vec_whole<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<Vec<T>, D::Error> {
    struct Item<T>(T);
    impl<'de, T: Whole> de::Deserialize<'de> for Item<T> {
        fn deserialize<D2: Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
            whole(d).map(Item)
        }
    }
    struct SeqVisitor<T>(PhantomData<T>);
    impl<'de, T: Whole> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of whole numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(Item(v)) = seq.next_element::<Item<T>>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::whole")]
        big: u64,
        #[serde(deserialize_with = "super::whole")]
        small: u32,
        #[serde(default, deserialize_with = "super::opt_whole")]
        maybe: Option<u32>,
        #[serde(default, deserialize_with = "super::vec_whole")]
        list: Vec<u32>,
    }

    fn read(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_whole_numbers_and_ranges_follow_the_document() {
        let t = read(r#"{"big": 5.0, "small": 7, "maybe": 2.0, "list": [1, 2.0]}"#).unwrap();
        assert_eq!(
            (t.big, t.small, t.maybe, t.list),
            (5, 7, Some(2), vec![1, 2])
        );
        assert!(
            read(r#"{"big": 5.5, "small": 1}"#)
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(
            read(r#"{"big": -1, "small": 1}"#)
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            read(r#"{"big": 9223372036854775808, "small": 1}"#)
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            read(r#"{"big": 1, "small": 2147483648}"#)
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(
            read(r#"{"big": 1, "small": 1, "maybe": null}"#)
                .unwrap()
                .maybe,
            None
        );
        // Found by schemathesis: without exact float parsing this reads as …140.75.
        let t = read(r#"{"big": 1839610537457141.0, "small": 1}"#).unwrap();
        assert_eq!(t.big, 1_839_610_537_457_141);
    }

    #[test]
    fn query_strings_carry_them_as_text() {
        #[derive(Deserialize)]
        struct Q {
            #[serde(default, deserialize_with = "super::opt_whole")]
            limit: Option<u32>,
        }
        let q: Q = serde_urlencoded::from_str("limit=20").unwrap();
        assert_eq!(q.limit, Some(20));
        assert!(serde_urlencoded::from_str::<Q>("limit=2147483648").is_err());
    }
}
