//! Prints docs/openapi.yaml: `cargo run -q -p tpow-api --example openapi > docs/openapi.yaml`.

fn main() {
    print!("{}", tpow_api::openapi::yaml());
}
