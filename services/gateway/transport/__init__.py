"""The way in: the gateway's HTTP/1.1 protocol and the proxied routes as plain ASGI."""
