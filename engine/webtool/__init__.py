"""The web annotation tool: people label a round's images in a browser with the round's model.

``create_app(run_dir, prefix)`` builds the FastAPI app (``sa-engine annotate`` serves it with
uvicorn); ``AnnotationService`` is the same without HTTP. See docs/annotation-tool.md.
"""

from engine.webtool.app import create_app
from engine.webtool.service import AnnotationService, open_prefix

__all__ = ["AnnotationService", "create_app", "open_prefix"]
