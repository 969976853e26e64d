"""The auditors' web explorer, served by the journal and by each bank's replica
over its own verified copy (docs/explorer.md)."""

from services.journal.explorer.app import Access, make_app
from services.journal.explorer.data import ExplorerData
from services.journal.explorer.server import serve_explorer

__all__ = ["Access", "ExplorerData", "make_app", "serve_explorer"]
