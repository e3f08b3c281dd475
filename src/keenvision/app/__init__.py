"""``keen app``: a local web app (Gradio) with a view per system; ``pip install 'keenvision[app]'``.

`views` holds what each view computes (plain functions, no Gradio); `server` builds and launches the page; `cli`
adds the command.
"""

from ..core.lazy import lazy_exports

lazy_exports(__name__, {"build_app": ".server", "launch": ".server"})
