//! docs/openapi.yaml is what the generator makes from the types: a changed type
//! (or path) without a regenerated file fails here.

use serde_json::Value;

#[test]
fn openapi_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = tpow_api::openapi::yaml();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(generated.lines().count()) + 1, |i| i + 1);
        panic!(
            "docs/openapi.yaml differs from the types in crates/tpow-api (first at line {line}); regenerate it \
             in the workspace root with:\n    {}",
            tpow_api::openapi::REGENERATE
        );
    }
}

/// Every `$ref` in the document names a component that exists.
#[test]
fn every_reference_resolves() {
    let doc = tpow_api::openapi::document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "the paths name the types");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or("(not local)");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for path in ["/api/tip", "/api/chain", "/api/flyclient", "/api/work", "/v1/chat/completions"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(s)) => out.push(s.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
