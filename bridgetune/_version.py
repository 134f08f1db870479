"""The library version (read by bridgetune.json writers and the service without importing the
package face)."""

__version__ = "0.1.0"
