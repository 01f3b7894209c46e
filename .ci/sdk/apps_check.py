"""Apps with unmodified client libraries against `eliza-cloud serve` (SPEC §10): the official
OpenAI Python SDK with an app key and an `X-App-User-Id` default header shows up in the app's
users and analytics; a real webhook delivery verifies with the `standardwebhooks` library and with
the openai SDK's `webhooks.verify_signature`, and the `X-Eliza-Signature` rule by hand."""
import hashlib
import hmac
import http.server
import json
import os
import queue
import threading
import urllib.request

from openai import OpenAI
from standardwebhooks import Webhook

base = os.environ["ELIZA_BASE_URL"]
operator = os.environ["ELIZA_KEY"]
got = queue.Queue()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        got.put((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"


def call(method, path, body=None, key=operator):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("X-API-Key", key)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


created = call(
    "POST",
    "/apps",
    {"name": "SDK check app", "app_url": "https://sdk.example", "webhookUrl": hook_url,
     "events": ["user.created"]},
)
app_id, app_key, secret = created["app"]["id"], created["apiKey"], created["webhookSecret"]

client = OpenAI(base_url=base, api_key=app_key, default_headers={"X-App-User-Id": "sdk-user"})
answer = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
)
assert answer.choices[0].message.content, answer

headers, body = got.get(timeout=20)
event = Webhook(secret).verify(body, headers)
assert event["event"] == "user.created", event
assert event["data"] == {"appId": app_id, "userId": "sdk-user"}, event
OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=secret)
lower = {k.lower(): v for k, v in headers.items()}
mac = hmac.new(secret.encode(), lower["x-eliza-timestamp"].encode() + b"." + body, hashlib.sha256)
assert lower["x-eliza-signature"] == "sha256=" + mac.hexdigest(), lower
try:
    Webhook(secret).verify(body.replace(b"sdk-user", b"sdk-usex"), headers)
    raise SystemExit("a changed body verified")
except Exception as e:
    assert "signature" in str(e).lower(), e

users = call("GET", f"/apps/{app_id}/users")
assert users["users"][0]["id"] == "sdk-user" and users["users"][0]["requestCount"] == 1, users
analytics = call("GET", f"/apps/{app_id}/analytics")
assert analytics["usage"]["totalRequests"] == 1, analytics
assert analytics["uniqueUsers"] == 1, analytics
print("apps check: ok (openai SDK with an app key; standardwebhooks and openai verify a delivery)")
