//! The `tracing` integration: spans that record `trace_id` and `span_id` publish their context
//! while they are entered.
//!
//! ```text
//! cargo run -p profiler-marker --features tracing --example tracing_layer
//! ```

use profiler_marker::{
    MarkerLayer, current,
    process_context::{self, ProcessContextInfo},
};
use tracing_subscriber::prelude::*;

const ATTRIBUTE_KEYS: [&str; 2] = ["http.route", "user.id"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let process_context = process_context::publish(
        &ProcessContextInfo::new("tracing-example").with_attribute_keys(ATTRIBUTE_KEYS),
    )?;
    tracing_subscriber::registry()
        .with(MarkerLayer::new().with_attribute_keys(ATTRIBUTE_KEYS))
        .init();

    // In a service these come from the incoming request (e.g. a W3C `traceparent` header).
    let span = tracing::info_span!(
        "request",
        trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
        span_id = %"00f067aa0ba902b7",
        http.route = "/checkout",
    );
    span.in_scope(|| {
        let published = current().expect("the span's context is published");
        println!(
            "in span: trace {} span {} route {:?}",
            published.trace_id_hex(),
            published.span_id_hex(),
            published.attribute(0)
        );
    });
    println!("after span: {:?}", current());
    process_context.leak();
    Ok(())
}
