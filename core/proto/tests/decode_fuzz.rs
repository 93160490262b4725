//! Fuzzing the wire (proptest as the fuzzer: cargo-fuzz needs a nightly
//! compiler these machines lack): arbitrary bytes decoded as every request
//! the servers and agents take, and as the documents inside them, then
//! converted to the model's types, never panic; what converts is checked
//! like any other input. Failing cases proptest finds are kept beside this
//! file (`decode_fuzz.proptest-regressions`) and replayed first.

use berth_proto as pb;
use proptest::prelude::*;
use prost::Message;

/// A CA to sign fuzzed certificate requests with (made once).
fn ca() -> &'static (String, String) {
    static CA: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        berth_tls::init(dir.path(), 1).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        (read(berth_tls::CA_CERT), read(berth_tls::CA_KEY))
    })
}

/// Decodes `bytes` as every request type; converts what decodes.
fn every_request(bytes: &[u8]) {
    macro_rules! decode {
        ($($t:ty),* $(,)?) => {$(
            let _ = <$t>::decode(bytes);
        )*};
    }
    decode!(
        pb::RunAppRequest,
        pb::ScaleRequest,
        pb::AppRequest,
        pb::ListTasksRequest,
        pb::WatchTasksRequest,
        pb::GetNodeRequest,
        pb::DrainRequest,
        pb::ExplainRequest,
        pb::PutPluginRequest,
        pb::PluginRequest,
        pb::RollbackRequest,
        pb::PauseDeployRequest,
        pb::EndpointsRequest,
        pb::RegistryLoginRequest,
        pb::RegistryRequest,
        pb::ListVolumesRequest,
        pb::VolumeRequest,
        pb::HeartbeatRequest,
        pb::WatchAssignmentsRequest,
        pb::LogsRequest,
        pb::ImageUpload,
        pb::ExecInput,
        pb::AssignmentUpdate,
        pb::AclBootstrapRequest,
        pb::AclNameRequest,
        pb::AclTokenRequest,
        pb::AuditRequest,
        pb::AuditBatch,
        pb::NodeTokenRequest,
    );
    if let Ok(r) = pb::AclPolicyRequest::decode(bytes) {
        let _ = berth_model::acl::Policy::parse(&r.policy);
    }
    if let Ok(r) = pb::QuotaRequest::decode(bytes)
        && let Ok(q) = serde_json::from_str::<berth_model::quota::Quota>(&r.quota)
    {
        let _ = q.check();
    }
    if let Ok(r) = pb::JoinNodeRequest::decode(bytes) {
        let (ca, key) = ca();
        let _ = berth_tls::sign_request(ca, key, berth_tls::Role::Agent, &r.node, &r.csr, 1);
    }
    if let Ok(r) = pb::RegisterRequest::decode(bytes)
        && let Some(inv) = r.inventory
        && let Ok(inv) = berth_hostprobe::Inventory::try_from(inv)
    {
        let _ = berth_hostprobe::validate::validate(&inv);
    }
    if let Ok(r) = pb::ReportTasksRequest::decode(bytes) {
        for s in r.statuses {
            let _ = berth_proto::typed::state_from_wire(s.state);
            let _ = berth_proto::typed::health_from_wire(s.health);
        }
    }
    if let Ok(s) = pb::AppSpec::decode(bytes)
        && let Ok(spec) = berth_model::AppSpec::try_from(s)
    {
        let _ = spec.validate();
    }
}

proptest! {
    // BERTH_FUZZ_CASES=1000000 for a long run; the test command runs 4096.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("BERTH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096)
    ))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_request(&bytes);
    }

    /// Structured noise: valid protobuf framing (field keys and lengths)
    /// around random payloads reaches deeper than plain bytes.
    #[test]
    fn framed_noise_never_panics(fields in proptest::collection::vec(
        (1u32..40, 0u8..3, proptest::collection::vec(any::<u8>(), 0..48)), 0..24)) {
        let mut buf = Vec::new();
        for (tag, kind, payload) in fields {
            match kind {
                0 => {
                    prost::encoding::encode_key(tag, prost::encoding::WireType::Varint, &mut buf);
                    let v = payload.iter().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
                    prost::encoding::encode_varint(v, &mut buf);
                }
                1 => {
                    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut buf);
                    prost::encoding::encode_varint(payload.len() as u64, &mut buf);
                    buf.extend_from_slice(&payload);
                }
                _ => buf.extend_from_slice(&payload),
            }
        }
        every_request(&buf);
    }

    /// The inventory document (fixtures, `--inventory` files) from text.
    #[test]
    fn inventory_text_never_panics(text in "[ -~\\n]{0,400}") {
        if let Ok(inv) = berth_hostprobe::parse_inventory(&text, "fuzz") {
            let _ = berth_hostprobe::validate::validate(&inv);
        }
    }
}
