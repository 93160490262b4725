//! Berth's domain types: the app spec people write, the quantities in it,
//! and their parsing and validation. No I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acl;
pub mod deploy;
pub mod hardware;
pub mod image;
pub mod job;
pub mod labels;
pub mod node;
pub mod placement;
pub mod quantity;
pub mod quota;
pub mod spec;
pub mod task;

pub use quantity::{Bytes, DurationMs, MilliCpu, QuantityError, QuantityKind};
pub use spec::{
    AppSpec, FieldError, PortSpec, Resources, RestartPolicy, SpecError, parse_spec, valid_name,
};
