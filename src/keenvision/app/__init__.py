"""``keen app``: a local web app (Gradio) with a view per system; ``pip install 'keenvision[app]'``.

Each system's view lives in its own ``<system>/app.py`` (declared in its ``system.py``); `server` builds the page
from the declared views and launches it; `cli` adds the command.
"""

from ..core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {".server": ("build_app", "launch")})
