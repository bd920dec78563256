"""Thin routers: parse the request, call the context, shape the answer."""
