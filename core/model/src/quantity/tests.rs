//! Unit tests for quantity parsing, printing and serde.

use super::*;

fn cpu(s: &str) -> Result<u64, QuantityError> {
    MilliCpu::parse(s).map(|c| c.0)
}

fn bytes(s: &str) -> Result<u64, QuantityError> {
    Bytes::parse(s).map(|b| b.0)
}

fn dur(s: &str) -> Result<u64, QuantityError> {
    DurationMs::parse(s).map(|d| d.0)
}

#[test]
fn cpu_forms() {
    assert_eq!(cpu("0.25"), Ok(250));
    assert_eq!(cpu("250m"), Ok(250));
    assert_eq!(cpu("1"), Ok(1000));
    assert_eq!(cpu("2"), Ok(2000));
    assert_eq!(cpu("1.5"), Ok(1500));
    assert_eq!(cpu("0.001"), Ok(1));
    assert_eq!(cpu("0.0010000"), Ok(1));
    assert_eq!(cpu("0"), Ok(0));
    assert_eq!(cpu("007"), Ok(7000));
    assert_eq!(cpu("1.0m"), Ok(1));
}

#[test]
fn cpu_errors() {
    for bad in [
        "", "abc", "m", ".5", "5.", "1e3", " 1", "1 ", "+1", "1.2.3", "5k", "5mm", "½",
    ] {
        assert!(
            matches!(MilliCpu::parse(bad), Err(QuantityError::Invalid { .. })),
            "{bad:?} should be invalid"
        );
    }
    assert!(matches!(
        MilliCpu::parse("-1"),
        Err(QuantityError::Negative { .. })
    ));
    assert!(matches!(
        MilliCpu::parse("-250m"),
        Err(QuantityError::Negative { .. })
    ));
    assert!(matches!(
        MilliCpu::parse("0.0001"),
        Err(QuantityError::TooPrecise { .. })
    ));
    assert!(matches!(
        MilliCpu::parse("1.5m"),
        Err(QuantityError::TooPrecise { .. })
    ));
    assert!(matches!(
        MilliCpu::parse("18446744073709551616m"),
        Err(QuantityError::Overflow { .. })
    ));
    assert!(matches!(
        MilliCpu::parse("18446744073709552"),
        Err(QuantityError::Overflow { .. })
    ));
    assert_eq!(
        MilliCpu::parse("abc").unwrap_err().to_string(),
        r#""abc" is not a cpu quantity (expected cores like 0.5 or millicores like 500m)"#
    );
}

#[test]
fn byte_forms() {
    assert_eq!(bytes("64Mi"), Ok(64 << 20));
    assert_eq!(bytes("1G"), Ok(1_000_000_000));
    assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
    assert_eq!(bytes("512M"), Ok(512_000_000));
    assert_eq!(bytes("1Ki"), Ok(1024));
    assert_eq!(bytes("1K"), Ok(1000));
    assert_eq!(bytes("2Ti"), Ok(2 << 40));
    assert_eq!(bytes("3T"), Ok(3_000_000_000_000));
    assert_eq!(bytes("1048576"), Ok(1_048_576));
    assert_eq!(bytes("0"), Ok(0));
    assert_eq!(bytes("0.5K"), Ok(500));
    assert_eq!(bytes("2.000"), Ok(2));
    assert_eq!(bytes("16777215Ti"), Ok(16_777_215 << 40));
}

#[test]
fn byte_errors() {
    for bad in [
        "", "lots", "Mi", "64MiB", "64mi", "64 Mi", "1.Gi", "0x10", "1e6", "64Pi", "NaN", "inf",
    ] {
        assert!(
            matches!(Bytes::parse(bad), Err(QuantityError::Invalid { .. })),
            "{bad:?} should be invalid"
        );
    }
    assert!(matches!(
        Bytes::parse("99999999999Ti"),
        Err(QuantityError::Overflow { .. })
    ));
    assert!(matches!(
        Bytes::parse("16777216Ti"),
        Err(QuantityError::Overflow { .. })
    ));
    assert!(matches!(
        Bytes::parse("99999999999999999999999999999999999999999"),
        Err(QuantityError::Overflow { .. })
    ));
    assert!(matches!(
        Bytes::parse("-5Mi"),
        Err(QuantityError::Negative { .. })
    ));
    assert!(matches!(
        Bytes::parse("1.1Ki"),
        Err(QuantityError::TooPrecise { .. })
    ));
    assert!(matches!(
        Bytes::parse("0.5"),
        Err(QuantityError::TooPrecise { .. })
    ));
    let long = format!("0.{}1Ti", "0".repeat(100));
    assert!(matches!(
        Bytes::parse(&long),
        Err(QuantityError::TooPrecise { .. })
    ));
    assert_eq!(
        Bytes::parse("lots").unwrap_err().to_string(),
        r#""lots" is not a quantity (expected e.g. 64Mi, 1Gi, 512M)"#
    );
}

#[test]
fn long_input_is_shortened_in_messages() {
    let input = "x".repeat(10_000);
    let msg = Bytes::parse(&input).unwrap_err().to_string();
    assert!(msg.len() < 120, "{msg}");
    // Shortening respects char boundaries.
    let input = "é".repeat(100);
    assert!(
        Bytes::parse(&input)
            .unwrap_err()
            .to_string()
            .contains("...")
    );
}

#[test]
fn duration_forms() {
    assert_eq!(dur("500ms"), Ok(500));
    assert_eq!(dur("5s"), Ok(5000));
    assert_eq!(dur("2m"), Ok(120_000));
    assert_eq!(dur("1h"), Ok(3_600_000));
    assert_eq!(dur("1.5s"), Ok(1500));
    assert_eq!(dur("5"), Ok(5000));
    assert_eq!(dur("0"), Ok(0));
    assert!(matches!(
        DurationMs::parse("1.5ms"),
        Err(QuantityError::TooPrecise { .. })
    ));
    assert!(matches!(
        DurationMs::parse("-1s"),
        Err(QuantityError::Negative { .. })
    ));
    assert!(matches!(
        DurationMs::parse("5d"),
        Err(QuantityError::Invalid { .. })
    ));
    assert!(matches!(
        DurationMs::parse(""),
        Err(QuantityError::Invalid { .. })
    ));
    assert!(matches!(
        DurationMs::parse("99999999999999999h"),
        Err(QuantityError::Overflow { .. })
    ));
    assert_eq!(
        DurationMs(1500).as_duration(),
        std::time::Duration::from_millis(1500)
    );
}

#[test]
fn canonical_display() {
    assert_eq!(MilliCpu(250).to_string(), "250m");
    assert_eq!(MilliCpu(2000).to_string(), "2");
    assert_eq!(MilliCpu(1500).to_string(), "1500m");
    assert_eq!(MilliCpu(0).to_string(), "0");
    assert_eq!(Bytes(64 << 20).to_string(), "64Mi");
    assert_eq!(Bytes(1_000_000_000).to_string(), "1G");
    assert_eq!(Bytes(1_024_000).to_string(), "1000Ki");
    assert_eq!(Bytes(1023).to_string(), "1023");
    assert_eq!(Bytes(0).to_string(), "0");
    assert_eq!(Bytes(u64::MAX).to_string(), u64::MAX.to_string());
    assert_eq!(DurationMs(5000).to_string(), "5s");
    assert_eq!(DurationMs(120_000).to_string(), "2m");
    assert_eq!(DurationMs(1500).to_string(), "1500ms");
    assert_eq!(DurationMs(7_200_000).to_string(), "2h");
    assert_eq!(DurationMs(0).to_string(), "0s");
}

#[test]
fn display_parses_back() {
    let samples = [
        0,
        1,
        999,
        1000,
        1024,
        1500,
        60_000,
        3_600_000,
        1 << 40,
        1_000_000_000_000,
        u64::MAX - 1,
        u64::MAX,
    ];
    for n in samples {
        assert_eq!(MilliCpu::parse(&MilliCpu(n).to_string()), Ok(MilliCpu(n)));
        assert_eq!(Bytes::parse(&Bytes(n).to_string()), Ok(Bytes(n)));
        assert_eq!(
            DurationMs::parse(&DurationMs(n).to_string()),
            Ok(DurationMs(n))
        );
    }
}

#[test]
fn serde_accepts_numbers_and_strings() {
    let c: MilliCpu = serde_json::from_str("0.25").unwrap();
    assert_eq!(c, MilliCpu(250));
    let c: MilliCpu = serde_json::from_str("\"250m\"").unwrap();
    assert_eq!(c, MilliCpu(250));
    let c: MilliCpu = serde_json::from_str("2").unwrap();
    assert_eq!(c, MilliCpu(2000));
    let c: MilliCpu = serde_json::from_str("0.1").unwrap();
    assert_eq!(c, MilliCpu(100));
    let c: MilliCpu = serde_yaml::from_str("0.3").unwrap();
    assert_eq!(c, MilliCpu(300));
    let b: Bytes = serde_json::from_str("67108864").unwrap();
    assert_eq!(b, Bytes(64 << 20));
    let b: Bytes = serde_yaml::from_str("64Mi").unwrap();
    assert_eq!(b, Bytes(64 << 20));
    let d: DurationMs = serde_yaml::from_str("500ms").unwrap();
    assert_eq!(d, DurationMs(500));
    let d: DurationMs = serde_json::from_str("5").unwrap();
    assert_eq!(d, DurationMs(5000));
}

#[test]
fn serde_rejects_bad_numbers() {
    for text in ["-1", "-0.5", "1e300", "0.0001", "true", "[]", "null"] {
        assert!(serde_json::from_str::<MilliCpu>(text).is_err(), "{text}");
    }
    for text in [".nan", ".inf", "-.inf", "-3"] {
        assert!(serde_yaml::from_str::<Bytes>(text).is_err(), "{text}");
    }
    let err = serde_json::from_str::<Bytes>("\"lots\"").unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#""lots" is not a quantity (expected e.g. 64Mi"#)
    );
}

#[test]
fn serializes_canonical_string() {
    assert_eq!(serde_json::to_string(&MilliCpu(250)).unwrap(), "\"250m\"");
    assert_eq!(serde_json::to_string(&Bytes(64 << 20)).unwrap(), "\"64Mi\"");
    assert_eq!(serde_json::to_string(&DurationMs(5000)).unwrap(), "\"5s\"");
}
