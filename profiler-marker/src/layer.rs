//! A `tracing_subscriber::Layer` that keeps the thread's record in step with the entered span.

use std::{
    cell::RefCell,
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use crate::{ContextGuard, TraceContext, attach};

const TRACE_ID: &str = "trace_id";
const SPAN_ID: &str = "span_id";
const TRACE_FLAGS: &str = "trace_flags";

/// Publishes the trace context of the span being entered, on the entering thread, and restores
/// the previous one when the span is exited.
///
/// A span has a context when it recorded the fields `trace_id` (32 hex digits) and `span_id`
/// (16 hex digits), at creation or later with [`tracing::Span::record`]. An optional
/// `trace_flags` field (a number, or two hex digits) replaces the default flags, 0x01
/// (sampled). Fields named like the layer's attribute keys become record attributes. Spans
/// without a context, or with malformed IDs, leave the current context as it is, so a child
/// span without IDs keeps its parent's.
///
/// The context is parsed when the span is created or records a field, and kept in the span's
/// extensions; entering only publishes it. A field recorded while the span is entered takes
/// effect at the next entry.
///
/// ```
/// use profiler_marker::{current, MarkerLayer};
/// use tracing_subscriber::prelude::*;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(MarkerLayer::new().with_attribute_keys(["http.route"]));
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!(
///         "request",
///         trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
///         span_id = %"00f067aa0ba902b7",
///         http.route = "/checkout",
///     );
///     let _entered = span.enter();
///     let ctx = current().unwrap();
///     assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
///     assert_eq!(ctx.attribute(0), Some("/checkout"));
/// });
/// ```
#[derive(Debug)]
pub struct MarkerLayer {
    attribute_keys: Vec<String>,
    /// Tells this layer's guards from another layer's in the thread's list.
    id: u64,
}

static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Guards of the spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<(u64, span::Id, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

impl MarkerLayer {
    /// A layer that publishes trace and span IDs, and no attributes.
    pub fn new() -> Self {
        Self {
            attribute_keys: Vec::new(),
            id: NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Span fields with these names become record attributes: the field named
    /// `keys[i]` is key index `i`. Use the same list as
    /// [`ProcessContextInfo::attribute_keys`](crate::process_context::ProcessContextInfo::attribute_keys).
    /// Keys past the 256th are ignored.
    #[must_use]
    pub fn with_attribute_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.attribute_keys = keys.into_iter().take(256).map(Into::into).collect();
        self
    }

    fn record(&self, marker: &mut SpanMarker, record: impl FnOnce(&mut dyn Visit)) {
        record(&mut FieldVisitor {
            fields: &mut marker.fields,
            keys: &self.attribute_keys,
        });
        marker.context = marker.fields.context();
    }
}

impl Default for MarkerLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// What the layer keeps in a span's extensions.
struct SpanMarker {
    fields: SpanFields,
    /// Parsed from `fields` whenever they change.
    context: Option<TraceContext>,
}

#[derive(Default)]
struct SpanFields {
    trace_id: Option<String>,
    span_id: Option<String>,
    trace_flags: Option<u8>,
    attributes: Vec<(u8, String)>,
}

impl SpanFields {
    fn is_empty(&self) -> bool {
        self.trace_id.is_none()
            && self.span_id.is_none()
            && self.trace_flags.is_none()
            && self.attributes.is_empty()
    }

    fn context(&self) -> Option<TraceContext> {
        let mut ctx =
            TraceContext::from_hex(self.trace_id.as_deref()?, self.span_id.as_deref()?).ok()?;
        if let Some(flags) = self.trace_flags {
            ctx.trace_flags = flags;
        }
        ctx.attributes.clone_from(&self.attributes);
        Some(ctx)
    }
}

struct FieldVisitor<'a> {
    fields: &'a mut SpanFields,
    keys: &'a [String],
}

impl FieldVisitor<'_> {
    fn wants(&self, field: &Field) -> bool {
        matches!(field.name(), TRACE_ID | SPAN_ID | TRACE_FLAGS)
            || self.keys.iter().any(|key| key == field.name())
    }

    fn set(&mut self, field: &Field, value: &str) {
        match field.name() {
            // `?id` formats a string with quotes; hex IDs never contain any.
            TRACE_ID => self.fields.trace_id = Some(value.trim_matches('"').to_owned()),
            SPAN_ID => self.fields.span_id = Some(value.trim_matches('"').to_owned()),
            TRACE_FLAGS => {
                self.fields.trace_flags = u8::from_str_radix(value.trim_matches('"'), 16).ok();
            }
            name => {
                if let Some(index) = self.keys.iter().position(|key| key == name) {
                    // At most 256 keys (`with_attribute_keys`).
                    let index = index as u8;
                    self.fields.attributes.retain(|(key, _)| *key != index);
                    self.fields.attributes.push((index, value.to_owned()));
                }
            }
        }
    }

    fn set_number(&mut self, field: &Field, value: u64) {
        if field.name() == TRACE_FLAGS {
            self.fields.trace_flags = u8::try_from(value).ok();
        } else {
            self.set(field, &value.to_string());
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.wants(field) {
            self.set(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.wants(field) {
            self.set_number(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.wants(field) {
            return;
        }
        match u64::try_from(value) {
            Ok(value) => self.set_number(field, value),
            Err(_) => self.set(field, &value.to_string()),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.wants(field) {
            // `%value` arrives here too, and its Debug is the value's Display.
            self.set(field, &format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for MarkerLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut marker = SpanMarker {
            fields: SpanFields::default(),
            context: None,
        };
        self.record(&mut marker, |visitor| attrs.record(visitor));
        if !marker.fields.is_empty() {
            // `replace`, not `insert`, which panics if another MarkerLayer stored one.
            span.extensions_mut().replace(marker);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanMarker>() {
            Some(marker) => self.record(marker, |visitor| values.record(visitor)),
            None => {
                let mut marker = SpanMarker {
                    fields: SpanFields::default(),
                    context: None,
                };
                self.record(&mut marker, |visitor| values.record(visitor));
                if !marker.fields.is_empty() {
                    extensions.insert(marker);
                }
            }
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let extensions = span.extensions();
        let Some(context) = extensions
            .get::<SpanMarker>()
            .and_then(|marker| marker.context.as_ref())
        else {
            return;
        };
        let guard = attach(context);
        // If the thread is exiting and the list is gone, the guard is dropped at once.
        let _ = ENTERED
            .try_with(move |entered| entered.borrow_mut().push((self.id, id.clone(), guard)));
    }

    fn on_exit(&self, id: &span::Id, _ctx: Context<'_, S>) {
        let guard = ENTERED
            .try_with(|entered| {
                let mut entered = entered.borrow_mut();
                entered
                    .iter()
                    .rposition(|(layer, span, _)| *layer == self.id && span == id)
                    .map(|index| entered.remove(index).2)
            })
            .ok()
            .flatten();
        // Dropped outside the borrow: this restores the context from before the entry.
        drop(guard);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use tracing::{Dispatch, dispatcher, field};
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::current;

    const TRACE_A: &str = "0af7651916cd43dd8448eb211c80319c";
    const SPAN_A: &str = "b7ad6b7169203331";
    const TRACE_B: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN_B: &str = "00f067aa0ba902b7";

    fn dispatch() -> Dispatch {
        Dispatch::new(
            tracing_subscriber::registry()
                .with(MarkerLayer::new().with_attribute_keys(["http.route", "user.id"])),
        )
    }

    fn ctx(trace: &str, span: &str) -> TraceContext {
        TraceContext::from_hex(trace, span).unwrap()
    }

    #[test]
    fn entering_publishes_and_exiting_restores() {
        dispatcher::with_default(&dispatch(), || {
            let outer = tracing::info_span!("outer", trace_id = %TRACE_A, span_id = %SPAN_A);
            let inner = tracing::info_span!("inner", trace_id = TRACE_B, span_id = ?SPAN_B);
            assert_eq!(current(), None);
            {
                let _outer = outer.enter();
                assert_eq!(current(), Some(ctx(TRACE_A, SPAN_A)));
                {
                    let _inner = inner.enter();
                    assert_eq!(current(), Some(ctx(TRACE_B, SPAN_B)));
                    // A span without IDs keeps the context of the one around it.
                    let plain = tracing::info_span!("plain");
                    let _plain = plain.enter();
                    assert_eq!(current(), Some(ctx(TRACE_B, SPAN_B)));
                }
                assert_eq!(current(), Some(ctx(TRACE_A, SPAN_A)));
            }
            assert_eq!(current(), None);
        });
    }

    #[test]
    fn fields_recorded_later_count() {
        dispatcher::with_default(&dispatch(), || {
            let span = tracing::info_span!(
                "late",
                trace_id = field::Empty,
                span_id = field::Empty,
                trace_flags = field::Empty,
                http.route = field::Empty,
            );
            {
                let _entered = span.enter();
                assert_eq!(current(), None);
            }
            span.record("trace_id", TRACE_A);
            span.record("span_id", SPAN_A);
            span.record("trace_flags", 0u64);
            span.record("http.route", "/checkout");
            let _entered = span.enter();
            let expected = ctx(TRACE_A, SPAN_A)
                .with_trace_flags(0)
                .with_attribute(0, "/checkout");
            assert_eq!(current(), Some(expected));
        });
    }

    #[test]
    fn attributes_and_flags_from_fields() {
        dispatcher::with_default(&dispatch(), || {
            let span = tracing::info_span!(
                "req",
                trace_id = %TRACE_A,
                span_id = %SPAN_A,
                trace_flags = "00",
                user.id = 42,
                other = "ignored",
            );
            let _entered = span.enter();
            let published = current().unwrap();
            assert_eq!(published.trace_flags, 0);
            assert_eq!(published.attributes, vec![(1, "42".to_owned())]);
        });
    }

    #[test]
    fn malformed_ids_publish_nothing() {
        dispatcher::with_default(&dispatch(), || {
            let span = tracing::info_span!("bad", trace_id = "zz", span_id = %SPAN_A);
            let _entered = span.enter();
            assert_eq!(current(), None);
            let zero = tracing::info_span!("zero", trace_id = %"0".repeat(32), span_id = %SPAN_A);
            let _zero = zero.enter();
            assert_eq!(current(), None);
        });
    }

    #[test]
    fn one_span_entered_on_several_threads() {
        let dispatch = dispatch();
        let span = dispatcher::with_default(
            &dispatch,
            || tracing::info_span!("shared", trace_id = %TRACE_A, span_id = %SPAN_A),
        );
        let threads = 4;
        let all_entered = Arc::new(Barrier::new(threads + 1));
        let all_checked = Arc::new(Barrier::new(threads + 1));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (dispatch, span) = (dispatch.clone(), span.clone());
                let (all_entered, all_checked) = (all_entered.clone(), all_checked.clone());
                std::thread::spawn(move || {
                    dispatcher::with_default(&dispatch, || {
                        let own =
                            tracing::info_span!("own", trace_id = %TRACE_B, span_id = %SPAN_B);
                        let _own = own.enter();
                        {
                            let _shared = span.enter();
                            all_entered.wait();
                            assert_eq!(current(), Some(ctx(TRACE_A, SPAN_A)));
                            all_checked.wait();
                        }
                        // Each thread restores its own previous context.
                        assert_eq!(current(), Some(ctx(TRACE_B, SPAN_B)));
                    });
                })
            })
            .collect();
        dispatcher::with_default(&dispatch, || {
            all_entered.wait();
            // Entered on the other threads, not here.
            assert_eq!(current(), None);
            let _shared = span.enter();
            assert_eq!(current(), Some(ctx(TRACE_A, SPAN_A)));
            all_checked.wait();
        });
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(current(), None);
    }

    #[test]
    fn two_layers_do_not_conflict() {
        let subscriber = tracing_subscriber::registry()
            .with(MarkerLayer::new())
            .with(MarkerLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("req", trace_id = %TRACE_A, span_id = %SPAN_A);
            {
                let _entered = span.enter();
                assert_eq!(current(), Some(ctx(TRACE_A, SPAN_A)));
            }
            assert_eq!(current(), None);
        });
    }
}
