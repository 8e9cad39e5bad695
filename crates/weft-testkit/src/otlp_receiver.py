"""An OTLP/gRPC trace receiver for weft's tracing tests: OpenTelemetry's own
opentelemetry.proto.collector.trace.v1.TraceService/Export, from the `opentelemetry-proto`
package on PyPI (its generated messages and grpcio stubs), on a port the kernel picks, printed as
`OTLP <port>`. Every span received is printed as one JSON line `SPAN {...}` (ids in hex).

Usage: otlp_receiver.py (or python -c with its text). Exits when its stdin closes.
"""

import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class TraceService(pb_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for rs in request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    line = {
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "status": s.status.code,
                        "attributes": attrs(s.attributes),
                        "resource": resource,
                        "scope": ss.scope.name,
                    }
                    with lock:
                        print("SPAN " + json.dumps(line), flush=True)
        return pb.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
pb_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("OTLP %d" % port, flush=True)
sys.stdin.read()
server.stop(0)
