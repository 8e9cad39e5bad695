"""Waits, in a page chromium has open, until a script condition holds; prints the page's DOM.

For pages whose content arrives after the load event (the dashboard's live tap reads a streaming
fetch), which `chromium --dump-dom` would dump too early. Talks the Chrome DevTools Protocol to
the page target over its websocket (PyPI `websocket-client`).

    python cdp_wait.py <devtools-port> <url-substring> <js-condition> <seconds>

Exit 0 with the DOM on stdout once the condition is true; 1 with the last DOM and a message on
stderr when it is not within the seconds given.
"""
import json
import sys
import time
import urllib.request

import websocket


def page_ws(port, want, deadline):
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.load(r)
        for t in targets:
            if t.get("type") == "page" and want in t.get("url", ""):
                return t["webSocketDebuggerUrl"]
        if time.time() > deadline:
            sys.exit(f"no page target with {want!r} in its URL: {targets}")
        time.sleep(0.1)


def main():
    port, want, cond, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    deadline = time.time() + seconds
    ws = websocket.create_connection(page_ws(port, want, deadline), timeout=10, suppress_origin=True)
    ids = iter(range(1, 1 << 30))

    def evaluate(expr):
        i = next(ids)
        ws.send(json.dumps({"id": i, "method": "Runtime.evaluate", "params": {"expression": expr, "returnByValue": True}}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == i:
                return msg.get("result", {}).get("result", {}).get("value")

    while True:
        ok = evaluate(f"document.readyState === 'complete' && !!({cond})")
        if ok or time.time() > deadline:
            print(evaluate("document.documentElement.outerHTML"))
            if not ok:
                sys.exit(f"the condition {cond!r} did not hold within {seconds}s")
            return
        time.sleep(0.1)


main()
