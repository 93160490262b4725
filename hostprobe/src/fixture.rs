//! Inventories from files: the fixtures shipped with Berth (by name) or any
//! inventory JSON (by path), parsed strictly and validated.

use std::path::Path;

use crate::inventory::Inventory;
use crate::validate::validate;

/// The fixtures built into the binary: name and JSON.
pub const FIXTURES: &[(&str, &str)] = &[
    ("dgx-h100", include_str!("../fixtures/dgx-h100.json")),
    (
        "a100-pcie-4x",
        include_str!("../fixtures/a100-pcie-4x.json"),
    ),
    ("a100-mig", include_str!("../fixtures/a100-mig.json")),
    ("cpu-2s", include_str!("../fixtures/cpu-2s.json")),
];

/// Why an inventory file was refused. `path` names the field
/// (`gpus[3].numa_node`) or is `(file)` for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {path}: {message}")]
pub struct FixtureError {
    /// The file or fixture name.
    pub origin: String,
    /// The field path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FixtureError {
    /// A problem with a field.
    pub fn new(origin: &str, path: impl Into<String>, message: impl Into<String>) -> FixtureError {
        FixtureError {
            origin: origin.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses and validates inventory JSON. `origin` names it in errors.
pub fn parse_inventory(text: &str, origin: &str) -> Result<Inventory, FixtureError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let inv: Inventory = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(file)".to_string()
        } else {
            path
        };
        FixtureError::new(origin, path, e.inner().to_string())
    })?;
    validate(&inv).map_err(|(path, message)| FixtureError::new(origin, path, message))?;
    Ok(inv)
}

/// Loads a built-in fixture by name, or an inventory file by path.
pub fn load_fixture(name_or_path: &str) -> Result<Inventory, FixtureError> {
    if let Some((_, text)) = FIXTURES.iter().find(|(n, _)| *n == name_or_path) {
        return parse_inventory(text, name_or_path);
    }
    let path = Path::new(name_or_path);
    let text = std::fs::read_to_string(path).map_err(|e| {
        let names: Vec<&str> = FIXTURES.iter().map(|(n, _)| *n).collect();
        FixtureError::new(
            name_or_path,
            "(file)",
            format!(
                "not a built-in fixture ({}) and not readable: {e}",
                names.join(", ")
            ),
        )
    })?;
    parse_inventory(&text, name_or_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_fixture_loads() {
        for (name, _) in FIXTURES {
            let inv = load_fixture(name).unwrap();
            assert_eq!(inv.source, format!("fixture:{name}"));
            assert!(inv.spec_sheet.is_some(), "{name} cites its spec sheet");
        }
    }

    #[test]
    fn unknown_name_lists_the_fixtures() {
        let e = load_fixture("dgx-a1000").unwrap_err();
        assert!(e.message.contains("dgx-h100"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = FIXTURES[0].1.replacen(
            "\"memory_bytes\": 85899345920",
            "\"memory_bytes\": \"lots\"",
            1,
        );
        let e = parse_inventory(&text, "x").unwrap_err();
        assert_eq!(e.path, "gpus[0].memory_bytes", "{e}");
        let e = parse_inventory("{\"version\": 1, \"bogus\": 2}", "x").unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        let e = parse_inventory("not json", "x").unwrap_err();
        assert_eq!(e.path, "(file)");
    }
}
