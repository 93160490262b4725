//! Text to [`AppSpec`]: YAML or JSON, with errors that name the field.

use serde_path_to_error::{Path, Segment};

use super::{AppSpec, FieldError, MAX_INSTANCES, SpecError, WHOLE_SPEC, quoted};

/// Parses an app spec from YAML or JSON text and validates it.
///
/// Text whose first non-space character is `{` is read as JSON (for JSON's
/// error messages); anything else as YAML. A problem while reading stops at
/// the first one and names its field (`resources.memory: "lots" is not a
/// quantity ...`); a document that reads fine is then checked with
/// [`AppSpec::validate`], which reports every problem. Never panics.
pub fn parse_spec(text: &str) -> Result<AppSpec, SpecError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let start = text.trim_start();
    if start.is_empty() {
        return Err(empty());
    }
    let spec = if start.starts_with('{') {
        from_json(text)?
    } else {
        from_yaml(text)?
    };
    spec.validate()?;
    Ok(spec)
}

fn empty() -> SpecError {
    SpecError::single(
        WHOLE_SPEC,
        "the spec is empty (expected a mapping with at least name and image)",
    )
}

fn from_json(text: &str) -> Result<AppSpec, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let spec: AppSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let mut message = inner.to_string();
        if inner.is_data() {
            // The path says where; the position would only repeat it.
            let at = format!(" at line {} column {}", inner.line(), inner.column());
            if let Some(stripped) = message.strip_suffix(&at) {
                message.truncate(stripped.len());
            }
        }
        SpecError::from(problem(e.path(), &message))
    })?;
    de.end()
        .map_err(|e| SpecError::single(WHOLE_SPEC, e.to_string()))?;
    Ok(spec)
}

/// Most `[` and `{` characters a YAML spec may hold. The YAML scanner's
/// cost grows with the square of flow nesting depth (100,000 nested `[`
/// take tens of seconds), and counting the characters bounds that depth
/// without having to parse; a real spec holds a few dozen.
pub const MAX_YAML_FLOW_OPENERS: usize = 10_000;

fn from_yaml(text: &str) -> Result<AppSpec, SpecError> {
    let openers = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if openers > MAX_YAML_FLOW_OPENERS {
        return Err(SpecError::single(
            WHOLE_SPEC,
            format!(
                "too many '[' and '{{' characters ({openers}, at most {MAX_YAML_FLOW_OPENERS} in a YAML spec)"
            ),
        ));
    }
    // Reading into a Value first separates syntax errors (with their line and
    // column) from data errors (with their field path).
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| SpecError::single(WHOLE_SPEC, e.to_string()))?;
    let found = match &value {
        serde_yaml::Value::Mapping(_) => None,
        serde_yaml::Value::Null => return Err(empty()),
        serde_yaml::Value::Bool(_) => Some("a boolean"),
        serde_yaml::Value::Number(_) => Some("a number"),
        serde_yaml::Value::String(_) => Some("a string"),
        serde_yaml::Value::Sequence(_) => Some("a list"),
        serde_yaml::Value::Tagged(_) => Some("a tagged value"),
    };
    if let Some(found) = found {
        return Err(SpecError::single(
            WHOLE_SPEC,
            format!("expected a mapping of fields (name, image, ...), found {found}"),
        ));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| problem(e.path(), &e.inner().to_string()).into())
}

/// Turns a deserialization error at `path` into a [`FieldError`], moving
/// the field named in "unknown field" / "missing field" messages into the
/// path and rewording serde's messages for people who write specs.
fn problem(path: &Path, message: &str) -> FieldError {
    let mut segments: Vec<String> = path.iter().map(segment).collect();
    // A key that could not be read (YAML `1: x`, JSON cut off mid-key)
    // shows as `?`: the problem is with its parent.
    while segments.last().is_some_and(|s| s == ".?") {
        segments.pop();
    }
    // Depending on the format, the path may or may not already end in the
    // field an error names; `push_field` adds it only once.
    let push_field = |segments: &mut Vec<String>, field: &str| {
        let seg = key_segment(field);
        if segments.last() != Some(&seg) {
            segments.push(seg);
        }
    };
    let at = |segments: &[String]| {
        let joined = join(segments);
        if joined.is_empty() {
            WHOLE_SPEC.to_owned()
        } else {
            joined
        }
    };

    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = split_quoted(rest)
    {
        let names = backticked(expected);
        let message = if names.is_empty() {
            "unknown field (no fields are allowed here)".to_owned()
        } else {
            format!("unknown field (expected one of: {})", names.join(", "))
        };
        push_field(&mut segments, field);
        return FieldError::new(at(&segments), message);
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        push_field(&mut segments, field);
        return FieldError::new(at(&segments), "is required");
    }
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        push_field(&mut segments, field);
        return FieldError::new(at(&segments), "is given more than once");
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = split_quoted(rest)
    {
        let names = backticked(expected);
        return FieldError::new(
            at(&segments),
            format!(
                "unknown value {} (expected one of: {})",
                quoted(value),
                names.join(", ")
            ),
        );
    }
    let message = message
        .replace("expected field identifier", "expected a field name")
        .replace("struct AppSpec", "a mapping of fields")
        .replace("struct Resources", "a mapping with cpu and memory")
        .replace("struct PortSpec", "a mapping with host")
        .replace("enum RestartPolicy", "always, on-failure or never")
        .replace("expected u16", "expected a port number from 1 to 65535")
        .replace(
            "expected u32",
            &format!("expected a whole number from 0 to {MAX_INSTANCES}"),
        );
    FieldError::new(at(&segments), message)
}

/// Splits "X`, expected ..." (or "X`, there are no ...") into X and the rest,
/// taking the last such separator since X is user text.
fn split_quoted(rest: &str) -> Option<(&str, &str)> {
    let cut = rest
        .rfind("`, expected")
        .or_else(|| rest.rfind("`, there are no"))?;
    Some((&rest[..cut], &rest[cut + 1..]))
}

/// The names between backticks in serde's "expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Formats one path segment: `.key`, `["odd key"]` or `[3]`.
fn segment(seg: &Segment) -> String {
    match seg {
        Segment::Seq { index } => format!("[{index}]"),
        Segment::Map { key } | Segment::Enum { variant: key } => key_segment(key),
        Segment::Unknown => ".?".to_owned(),
    }
}

pub(crate) fn key_segment(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if plain {
        format!(".{key}")
    } else {
        format!("[{}]", quoted(key))
    }
}

/// Joins formatted segments, dropping the leading dot.
fn join(segments: &[String]) -> String {
    let joined = segments.concat();
    match joined.strip_prefix('.') {
        Some(rest) => rest.to_owned(),
        None => joined,
    }
}
