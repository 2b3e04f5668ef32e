"""An OTLP/HTTP profiles receiver for tests/tests/otlp.rs, built on the official Python classes
(PyPI opentelemetry-proto, pinned in xtask/src/deploy_tools.rs).

Serves POST /v1development/profiles on 127.0.0.1, on a free port it prints first (one line).
Each request is gunzipped (when Content-Encoding says gzip), decoded as an
ExportProfilesServiceRequest, and written to --out as one JSON line: every sample with its
profile's type and start, its resource's attributes, its function names resolved through the
dictionary (leaf first), its link's trace and span IDs (lowercase hex) and its values. A
request that does not decode is answered 400 and written as {"error": ...}.

With --fail-first K or --fail-seconds S, the first K requests (or those of the S seconds from the
first request on) are answered 503 with Retry-After: 1 and written as {"refused": 503}.
"""

import argparse
import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)

PATH = "/v1development/profiles"
MAX_BODY = 64 << 20


def any_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def summarize(request):
    d = request.dictionary
    strings = d.string_table

    def functions(stack_index):
        names = []
        for location_index in d.stack_table[stack_index].location_indices:
            for line in d.location_table[location_index].lines:
                names.append(strings[d.function_table[line.function_index].name_strindex])
        return names

    samples = []
    for resource_profiles in request.resource_profiles:
        attributes = {
            kv.key: any_value(kv.value) for kv in resource_profiles.resource.attributes
        }
        for scope in resource_profiles.scope_profiles:
            for profile in scope.profiles:
                kind = strings[profile.sample_type.type_strindex]
                for sample in profile.samples:
                    link = d.link_table[sample.link_index] if sample.link_index else None
                    samples.append(
                        {
                            "type": kind,
                            "time_unix_nano": profile.time_unix_nano,
                            "resource": attributes,
                            "functions": functions(sample.stack_index),
                            "trace_id": link.trace_id.hex() if link else None,
                            "span_id": link.span_id.hex() if link else None,
                            "values": list(sample.values),
                        }
                    )
    return {"samples": samples}


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if self.path != PATH or length > MAX_BODY:
            self.answer(404 if self.path != PATH else 413)
            self.close_connection = True
            return
        body = self.rfile.read(length)
        server = self.server
        with server.lock:
            server.seen += 1
            if server.first is None:
                server.first = time.monotonic()
            failing = server.seen <= server.fail_first or (
                time.monotonic() - server.first < server.fail_seconds
            )
        if failing:
            server.write({"refused": 503})
            self.answer(503, [("Retry-After", "1")])
            return
        try:
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            request = ExportProfilesServiceRequest.FromString(body)
            line = summarize(request)
        except Exception as err:  # noqa: BLE001 - any failure is the test's finding
            server.write({"error": repr(err)})
            self.answer(400)
            return
        server.write(line)
        self.answer(200, [("Content-Type", "application/x-protobuf")])


class Server(ThreadingHTTPServer):
    def __init__(self, out, fail_first, fail_seconds):
        super().__init__(("127.0.0.1", 0), Receiver)
        self.out = open(out, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.seen = 0
        self.fail_first = fail_first
        self.fail_seconds = fail_seconds
        self.first = None

    def write(self, line):
        with self.lock:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-seconds", type=float, default=0.0)
    args = parser.parse_args()
    server = Server(args.out, args.fail_first, args.fail_seconds)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
