/*
 * otel_thread_ctx.h: publish the current OpenTelemetry trace context of a thread in the
 * thread-local record of OTEP 4947, for C and C++ programs that do not use the Rust crate
 * `profiler-marker`. A profiler (an eBPF program interrupting the thread on its CPU) reads the
 * record on every sample and labels the sample with the trace ID.
 *
 * Usage:
 *   - In exactly one translation unit of the program (or shared library), write
 *         OTEL_THREAD_CTX_DEFINE;
 *     at file scope. Every other file only includes this header.
 *   - Fill a record (otel_thread_ctx_record_init, otel_thread_ctx_record_add_attr), then publish
 *     it with otel_thread_ctx_set(), which returns the previous pointer. To detach, call
 *     otel_thread_ctx_set(previous) FIRST and only then free or reuse the record.
 *   - Never change a record while it is published: build a new one and swap the pointer.
 *
 * Build flags:
 *   - Compile with -mtls-dialect=gnu2 on x86_64 (TLSDESC, the dialect OTEP 4947 recommends;
 *     gcc's default on aarch64 is already TLSDESC). Code in shared libraries needs -fPIC.
 *   - Executables must export the symbol, or the profiler cannot find it:
 *         -Wl,--export-dynamic-symbol=otel_thread_ctx_v1     (binutils >= 2.35, lld)
 *     (or -rdynamic, which exports everything). Shared libraries export it already, because the
 *     definition has default visibility, unless a version script hides it.
 *   - Check with:  readelf --dyn-syms -W ./program | grep otel_thread_ctx_v1
 *     which must show a line "TLS GLOBAL DEFAULT ... otel_thread_ctx_v1".
 *
 * Record layout (byte-packed, native endian, at an address aligned to at least 2 bytes):
 *     offset  0  trace_id[16]       all zero = no context
 *     offset 16  span_id[8]
 *     offset 24  valid              1 = valid, anything else = ignore the record
 *     offset 25  trace_flags        W3C trace flags (bit 0: sampled)
 *     offset 26  attrs_data_size    bytes of attrs_data that follow
 *     offset 28  attrs_data[]       attributes back to back: key_index u8 | len u8 | utf8[len];
 *                                   the last occurrence of a key index wins
 * The whole record stays within OTEL_THREAD_CTX_MAX_SIZE (640) bytes.
 *
 * Memory ordering: the reader interrupts the thread at any instruction, on the same CPU, so a
 * compiler fence between writing the record and storing the pointer is enough (no CPU fence), and
 * the pointer store is a single aligned word store. This header does both in otel_thread_ctx_set.
 */
#ifndef OTEL_THREAD_CTX_H
#define OTEL_THREAD_CTX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest record, header included, that readers accept. */
#define OTEL_THREAD_CTX_MAX_SIZE ((size_t)640)
/* Size of the fixed part, before attrs_data. */
#define OTEL_THREAD_CTX_HEADER_SIZE ((size_t)28)

/* The record the thread-local pointer points to. */
typedef struct __attribute__((packed, aligned(2))) otel_thread_ctx_record {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t valid;
  uint8_t trace_flags;
  uint16_t attrs_data_size;
  uint8_t attrs_data[];
} otel_thread_ctx_record;

/* The thread's active record, or NULL. Defined by OTEL_THREAD_CTX_DEFINE. */
extern __attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1;

/* Defines the variable; use in exactly one translation unit, at file scope. */
#define OTEL_THREAD_CTX_DEFINE \
  __attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1 = 0

/* The record published on this thread, or NULL. */
static inline void *otel_thread_ctx_get(void) {
  return __atomic_load_n(&otel_thread_ctx_v1, __ATOMIC_RELAXED);
}

/*
 * Publishes `record` (NULL: no context) on this thread and returns the previous pointer.
 * The record must be completely written before the call and stay unchanged and allocated until
 * another call has replaced it.
 */
static inline void *otel_thread_ctx_set(void *record) {
  void *previous = otel_thread_ctx_get();
  /* Everything written to the record so far is in memory before the pointer is. */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(&otel_thread_ctx_v1, record, __ATOMIC_RELEASE);
  /* And the pointer is replaced before the caller frees the previous record. */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  return previous;
}

/* Removes the context of this thread; returns the previous pointer (free it only now). */
static inline void *otel_thread_ctx_clear(void) {
  return otel_thread_ctx_set(NULL);
}

/*
 * Starts a valid record with no attributes. `trace_id` is 16 bytes and `span_id` 8 bytes, in
 * the byte order of the W3C hex strings. Returns the record's size so far.
 */
static inline size_t otel_thread_ctx_record_init(otel_thread_ctx_record *record,
                                                 const uint8_t *trace_id,
                                                 const uint8_t *span_id,
                                                 uint8_t trace_flags) {
  memcpy(record->trace_id, trace_id, sizeof record->trace_id);
  memcpy(record->span_id, span_id, sizeof record->span_id);
  record->valid = 1;
  record->trace_flags = trace_flags;
  record->attrs_data_size = 0;
  return OTEL_THREAD_CTX_HEADER_SIZE;
}

/*
 * Appends attribute `key_index` = `value` (`len` bytes of UTF-8) to a record that is not
 * published yet. `capacity` is the number of bytes allocated for the whole record. Returns 0, or
 * -1 without changing the record if the value is longer than 255 bytes or the record would
 * outgrow `capacity` or OTEL_THREAD_CTX_MAX_SIZE.
 */
static inline int otel_thread_ctx_record_add_attr(otel_thread_ctx_record *record,
                                                  size_t capacity, uint8_t key_index,
                                                  const char *value, size_t len) {
  size_t used = OTEL_THREAD_CTX_HEADER_SIZE + record->attrs_data_size;
  size_t needed = used + 2 + len;
  if (len > 255 || needed > capacity || needed > OTEL_THREAD_CTX_MAX_SIZE) {
    return -1;
  }
  uint8_t *end = record->attrs_data + record->attrs_data_size;
  end[0] = key_index;
  end[1] = (uint8_t)len;
  if (len > 0) {
    memcpy(end + 2, value, len);
  }
  record->attrs_data_size = (uint16_t)(needed - OTEL_THREAD_CTX_HEADER_SIZE);
  return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* OTEL_THREAD_CTX_H */
