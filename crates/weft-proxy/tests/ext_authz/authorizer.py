"""A real external authorizer for weft's ext_authz tests: Envoy's gRPC
envoy.service.auth.v3.Authorization/Check (grpcio, stubs generated from weft's own
crates/weft-api/proto/envoy/... with grpcio-tools) and Envoy's HTTP authorization service
semantics (http.server), on ports the kernel picks, printed as `GRPC <port>` and `HTTP <port>`.

Usage: authorizer.py <proto root> <stub dir>. Exits when its stdin closes.

Its policy, the same over both protocols:
- `x-allow: yes` allows, adding `x-authz-user` (gRPC: the caller's SPIFFE ID) and, over gRPC,
  `x-seen-path` / `x-seen-method` (what it saw) and removing `x-remove-me`; over HTTP it answers
  200 with `x-authz-user: http-user`, `x-seen-path`, `x-seen-method` and `x-not-forwarded`.
- a path under /slow answers only when the test ends (stdin closes): a check that times out.
- a path under /error fails (gRPC INTERNAL, HTTP 500).
- anything else is denied with 401, `www-authenticate: Bearer realm="py"`, body "denied by py".
"""

import os
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from grpc_tools import protoc

proto_root, stub_dir = sys.argv[1], sys.argv[2]
os.makedirs(stub_dir, exist_ok=True)
rc = protoc.main(
    [
        "grpc_tools.protoc",
        "-I" + proto_root,
        "--python_out=" + stub_dir,
        "--grpc_python_out=" + stub_dir,
        "envoy/service/auth/v3/external_auth.proto",
    ]
)
if rc != 0:
    sys.exit("protoc failed: %d" % rc)
sys.path.insert(0, stub_dir)
from envoy.service.auth.v3 import external_auth_pb2 as pb  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc  # noqa: E402

done = threading.Event()

DENIED_BODY = "denied by py"


def option(key, value):
    return pb.HeaderValueOption(header=pb.HeaderValue(key=key, value=value))


class Authorization(pb_grpc.AuthorizationServicer):
    def Check(self, request, context):
        http = request.attributes.request.http
        if http.path.startswith("/slow"):
            done.wait(120)
        if http.path.startswith("/error"):
            context.abort(grpc.StatusCode.INTERNAL, "authorizer failed on purpose")
        if http.headers.get("x-allow") == "yes":
            ok = pb.OkHttpResponse(
                headers=[
                    option("x-authz-user", request.attributes.source.principal),
                    option("x-seen-path", http.path),
                    option("x-seen-method", http.method),
                    option("x-seen-host", http.headers.get(":authority", "")),
                    option("x-seen-port", str(request.attributes.destination.address.socket_address.port_value)),
                ],
                headers_to_remove=["x-remove-me"],
            )
            return pb.CheckResponse(status=pb.Status(code=0), ok_response=ok)
        denied = pb.DeniedHttpResponse(
            status=pb.HttpStatus(code=401),
            headers=[option("www-authenticate", 'Bearer realm="py"')],
            body=DENIED_BODY,
        )
        return pb.CheckResponse(status=pb.Status(code=7, message="not allowed"), denied_response=denied)


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        if self.path.startswith("/check/slow"):
            done.wait(120)
        if self.path.startswith("/check/error"):
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.headers.get("x-allow") == "yes":
            self.send_response(200)
            self.send_header("x-authz-user", "http-user")
            self.send_header("x-seen-path", self.path)
            self.send_header("x-seen-method", self.command)
            self.send_header("x-seen-host", self.headers.get("host", ""))
            self.send_header("x-seen-authorization", self.headers.get("authorization", ""))
            self.send_header("x-not-forwarded", "1")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = DENIED_BODY.encode()
        self.send_response(401)
        self.send_header("www-authenticate", 'Bearer realm="py"')
        self.send_header("x-seen-cookie", self.headers.get("cookie", ""))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer


grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
pb_grpc.add_AuthorizationServicer_to_server(Authorization(), grpc_server)
grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
grpc_server.start()
http_server = ThreadingHTTPServer(("127.0.0.1", 0), Http)
http_server.daemon_threads = True
threading.Thread(target=http_server.serve_forever, daemon=True).start()
print("GRPC %d" % grpc_port, flush=True)
print("HTTP %d" % http_server.server_address[1], flush=True)
sys.stdin.read()
done.set()
grpc_server.stop(0)
http_server.shutdown()
