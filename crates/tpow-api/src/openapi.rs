//! docs/openapi.yaml, generated: the component schemas come from the types of
//! this crate (schemars), the paths name those types, so neither the schemas nor
//! a response's type can drift from the code. `cargo run -p tpow-api --example
//! openapi > docs/openapi.yaml` writes it; the crate's test `openapi_is_current`
//! fails while the committed file differs.

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::*;

/// The command that regenerates docs/openapi.yaml (run in the workspace root).
pub const REGENERATE: &str = "cargo run -q -p tpow-api --example openapi > docs/openapi.yaml";

/// `{"$ref": …}` to `T`'s schema, registering it.
fn r<T: JsonSchema>(gen: &mut SchemaGenerator) -> Value {
    serde_json::to_value(gen.subschema_for::<T>()).unwrap_or(Value::Null)
}

/// A JSON body of type `T`.
fn json_body<T: JsonSchema>(gen: &mut SchemaGenerator, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": r::<T>(gen) } } })
}

fn query(name: &str, required: bool, schema: Value, description: Option<&str>) -> Value {
    let mut p = json!({ "name": name, "in": "query", "required": required, "schema": schema });
    if let Some(d) = description {
        p["description"] = json!(d);
    }
    p
}

fn get(summary: &str, parameters: Vec<Value>, responses: Value) -> Value {
    let mut op = json!({ "summary": summary, "responses": responses });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    json!({ "get": op })
}

/// The whole OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let bad = json!({ "$ref": "#/components/responses/BadRequest" });
    let not_found = json!({ "$ref": "#/components/responses/NotFound" });
    let too_many = json!({ "$ref": "#/components/responses/TooManyRequests" });
    let openai_error = |gen: &mut SchemaGenerator, d: &str| json_body::<OpenAiError>(gen, d);
    let int = json!({ "type": "integer", "format": "int64", "minimum": 0 });

    let mut paths = Map::new();
    paths.insert(
        "/api/health".into(),
        get("Liveness and a summary", vec![], json!({ "200": json_body::<Health>(&mut gen, "OK") })),
    );
    paths.insert(
        "/api/chain".into(),
        get(
            "The chain this node follows (genesis and parameters); clients refuse a node of another chain",
            vec![],
            json!({ "200": json_body::<ChainInfo>(&mut gen, "OK") }),
        ),
    );
    paths.insert(
        "/api/info".into(),
        get(
            "This node's identity and the chat models it serves",
            vec![],
            json!({ "200": json_body::<Info>(&mut gen, "OK") }),
        ),
    );
    paths.insert(
        "/api/tip".into(),
        get("The best tip (after database commit)", vec![], json!({ "200": json_body::<Tip>(&mut gen, "OK") })),
    );
    paths.insert(
        "/api/headers".into(),
        get(
            "Best-chain headers from a height",
            vec![
                query("from", true, int.clone(), None),
                query("count", false, json!({"type": "integer", "minimum": 1, "maximum": 2000, "default": 1}), None),
                query(
                    "format",
                    false,
                    json!({"type": "string", "enum": ["binary", "json"], "default": "binary"}),
                    None,
                ),
            ],
            json!({
                "200": {
                    "description": "Concatenated 192-byte headers (binary, the default), or JSON",
                    "content": {
                        "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                        "application/json": { "schema": r::<Headers>(&mut gen) },
                    },
                },
                "400": bad, "404": not_found,
            }),
        ),
    );
    paths.insert(
        "/api/mmr-proof".into(),
        get(
            "MMR inclusion proof of header H against the MMR root in header T (leaves 0..T)",
            vec![
                query("height", true, int.clone(), None),
                query("tip", false, int.clone(), Some("default the best tip; must exceed height")),
            ],
            json!({ "200": json_body::<MmrProofAnswer>(&mut gen, "OK"), "400": bad, "404": not_found }),
        ),
    );
    paths.insert(
        "/api/flyclient".into(),
        get(
            "Last L headers and a FlyClient sample drawn from the client's seed, with MMR proofs (PROTOCOL.md §16)",
            vec![
                query("tip", false, int.clone(), Some("default the best tip")),
                query("last", false, json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}), None),
                query(
                    "seed",
                    false,
                    json!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
                    Some("32 random bytes (64 hex digits) chosen by the client after it learned the tip; omitted selects the deprecated tip-seeded sample"),
                ),
                query(
                    "security",
                    false,
                    json!({"type": "integer", "minimum": 1, "maximum": 128, "default": 50}),
                    Some("security level in bits (seeded requests)"),
                ),
                query(
                    "samples",
                    false,
                    json!({"type": "integer", "minimum": 0, "maximum": 200, "default": 20}),
                    Some("deprecated: unseeded requests only"),
                ),
            ],
            json!({ "200": json_body::<FlyAnswer>(&mut gen, "OK"), "400": bad, "404": not_found }),
        ),
    );
    paths.insert(
        "/api/ws".into(),
        get(
            "WebSocket: sends the Tip object as a text message now and on every new best tip",
            vec![],
            json!({
                "101": { "description": "Switching protocols; then text messages, each a Tip", "content": {
                    "application/json": { "schema": r::<Tip>(&mut gen) } } },
                "429": too_many,
            }),
        ),
    );
    paths.insert(
        "/api/peers".into(),
        get("Connected peers", vec![], json!({ "200": json_body::<Peers>(&mut gen, "OK") })),
    );
    let mut work = get(
        "A mining template for a miner key",
        vec![query("miner", true, json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}), None)],
        json!({ "200": json_body::<Work>(&mut gen, "OK"), "400": bad }),
    );
    work["post"] = json!({
        "summary": "Submit a share (a solved template)",
        "requestBody": { "required": true, "content": { "application/json": { "schema": r::<ShareSubmission>(&mut gen) } } },
        "responses": {
            "200": json_body::<ShareAnswer>(&mut gen, "Share accepted"),
            "400": bad,
            "409": json_body::<ApiError>(&mut gen, "Stale or duplicate share"),
            "415": json_body::<ApiError>(&mut gen, "Not JSON"),
            "422": json_body::<ApiError>(&mut gen, "Wrong JSON shape"),
            "429": too_many,
        },
    });
    paths.insert("/api/work".into(), work);
    paths.insert(
        "/api/miners".into(),
        get(
            "Shares and blocks per browser miner key, and the node's own miner",
            vec![],
            json!({ "200": json_body::<Miners>(&mut gen, "OK") }),
        ),
    );
    paths.insert(
        "/metrics".into(),
        get(
            "The node's accounting (OpenMetrics text)",
            vec![],
            json!({ "200": { "description": "OK", "content": {
                "application/openmetrics-text": { "schema": { "type": "string" } } } } }),
        ),
    );
    paths.insert(
        "/v1/models".into(),
        get(
            "Chat models served (OpenAI format; in upstream mode the upstream's own list)",
            vec![],
            json!({
                "200": json_body::<Models>(&mut gen, "OK"),
                "503": openai_error(&mut gen, "No chat on this node"),
            }),
        ),
    );
    paths.insert(
        "/v1/chat/completions".into(),
        json!({ "post": {
            "summary": "OpenAI-compatible chat completion, whole or streamed; every answer carries a signed receipt",
            "requestBody": { "required": true, "content": { "application/json": { "schema": r::<ChatRequest>(&mut gen) } } },
            "responses": {
                "200": {
                    "description": "A chat.completion, or with stream=true server-sent chat.completion.chunk events (ChatChunk) ending in `data: [DONE]` (the last chunk before it carries `tpow`)",
                    "headers": {
                        "x-tpow-node-key": { "schema": { "type": "string" }, "description": "the signing key (also on streams)" },
                        "x-tpow-request-hash": { "schema": { "type": "string" }, "description": "BLAKE3 of the body (also on streams)" },
                        "x-tpow-response-hash": { "schema": { "type": "string" }, "description": "not on streams" },
                        "x-tpow-signature": { "schema": { "type": "string" }, "description": "not on streams" },
                    },
                    "content": {
                        "application/json": { "schema": r::<ChatCompletion>(&mut gen) },
                        "text/event-stream": { "schema": r::<ChatChunk>(&mut gen) },
                    },
                },
                "400": openai_error(&mut gen, "Invalid request"),
                "413": openai_error(&mut gen, "Body over 1 MiB"),
                "415": openai_error(&mut gen, "The body is not declared as application/json"),
                "429": {
                    "description": "Generation queue full or node busy",
                    "headers": { "Retry-After": { "schema": { "type": "integer" } } },
                    "content": { "application/json": { "schema": r::<OpenAiError>(&mut gen) } },
                },
                "502": openai_error(&mut gen, "The upstream answered something that is not OpenAI's format"),
                "503": openai_error(&mut gen, "No engine (no model, --no-chat) or upstream unreachable"),
            },
        } }),
    );

    let error = r::<ApiError>(&mut gen);
    let schemas: Map<String, Value> = gen
        .take_definitions()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tpow-node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "HTTP/WebSocket API of a tpow full node. Prose and verification recipes in docs/API.md. \
                 Generated from crates/tpow-api: {REGENERATE}"
            ),
        },
        "servers": [{ "url": "http://127.0.0.1:8645" }],
        "components": {
            "schemas": schemas,
            "responses": {
                "BadRequest": { "description": "Invalid input", "content": { "application/json": { "schema": error } } },
                "NotFound": { "description": "Unknown height or endpoint", "content": { "application/json": { "schema": error } } },
                "TooManyRequests": { "description": "Over a per-IP limit", "content": { "application/json": { "schema": error } } },
            },
        },
        "paths": paths,
    })
}

/// The document as YAML, as committed in docs/openapi.yaml.
pub fn yaml() -> String {
    let body = serde_yaml::to_string(&document()).unwrap_or_default();
    format!("# Generated from crates/tpow-api; do not edit. Regenerate with:\n#   {REGENERATE}\n{body}")
}
