//! Quantities that people write in specs: cpu, memory and durations.
//!
//! Each type holds an exact integer in its smallest unit (millicores, bytes,
//! milliseconds), parses the human forms (`0.25`, `250m`, `64Mi`, `1.5Gi`,
//! `500ms`, `2m`), prints one canonical form that parses back to the same
//! value, serializes as that canonical string and deserializes from either a
//! string or a number. Parsing is exact: a value that is not a whole number of
//! the smallest unit, a negative value, or one that does not fit in a `u64` is
//! an error, never a rounding, a wrap or a panic.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

#[cfg(test)]
mod tests;

/// Cpu in millicores: `MilliCpu(1000)` is one core, `MilliCpu(250)` a quarter.
///
/// Parses cores (`2`, `0.25`) or millicores (`250m`); prints whole cores as
/// `2` and anything else as millicores (`250m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliCpu(pub u64);

/// An amount of memory in bytes.
///
/// Parses plain integers (`67108864`) and numbers with a binary (`Ki`, `Mi`,
/// `Gi`, `Ti`: powers of 1024) or decimal (`K`, `M`, `G`, `T`: powers of 1000)
/// suffix, with an optional fraction as long as the result is a whole number
/// of bytes (`1.5Gi`). Prints with the largest suffix that divides it exactly
/// (`64Mi`, `1G`, `1000Ki`), or as plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

/// A duration in milliseconds.
///
/// Parses a number with a unit `ms`, `s`, `m` (minutes) or `h` (`500ms`, `5s`,
/// `1.5m`, `2h`); a bare number means seconds. Prints with the largest unit
/// that divides it exactly (`5s`, `2m`, `1500ms`, `0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationMs(pub u64);

/// Which kind of quantity failed to parse; decides the wording of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityKind {
    /// A cpu amount ([`MilliCpu`]).
    Cpu,
    /// A memory amount ([`Bytes`]).
    Bytes,
    /// A duration ([`DurationMs`]).
    Duration,
}

impl QuantityKind {
    fn noun(self) -> &'static str {
        match self {
            QuantityKind::Cpu => "cpu quantity",
            QuantityKind::Bytes => "quantity",
            QuantityKind::Duration => "duration",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            QuantityKind::Cpu => "expected cores like 0.5 or millicores like 500m",
            QuantityKind::Bytes => "expected e.g. 64Mi, 1Gi, 512M",
            QuantityKind::Duration => "expected e.g. 500ms, 5s, 2m",
        }
    }

    fn too_precise(self) -> &'static str {
        match self {
            QuantityKind::Cpu => "is finer than 1m, the smallest cpu unit",
            QuantityKind::Bytes => "is not a whole number of bytes",
            QuantityKind::Duration => "is finer than 1ms, the smallest duration unit",
        }
    }
}

/// Why a quantity could not be parsed. The `input` is quoted in messages,
/// shortened when long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a quantity of this kind at all (bad syntax or unknown suffix).
    #[error("{input:?} is not a {} ({})", .kind.noun(), .kind.hint())]
    Invalid {
        /// The kind that was expected.
        kind: QuantityKind,
        /// The offending input, possibly shortened.
        input: String,
    },
    /// A negative number.
    #[error("{input:?} is negative (a {} cannot be negative)", .kind.noun())]
    Negative {
        /// The kind that was expected.
        kind: QuantityKind,
        /// The offending input, possibly shortened.
        input: String,
    },
    /// Too large to represent (more than `u64::MAX` of the smallest unit).
    #[error("{input:?} is too large")]
    Overflow {
        /// The kind that was expected.
        kind: QuantityKind,
        /// The offending input, possibly shortened.
        input: String,
    },
    /// Not a whole number of the smallest unit (e.g. `0.0001` cores).
    #[error("{input:?} {}", .kind.too_precise())]
    TooPrecise {
        /// The kind that was expected.
        kind: QuantityKind,
        /// The offending input, possibly shortened.
        input: String,
    },
}

/// Longest input quoted verbatim in an error message.
const MAX_QUOTED: usize = 40;

/// Most fraction digits accepted (after trailing zeros are dropped); keeps the
/// exact arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: usize = 24;

fn shorten(input: &str) -> String {
    match input.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &input[..cut]),
        None => input.to_owned(),
    }
}

/// Failure of the number part, before it is tied to a kind and an input.
enum NumError {
    Syntax,
    Overflow,
    Fraction,
}

/// Parses `digits[.digits]` and multiplies it by `unit` exactly.
fn scaled(number: &str, unit: u64) -> Result<u64, NumError> {
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return Err(NumError::Syntax),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err(NumError::Syntax);
    }
    let mut whole: u64 = 0;
    for b in int.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u64::from(b - b'0')))
            .ok_or(NumError::Overflow)?;
    }
    let whole = whole.checked_mul(unit).ok_or(NumError::Overflow)?;
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        return Ok(whole);
    }
    if frac.len() > MAX_FRACTION_DIGITS {
        return Err(NumError::Fraction);
    }
    let mut numerator: u128 = 0;
    for b in frac.bytes() {
        numerator = numerator * 10 + u128::from(b - b'0');
    }
    // numerator < 10^24 and unit < 2^64, so the product fits in u128.
    let product = numerator * u128::from(unit);
    let denominator = 10u128.pow(frac.len() as u32);
    if !product.is_multiple_of(denominator) {
        return Err(NumError::Fraction);
    }
    // product / denominator < unit, so it fits in u64.
    let part = u64::try_from(product / denominator).map_err(|_| NumError::Overflow)?;
    whole.checked_add(part).ok_or(NumError::Overflow)
}

/// Builds the error for `input` from a number failure, or from `None` when
/// the input is well formed but negative.
fn quantity_error(kind: QuantityKind, input: &str, why: Option<NumError>) -> QuantityError {
    let input = shorten(input);
    match why {
        None => QuantityError::Negative { kind, input },
        Some(NumError::Syntax) => QuantityError::Invalid { kind, input },
        Some(NumError::Overflow) => QuantityError::Overflow { kind, input },
        Some(NumError::Fraction) => QuantityError::TooPrecise { kind, input },
    }
}

/// Splits `input` into its number and unit multiplier with `split`, then
/// scales, turning failures into errors of `kind`.
fn parse_with(
    kind: QuantityKind,
    input: &str,
    split: fn(&str) -> (&str, u64),
) -> Result<u64, QuantityError> {
    if let Some(rest) = input.strip_prefix('-') {
        // A well-formed negative number gets its own message.
        let (number, unit) = split(rest);
        let why = match scaled(number, unit) {
            Err(NumError::Syntax) => Some(NumError::Syntax),
            _ => None,
        };
        return Err(quantity_error(kind, input, why));
    }
    let (number, unit) = split(input);
    scaled(number, unit).map_err(|why| quantity_error(kind, input, Some(why)))
}

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;

/// Byte suffixes, largest multiplier first (the order `Display` tries them).
const BYTE_UNITS: [(&str, u64); 8] = [
    ("Ti", TI),
    ("T", 1_000_000_000_000),
    ("Gi", GI),
    ("G", 1_000_000_000),
    ("Mi", MI),
    ("M", 1_000_000),
    ("Ki", KI),
    ("K", 1_000),
];

/// Duration units, largest first (the order `Display` tries them).
const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl MilliCpu {
    /// Parses cores (`"2"`, `"0.25"`) or millicores (`"250m"`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse_with(QuantityKind::Cpu, s, |s| match s.strip_suffix('m') {
            Some(milli) => (milli, 1),
            None => (s, 1000),
        })
        .map(MilliCpu)
    }
}

impl Bytes {
    /// Parses plain bytes (`"1048576"`) or a number with a suffix
    /// (`"64Mi"`, `"1.5Gi"`, `"512M"`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse_with(QuantityKind::Bytes, s, |s| {
            // No one-letter suffix is the tail of a two-letter one ("Mi"
            // ends in 'i'), so the order of BYTE_UNITS cannot mislead.
            for (suffix, unit) in BYTE_UNITS {
                if let Some(number) = s.strip_suffix(suffix) {
                    return (number, unit);
                }
            }
            (s, 1)
        })
        .map(Bytes)
    }
}

impl DurationMs {
    /// Parses `"500ms"`, `"5s"`, `"2m"`, `"1h"`; a bare number means seconds.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse_with(QuantityKind::Duration, s, |s| {
            // "ms" first: it also ends in "s".
            if let Some(number) = s.strip_suffix("ms") {
                return (number, 1);
            }
            for (suffix, unit) in DURATION_UNITS {
                if let Some(number) = s.strip_suffix(suffix) {
                    return (number, unit);
                }
            }
            (s, 1000)
        })
        .map(DurationMs)
    }

    /// The same span as a [`std::time::Duration`].
    pub const fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (suffix, unit) in BYTE_UNITS {
                if self.0.is_multiple_of(unit) {
                    return write!(f, "{}{}", self.0 / unit, suffix);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (suffix, unit) in DURATION_UNITS {
            if self.0.is_multiple_of(unit) {
                return write!(f, "{}{}", self.0 / unit, suffix);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

/// Implements `FromStr`, `Serialize` (canonical string) and `Deserialize`
/// (string or number) for a quantity type.
macro_rules! quantity_serde {
    ($ty:ident, $expecting:literal) => {
        impl std::str::FromStr for $ty {
            type Err = QuantityError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::parse(s)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v).map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        $ty::parse(&v.to_string()).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        $ty::parse(&v.to_string()).map_err(E::custom)
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        // f64's Display is the shortest exact decimal (never
                        // an exponent), so 0.1 reads as "0.1", not 0.1000..05.
                        $ty::parse(&v.to_string()).map_err(E::custom)
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

quantity_serde!(MilliCpu, "a cpu quantity such as 0.5 or 500m");
quantity_serde!(Bytes, "a memory quantity such as 64Mi");
quantity_serde!(DurationMs, "a duration such as 500ms or 5s");
