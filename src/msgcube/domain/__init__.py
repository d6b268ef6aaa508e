"""The pure core: endpoints, periods, messages. No I/O, no storage, no web (a test enforces it)."""
