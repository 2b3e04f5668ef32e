/*
 * Compile check of include/otel_thread_ctx.h: the record layout, publishing and restoring
 * records, thread-locality. Prints "record <hex>" (the record it published) and "ok"; exits
 * non-zero at the first failed check. Run by tests/c_header.rs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otel_thread_ctx.h"

OTEL_THREAD_CTX_DEFINE;

_Static_assert(offsetof(otel_thread_ctx_record, trace_id) == 0, "trace_id at 0");
_Static_assert(offsetof(otel_thread_ctx_record, span_id) == 16, "span_id at 16");
_Static_assert(offsetof(otel_thread_ctx_record, valid) == 24, "valid at 24");
_Static_assert(offsetof(otel_thread_ctx_record, trace_flags) == 25, "trace_flags at 25");
_Static_assert(offsetof(otel_thread_ctx_record, attrs_data_size) == 26, "attrs_data_size at 26");
_Static_assert(offsetof(otel_thread_ctx_record, attrs_data) == 28, "attrs_data at 28");
_Static_assert(sizeof(otel_thread_ctx_record) == OTEL_THREAD_CTX_HEADER_SIZE, "header size");
_Static_assert(_Alignof(otel_thread_ctx_record) == 2, "aligned to 2");

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "header_check.c:%d: failed: %s\n", __LINE__, #cond); \
      return 1;                                                          \
    }                                                                    \
  } while (0)

static void *other_thread(void *arg) {
  (void)arg;
  /* A new thread starts without a context. */
  return otel_thread_ctx_get();
}

int main(void) {
  uint8_t trace_id[16], span_id[8];
  for (int i = 0; i < 16; i++) trace_id[i] = (uint8_t)(i + 1);
  for (int i = 0; i < 8; i++) span_id[i] = (uint8_t)(0xa1 + i);

  CHECK(otel_thread_ctx_get() == NULL);

  otel_thread_ctx_record *record = malloc(OTEL_THREAD_CTX_MAX_SIZE);
  CHECK(record != NULL);
  CHECK((uintptr_t)record % 2 == 0);
  CHECK(otel_thread_ctx_record_init(record, trace_id, span_id, 1) == 28);
  CHECK(otel_thread_ctx_record_add_attr(record, OTEL_THREAD_CTX_MAX_SIZE, 0, "/checkout", 9) == 0);
  CHECK(otel_thread_ctx_record_add_attr(record, OTEL_THREAD_CTX_MAX_SIZE, 3, "42", 2) == 0);
  char long_value[256];
  memset(long_value, 'x', sizeof long_value);
  CHECK(otel_thread_ctx_record_add_attr(record, OTEL_THREAD_CTX_MAX_SIZE, 1, long_value, 256) == -1);
  /* Beyond the caller's capacity: refused, record unchanged. */
  CHECK(otel_thread_ctx_record_add_attr(record, 45, 1, "abc", 3) == -1);
  CHECK(record->attrs_data_size == 15);

  CHECK(otel_thread_ctx_set(record) == NULL);
  CHECK(otel_thread_ctx_v1 == (void *)record);

  /* Read the fields at their byte offsets, as the profiler does. */
  const uint8_t *bytes = otel_thread_ctx_v1;
  CHECK(memcmp(bytes, trace_id, 16) == 0);
  CHECK(memcmp(bytes + 16, span_id, 8) == 0);
  CHECK(bytes[24] == 1);
  CHECK(bytes[25] == 1);
  uint16_t size;
  memcpy(&size, bytes + 26, sizeof size);
  CHECK(size == 15);
  CHECK(bytes[28] == 0 && bytes[29] == 9 && memcmp(bytes + 30, "/checkout", 9) == 0);
  CHECK(bytes[39] == 3 && bytes[40] == 2 && memcmp(bytes + 41, "42", 2) == 0);

  printf("record ");
  for (size_t i = 0; i < OTEL_THREAD_CTX_HEADER_SIZE + size; i++) printf("%02x", bytes[i]);
  printf("\n");

  /* Nesting: publish an inner record, then restore before freeing it. */
  otel_thread_ctx_record *inner = malloc(OTEL_THREAD_CTX_MAX_SIZE);
  CHECK(inner != NULL);
  uint8_t inner_trace_id[16];
  memset(inner_trace_id, 0x22, sizeof inner_trace_id);
  otel_thread_ctx_record_init(inner, inner_trace_id, span_id, 0);
  void *previous = otel_thread_ctx_set(inner);
  CHECK(previous == record);
  CHECK(otel_thread_ctx_get() == inner);
  otel_thread_ctx_set(previous);
  free(inner);
  CHECK(otel_thread_ctx_get() == record);

  pthread_t thread;
  void *seen = record;
  CHECK(pthread_create(&thread, NULL, other_thread, NULL) == 0);
  CHECK(pthread_join(thread, &seen) == 0);
  CHECK(seen == NULL);

  CHECK(otel_thread_ctx_clear() == record);
  CHECK(otel_thread_ctx_get() == NULL);
  free(record);

  printf("ok\n");
  return 0;
}
