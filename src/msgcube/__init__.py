"""msgcube: WeChat's message analysis data interface (datacube/getupstreammsg*), self-hosted."""

__version__ = "0.1.0"
