//! Placement rules in an app spec: Marathon-style constraints, gangs and
//! priority.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::spec::FieldError;

/// A constraint operator (Marathon's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Each task on a different value of the field.
    Unique,
    /// All tasks on one value (the given one, or the first task's).
    Cluster,
    /// Spread evenly over the values of the field.
    GroupBy,
    /// The field matches a regular expression.
    Like,
    /// The field does not match a regular expression.
    Unlike,
    /// At most N tasks per value of the field.
    MaxPer,
}

impl Operator {
    fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            _ => return None,
        })
    }

    /// The operator as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
        }
    }
}

/// `[field, OPERATOR, value?]`: a field is `hostname`, a node label, or an
/// inventory fact such as `gpu.model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The node attribute.
    pub field: String,
    /// The operator.
    pub op: Operator,
    /// Its argument, if any.
    pub value: Option<String>,
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2 + usize::from(self.value.is_some())))?;
        seq.serialize_element(&self.field)?;
        seq.serialize_element(self.op.as_str())?;
        if let Some(v) = &self.value {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Constraint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[field, OPERATOR] or [field, OPERATOR, value]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Constraint, A::Error> {
                let field: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let op: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let op = Operator::parse(&op).ok_or_else(|| {
                    de::Error::custom(format!(
                        "unknown operator {op:?} (expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE or MAX_PER)"
                    ))
                })?;
                let value: Option<String> = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(Constraint { field, op, value })
            }
        }
        d.deserialize_seq(V)
    }
}

/// Checks constraints, pushing problems with their paths.
pub fn validate(constraints: &[Constraint], problems: &mut Vec<FieldError>) {
    for (i, c) in constraints.iter().enumerate() {
        let at = format!("constraints[{i}]");
        if c.field.trim().is_empty() {
            problems.push(FieldError::new(at.clone(), "the field must not be empty"));
        }
        match (c.op, &c.value) {
            (Operator::Like | Operator::Unlike, None) => problems.push(FieldError::new(
                at,
                format!("{} needs a regular expression", c.op.as_str()),
            )),
            (Operator::Like | Operator::Unlike, Some(re)) => {
                if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
                    problems.push(FieldError::new(
                        at,
                        format!("{re:?} is not a regular expression: {e}"),
                    ));
                }
            }
            (Operator::MaxPer, v)
                if v.as_deref()
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_none_or(|n| n == 0) =>
            {
                problems.push(FieldError::new(at, "MAX_PER needs a positive number"));
            }
            (Operator::GroupBy, Some(v)) if v.parse::<u32>().is_err() => problems.push(
                FieldError::new(at, "GROUP_BY's optional value is a number of groups"),
            ),
            (Operator::Unique, Some(_)) => {
                problems.push(FieldError::new(at, "UNIQUE takes no value"))
            }
            _ => {}
        }
    }
}
