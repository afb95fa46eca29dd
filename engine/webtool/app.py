"""The FastAPI app of the annotation tool: the page, its static files and a JSON API.

API (images are named by key only; every POST body is JSON and bounded, see ``schemas``)::

    GET  /api/round                      round info and progress
    POST /api/claim      {annotator}     → {"key": str | null}: an image nobody else holds
    GET  /api/images/{key}               saved (or pre-filled) masks, size, done flag
    GET  /api/images/{key}/image         the image (JPEG)
    POST /api/images/{key}/embed         compute/cache the embedding, prefetch the next image
    POST /api/images/{key}/decode        points/labels/box/mask_input → 3 masks (RLE) + scores
    POST /api/images/{key}/accept        save a mask at once
    POST /api/images/{key}/delete        remove a mask
    POST /api/images/{key}/undo          undo the last accept/delete
    POST /api/images/{key}/finish        mark the image done → {"next": key | null}
    GET  /api/stats, /status             the round's statistics (JSON, HTML)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from engine.annotators.human_store import ClaimError
from engine.data.decode import DecodeError
from engine.model import Sam
from engine.webtool import schemas
from engine.webtool.images import UnknownImageError
from engine.webtool.security import GuardMiddleware, check_token
from engine.webtool.service import AnnotationService, open_prefix
from engine.webtool.status import render_status

STATIC_DIR = Path(__file__).parent / "static"
logger = logging.getLogger(__name__)


def create_app(
    run_dir: str | Path,
    prefix: str | None = None,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    max_body_bytes: int = 4 << 20,
    model: Sam | None = None,
    embed_cache: int = 8,
    claim_seconds: float = 900.0,
) -> FastAPI:
    """The app serving round ``prefix`` of ``run_dir`` (default: the newest open queue).

    ``token``: required on every request when set; ``allowed_hosts``: accepted ``Host``
    names (None = any); ``model``: a ready model instead of building the queue's.
    """
    token = check_token(token)
    if prefix is None:
        prefix = open_prefix(run_dir)
        if prefix is None:
            raise RuntimeError(f"no queue under {run_dir}/queues needs annotation")
    service = AnnotationService(
        run_dir, prefix, model=model, embed_cache=embed_cache, claim_seconds=claim_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="sa-engine annotation tool",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(
        GuardMiddleware, token=token, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes
    )
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/status", response_class=HTMLResponse)
    def status() -> str:
        return render_status(service.round_info(), service.store.stats())

    @app.get("/api/stats")
    def stats() -> dict:
        return service.store.stats()

    @app.get("/api/round")
    def round_info() -> dict:
        return service.round_info()

    @app.post("/api/claim")
    def claim(body: schemas.ClaimRequest) -> dict:
        return {"key": service.claim(body.annotator)}

    @app.get("/api/images/{key}")
    def image_state(key: str) -> dict:
        return service.state(key)

    @app.get("/api/images/{key}/image")
    def image_pixels(key: str) -> Response:
        service.images.check(key)
        return Response(service.images.jpeg(key), media_type="image/jpeg")

    @app.post("/api/images/{key}/embed")
    def embed(key: str) -> dict:
        return service.embed(key)

    @app.post("/api/images/{key}/decode")
    def decode(key: str, body: schemas.DecodeRequest) -> dict:
        return service.decode(key, body)

    @app.post("/api/images/{key}/accept")
    def accept(key: str, body: schemas.AcceptRequest) -> dict:
        service.accept(key, body)
        return service.state(key)

    @app.post("/api/images/{key}/delete")
    def delete(key: str, body: schemas.DeleteRequest) -> dict:
        service.images.check(key)
        service.store.delete(key, body.mask_id, body.annotator, body.image_seconds)
        return service.state(key)

    @app.post("/api/images/{key}/undo")
    def undo(key: str, body: schemas.UndoRequest) -> dict:
        service.images.check(key)
        undone = service.store.undo(key, body.annotator) is not None
        return {**service.state(key), "undone": undone}

    @app.post("/api/images/{key}/finish")
    def finish(key: str, body: schemas.FinishRequest) -> dict:
        service.images.check(key)
        service.store.finish(key, body.annotator, body.image_seconds)
        return {**service.state(key), "next": service.claim(body.annotator)}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Map the service's errors to HTTP statuses (messages never hold file paths)."""

    def reply(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(UnknownImageError)
    async def unknown_image(request: Request, exc: UnknownImageError) -> JSONResponse:
        return reply(404, "no such image in this round")

    @app.exception_handler(KeyError)
    async def unknown_item(request: Request, exc: KeyError) -> JSONResponse:
        return reply(404, f"not found: {exc.args[0] if exc.args else ''}")

    @app.exception_handler(ClaimError)
    async def claimed(request: Request, exc: ClaimError) -> JSONResponse:
        return reply(409, str(exc))

    @app.exception_handler(ValueError)
    async def invalid(request: Request, exc: ValueError) -> JSONResponse:
        return reply(422, str(exc))

    @app.exception_handler(DecodeError)
    async def broken(request: Request, exc: DecodeError) -> JSONResponse:
        logger.warning("image of %s cannot be decoded: %s", request.url.path, exc.reason)
        return reply(422, "the image cannot be decoded (see the server log)")
