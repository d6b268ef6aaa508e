"""Helpers shared by the API tests: a real ``msgcube serve`` subprocess, in-process clients."""
