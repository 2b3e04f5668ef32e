/*
 * Defines the OTEP 4947 thread-local pointer for the Rust crate. Stable Rust cannot define an ELF
 * TLS symbol with a fixed name, so the variable lives here and Rust reaches it through the
 * accessor, which also keeps the linker from dropping the symbol (see build.rs).
 */
#include "otel_thread_ctx.h"

OTEL_THREAD_CTX_DEFINE;

/* Address of the calling thread's `otel_thread_ctx_v1`. */
void **profiler_marker_slot(void) {
  return &otel_thread_ctx_v1;
}
